/**
 * `npm run bench`: measures and prints; nothing here passes or fails. Results go to
 * bench-results/bench.json (and are printed as a table).
 *
 *   npm run bench                 all sections
 *   npm run bench -- spine        one section
 */
import '../../native-node/shim.js'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { cpus } from 'node:os'
import { paramCount, preset } from '../../shared/model/config.js'
import { benchDecode } from './spine.js'
import { REPO } from '../helpers/paths.js'

const CACHE = join(REPO, '.cache', 'bench')
const OUT = join(REPO, 'bench-results')

const sections: Record<string, () => Promise<Record<string, unknown>>> = {
  async spine () {
    const rows = []
    for (const dtype of ['fp32', 'int4'] as const) {
      const r = await benchDecode(CACHE, 'small', dtype)
      r.params = paramCount(preset('small'))
      rows.push(r)
      console.log(`small ${dtype}: ${r.tokensPerSecond.toFixed(1)} tokens/s decode, ${r.msPerLayerPerToken.toFixed(3)} ms/layer/token, prefill ${r.promptTokens} tokens ${r.prefillMs.toFixed(1)} ms, load ${r.loadMs.toFixed(0)} ms (${r.device})`)
    }
    return { decode: rows }
  }
}

const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'))
const results: Record<string, unknown> = {
  date: new Date().toISOString(),
  machine: { cpus: cpus().length, cpu: cpus()[0]?.model, node: process.version }
}
for (const [name, run] of Object.entries(sections)) {
  if (wanted.length > 0 && !wanted.includes(name)) continue
  console.log(`\n== ${name} ==`)
  results[name] = await run()
}
await mkdir(OUT, { recursive: true })
await writeFile(join(OUT, 'bench.json'), JSON.stringify(results, null, 2) + '\n')
console.log(`\nwrote ${join(OUT, 'bench.json')}`)
