/**
 * The README is tested: every ```sh block carries a marker saying how (`<!-- doctest -->`: run here,
 * `<!-- doctest: slow (why) -->`: run with TESSERA_DOCTEST_SLOW=1, `<!-- doctest: manual (why) -->`:
 * never run by a test, and why). Runnable blocks run in order in one empty folder, as a reader of a
 * fresh clone would type them there: `npx tessera` is this checkout's CLI, paths into the repository
 * (test/fixtures/…) resolve through a link. Each command must exit 0, and a `#   → text` line under
 * a command is the output it must show (`…` stands for anything).
 */
import { describe, it, expect } from 'vitest'
import { spawnSync } from 'node:child_process'
import { readFileSync, symlinkSync } from 'node:fs'
import { join } from 'node:path'
import { REPO, tempDir } from './helpers/paths.js'

type Kind = 'run' | 'slow' | 'manual'
interface Block {
  line: number
  kind: Kind
  why: string
  commands: Array<{ line: number; text: string; expect?: string }>
}

/** The README's shell blocks, with their markers and commands (comments dropped, `\` continuations joined). */
function blocks(markdown: string): Block[] {
  const lines = markdown.split('\n')
  const out: Block[] = []
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] !== '```sh') continue
    const marker = /^<!-- doctest(?::\s*(slow|manual)\s*\((.+)\))? -->$/.exec(lines[i - 1] ?? '')
    if (marker === null) throw new Error(`README.md:${i + 1}: a sh block without a <!-- doctest… --> marker above it`)
    const block: Block = { line: i + 1, kind: (marker[1] as Kind | undefined) ?? 'run', why: marker[2] ?? '', commands: [] }
    let j = i + 1
    for (; lines[j] !== '```'; j++) {
      const raw = lines[j]
      const expected = /^#\s+→ (.*)$/.exec(raw)
      if (expected !== null) {
        const last = block.commands.at(-1)
        if (last === undefined) throw new Error(`README.md:${j + 1}: an expected output before any command`)
        last.expect = expected[1]
        continue
      }
      if (raw.trim() === '' || raw.trimStart().startsWith('#')) continue
      let text = raw
      const at = j
      while (text.endsWith('\\')) text = `${text.slice(0, -1)} ${lines[++j].trim()}`
      block.commands.push({ line: at + 1, text })
    }
    i = j
    out.push(block)
  }
  return out
}

/** `#   → {"a":…}` as a pattern: literal text with `…` matching anything. */
const pattern = (shown: string): RegExp =>
  new RegExp(
    shown
      .split('…')
      .map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
      .join('[\\s\\S]*?')
  )

const README = readFileSync(join(REPO, 'README.md'), 'utf8')
const ALL = blocks(README)
const SLOW = process.env.TESSERA_DOCTEST_SLOW === '1'

describe('README.md', () => {
  it('marks every shell block: run here, slow, or manual with the reason', () => {
    expect(ALL.filter((b) => b.kind === 'run').length).toBeGreaterThan(0)
    for (const b of ALL) if (b.kind !== 'run') expect(b.why.length, `README.md:${b.line}`).toBeGreaterThan(5)
  })

  it('runs its runnable blocks as written, in order, in an empty folder', { timeout: 600_000 }, () => {
    const dir = tempDir('readme')
    symlinkSync(join(REPO, 'test'), join(dir, 'test'))
    const tessera = `node ${JSON.stringify(join(REPO, 'bin', 'tessera.js'))}`
    for (const b of ALL.filter((x) => x.kind === 'run' || (SLOW && x.kind === 'slow'))) {
      for (const c of b.commands) {
        const command = c.text.replace(/^npx tessera\b/, tessera)
        const r = spawnSync('bash', ['-c', command], { cwd: dir, encoding: 'utf8', timeout: 300_000 })
        const where = `README.md:${c.line}: ${c.text}\n${r.stderr}`
        expect(r.status, where).toBe(0)
        if (c.expect !== undefined) expect(r.stdout, where).toMatch(pattern(c.expect))
      }
    }
  })
})
