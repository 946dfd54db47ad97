/**
 * `npm run bench`: measures and prints; nothing here passes or fails. Results go to
 * bench-results/bench.json (and are printed as a table). `npm run bench:readme` renders the README's
 * figures from that file (test/bench/readme.ts), so none of them is typed by hand.
 *
 *   npm run bench                 all sections
 *   npm run bench -- spine        one section (spine, int4, …)
 *   npm run bench -- --help       the sections, one line each
 *
 * A section that throws is reported and the next one runs; the exit code is 1 if any failed.
 */
import '../../host/shim.js'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { cpus, loadavg } from 'node:os'
import { existsSync, readFileSync } from 'node:fs'
import { paramCount, preset } from '../../shared/model/config.js'
import { REPO, STORIES } from '../helpers/paths.js'

const CACHE = join(REPO, '.cache', 'bench')
const OUT = join(REPO, 'bench-results')
await mkdir(OUT, { recursive: true })

interface Section {
  /** One line for --help. */
  about: string
  run: () => Promise<Record<string, unknown>>
}

// Each section imports its own code when it runs, so --help and a single section load only what they need.
const sections: Record<string, Section> = {
  spine: {
    about: 'greedy decode of the small preset on onnxruntime-node, fp32 and int4, whole model in one process',
    async run() {
      const { benchDecode } = await import('./spine.js')
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
    }
  },

  int4: {
    about: 'int4 vs fp32 logits on the same weights: relative RMS error, top-1/top-5 agreement',
    async run() {
      const { int4Accuracy } = await import('./int4.js')
      const { randomWeights } = await import('../../shared/model/random.js')
      const { stories } = await import('../helpers/reference.js')
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
    }
  },

  throughput: {
    about: 'ms per decode step against context position for each KV cache layout (small, one process), with a plot',
    run: async () => await (await import('./throughput.js')).benchThroughput(CACHE, OUT)
  },

  network: {
    about: 'decode through 2 and 4 native nodes on loopback vs one process, and the per-hop overhead',
    run: async () => await (await import('./network.js')).benchNetwork(CACHE)
  },

  browser: {
    about: 'one shard in Chromium (WASM, WebGPU) vs onnxruntime-node, and time from Contribute to the first request',
    run: async () => await (await import('./browser.js')).benchBrowser(CACHE)
  },

  verify: {
    about: "what verification costs: receipts' share of a hop, bytes per token, redundant and spot latency",
    run: async () => await (await import('./verify.js')).benchVerify(CACHE)
  },

  zk: {
    about: 'zero-knowledge mode per model size: constraints, trusted setup, proving and verification times, sizes',
    run: async () => await (await import('./zk.js')).benchZk()
  },

  chain: {
    about: 'the EVM ledger on a local anvil: gas per call and the latency of each ledger call',
    run: async () => await (await import('./chain.js')).benchChain()
  },

  escape: {
    about: "how often colluding peers get wrong tokens accepted, measured beside the formula's prediction",
    run: async () => await (await import('./escape.js')).benchEscape()
  },

  chaos: {
    about: 'the adversarial attacks against a real multi-process network while honest clients keep asking',
    run: async () => await (await import('./chaos.js')).benchChaos(CACHE)
  },

  links: {
    about: 'tokens/s through 3 native nodes on loopback with every link slowed to 0, 20, 50 and 100 ms round trips (host/slow-link.ts)',
    run: async () => await (await import('./links.js')).benchLinks(CACHE, OUT)
  },

  weights: {
    about: 'nodes joining by name: a small model downloaded from the relay alone (vs HTTP GETs), restarted on its cache, two nodes joining beside a seed',
    run: async () => await (await import('./weights.js')).benchWeights(CACHE)
  },

  calibrate: {
    about: 'the simulator against the loopback network: one topology measured and simulated side by side (tokens/s, failover after a kill -9)',
    run: async () => await (await import('./calibrate.js')).benchCalibrate(CACHE)
  },

  simulate: {
    about: 'the simulator: Llama-2-70B int4 over GPU nodes through the shipped client in virtual time (Petals setting, round trips and GPUs swept)',
    run: async () => await (await import('./simulate.js')).benchSimulate(OUT)
  }
}

const round2 = (x: number): number => Math.round(x * 100) / 100

const args = process.argv.slice(2)
const known = Object.keys(sections)
if (args.includes('--help') || args.includes('-h')) {
  const width = Math.max(...known.map((n) => n.length))
  console.log('usage: npm run bench [-- SECTION...]   (no section: all of them)\n\nsections:')
  for (const [name, s] of Object.entries(sections)) console.log(`  ${name.padEnd(width)}  ${s.about}`)
  process.exit(0)
}
const wanted = args.filter((a) => !a.startsWith('-'))
const unknown = wanted.filter((w) => !known.includes(w))
if (unknown.length > 0) {
  console.error(`unknown bench section(s) ${unknown.join(', ')}; known sections: ${known.join(', ')}`)
  process.exit(2)
}
const FILE = join(OUT, 'bench.json')
const results: Record<string, unknown> = {}
const failed: string[] = []
for (const [name, section] of Object.entries(sections)) {
  if (wanted.length > 0 && !wanted.includes(name)) continue
  console.log(`\n== ${name} ==`)
  // One broken section must not lose the others' minutes of measurement.
  const started = new Date()
  const loadBefore = loadavg()[0]
  try {
    const measured = await section.run()
    // Each section carries when, where and how busy the machine was, since the README cites them one by one.
    results[name] = {
      ...measured,
      ran: {
        date: started.toISOString(),
        wallSeconds: Math.round((Date.now() - started.getTime()) / 1000),
        cpus: cpus().length,
        cpu: cpus()[0]?.model,
        node: process.version,
        loadAverage: [round2(loadBefore), round2(loadavg()[0])]
      }
    }
  } catch (err) {
    failed.push(name)
    console.error(`section ${name} failed: ${err instanceof Error ? err.message : String(err)}`)
    if (err instanceof Error && err.stack !== undefined) console.error(err.stack)
  }
}
// Sections run alone update their part of bench.json, read again now so that a bench run beside this one keeps its sections too.
await mkdir(OUT, { recursive: true })
const previous = existsSync(FILE) ? JSON.parse(readFileSync(FILE, 'utf8')) : {}
const merged = { ...previous, ...results }
const sorted = Object.fromEntries(
  Object.keys(merged)
    .sort()
    .map((k) => [k, merged[k]])
)
await writeFile(FILE, JSON.stringify(sorted, null, 2) + '\n')
console.log(`\nwrote ${FILE}; \`npm run bench:readme\` puts its figures into README.md`)
if (failed.length > 0) {
  console.error(`${failed.length} section(s) failed: ${failed.join(', ')}`)
  process.exitCode = 1
}
