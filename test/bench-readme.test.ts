/**
 * The README's measured figures are rendered from the recorded bench results, never typed: each
 * `<!-- bench: NAME -->` region must be exactly what test/bench/readme.ts renders from
 * bench-results/bench.json (`npm run bench:readme` rewrites them after `npm run bench`).
 */
import { describe, expect, it } from 'vitest'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { REPO } from './helpers/paths.js'
import { REGION_NAMES, regions, render, renderReadme } from './bench/readme.js'

const readme = readFileSync(join(REPO, 'README.md'), 'utf8')
const results = JSON.parse(readFileSync(join(REPO, 'bench-results', 'bench.json'), 'utf8'))

describe('README figures', () => {
  const found = regions(readme)

  it('has a region for every figure the benches render', () => {
    expect(found.map((g) => g.name).sort()).toEqual([...REGION_NAMES].sort())
  })

  it.each(found.map((g) => [g.name, g] as const))('region %s matches bench-results/bench.json (run `npm run bench:readme`)', (_name, g) => {
    expect(g.body).toBe(render(g.name, results, g.indent))
  })

  it('renders every region from the recorded run: each section names its command, date and machine', () => {
    for (const g of found) expect(render(g.name, results)).toMatch(/npm run bench -- [a-z]+/)
    for (const name of ['spine', 'int4', 'throughput', 'network', 'browser', 'verify', 'zk', 'chain', 'escape', 'chaos', 'calibrate', 'simulate'])
      expect(results[name]?.ran?.date, `section ${name} recorded without when and where it ran`).toMatch(/^\d{4}-\d\d-\d\d/)
  })

  it('rewrites a stale region and leaves the rest of the file alone', () => {
    const g = found[0]
    const lines = readme.split('\n')
    lines.splice(g.open + 1, g.close - g.open - 1, g.indent + '| typed | 999 |')
    const stale = lines.join('\n')
    expect(stale).not.toBe(readme)
    expect(renderReadme(stale, results)).toBe(renderReadme(readme, results))
  })

  it('says which section to run when one is missing', () => {
    expect(() => render('spine', {})).toThrow(/npm run bench -- spine/)
  })
})
