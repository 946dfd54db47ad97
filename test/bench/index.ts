/**
 * `npm run bench`: measures and prints; nothing here passes or fails. Results go to
 * bench-results/bench.json (and are printed as a table).
 *
 *   npm run bench                 all sections
 *   npm run bench -- spine        one section (spine, int4, …)
 */
import '../../host/shim.js'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { cpus } from 'node:os'
import { paramCount, preset } from '../../shared/model/config.js'
import { benchDecode } from './spine.js'
import { int4Accuracy } from './int4.js'
import { benchNetwork } from './network.js'
import { benchBrowser } from './browser.js'
import { benchVerify } from './verify.js'
import { benchZk } from './zk.js'
import { benchChain } from './chain.js'
import { randomWeights } from '../../shared/model/random.js'
import { REPO, STORIES } from '../helpers/paths.js'
import { stories } from '../helpers/reference.js'
import { existsSync, readFileSync } from 'node:fs'

const CACHE = join(REPO, '.cache', 'bench')
const OUT = join(REPO, 'bench-results')

const sections: Record<string, () => Promise<Record<string, unknown>>> = {
  async spine() {
    const rows = []
    for (const dtype of ['fp32', 'int4'] as const) {
      const r = await benchDecode(CACHE, 'small', dtype)
      r.params = paramCount(preset('small'))
      rows.push(r)
      console.log(
        `small ${dtype}: ${r.tokensPerSecond.toFixed(1)} tokens/s decode, ${r.msPerLayerPerToken.toFixed(3)} ms/layer/token` +
          `, prefill ${r.promptTokens} tokens ${r.prefillMs.toFixed(1)} ms, load ${r.loadMs.toFixed(0)} ms (${r.device})`
      )
    }
    return { decode: rows }
  },

  async int4() {
    const models: Array<[string, () => Promise<import('../../shared/model/weights.js').WeightSource>]> = [
      ['tiny', async () => randomWeights(preset('tiny'), 3)],
      ['small', async () => randomWeights(preset('small'), 3)]
    ]
    if (existsSync(STORIES)) models.push(['stories260K', stories])
    const rows = []
    for (const [name, open] of models) {
      const r = await int4Accuracy(name, await open())
      rows.push(r)
      console.log(
        `${name}: int4 logits relative RMS error max ${r.relRmsMax.toFixed(3)} mean ${r.relRmsMean.toFixed(3)}` +
          `; top-1 agrees ${r.top1Agree}/${r.steps}; fp32 top-1 in int4 top-5 ${r.fp32Top1InInt4Top5}/${r.steps}`
      )
    }
    return { accuracy: rows }
  },

  async network() {
    return await benchNetwork(CACHE)
  },

  async browser() {
    return await benchBrowser(CACHE)
  },

  async verify() {
    return await benchVerify(CACHE)
  },

  async zk() {
    return await benchZk()
  },

  async chain() {
    return await benchChain()
  },

  async escape() {
    const { benchEscape } = await import('./escape.js')
    return await benchEscape()
  },

  async chaos() {
    const { benchChaos } = await import('./chaos.js')
    return await benchChaos(CACHE)
  }
}

const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'))
// Sections run alone update their part of an earlier bench.json instead of erasing the rest.
const previous = existsSync(join(OUT, 'bench.json')) ? JSON.parse(readFileSync(join(OUT, 'bench.json'), 'utf8')) : {}
const results: Record<string, unknown> = {
  ...previous,
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
