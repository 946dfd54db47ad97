/**
 * `npm run bench:readme`: renders the README's figures from bench-results/bench.json (see
 * readme.ts) and says which regions changed.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { REPO } from '../helpers/paths.js'
import { regions, render, renderReadme } from './readme.js'

const README = join(REPO, 'README.md')
const RESULTS = join(REPO, 'bench-results', 'bench.json')

const before = readFileSync(README, 'utf8')
const results = JSON.parse(readFileSync(RESULTS, 'utf8'))
const changed = regions(before).filter((g) => g.body !== render(g.name, results, g.indent))
writeFileSync(README, renderReadme(before, results))
console.log(
  changed.length === 0 ? 'README.md: every figure already matches bench-results/bench.json' : `README.md: re-rendered ${changed.map((g) => g.name).join(', ')}`
)
