/**
 * Throughput benchmarks (measure only). First: what a decode step costs as the context grows, for
 * each KV cache layout of the same weights (`small`, whole model, onnxruntime-node), each layout's
 * session run alone from start to end, the layouts in turn, twice. Writes a plot of ms per step
 * against position to bench-results/throughput-context.svg.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { loadModel } from '../../native-node/store.js'
import { Pipeline } from '../../shared/pipeline.js'
import type { KvLayout } from '../../shared/shard/build.js'
import { ensureModel } from './spine.js'
import { BATCH_DEFAULTS, batchLimits } from '../../shared/batch.js'
import { preset } from '../../shared/model/config.js'
import { startRelay } from '../../relay/relay.js'
import { spawnTessera, waitFor } from '../helpers/network.js'
import { tempDir } from '../helpers/paths.js'
import type { ShardRunner } from '../../shared/runner.js'
import { MANIFEST_FILE, type Manifest } from '../../shared/manifest.js'
import { median } from './median.js'
import { linePlot } from './plot.js'

const LAYOUTS: KvLayout[] = ['append', 'gqa', 'concat']
/** Times each layout's session runs from the first position to the last (see benchThroughput). */
const PASSES = 2

export interface ContextRow {
  kv: KvLayout
  /** Median ms of the decode steps around each mark. */
  earlyMs: number
  lateMs: number
  /** lateMs ÷ earlyMs. */
  ratio: number
}

export async function benchThroughput(cacheDir: string, outDir: string, o: { preset?: string; until?: number } = {}): Promise<Record<string, unknown>> {
  const name = o.preset ?? 'small'
  const until = o.until ?? 1000
  const [early, late] = [30, 900]
  // Threads that do not spin between runs, as a node runs them: three sessions' spinning pools
  // would take the cores from whichever one is stepping (×2 on the late steps, measured here).
  const models = await Promise.all(LAYOUTS.map(async (kv) => await loadModel(await ensureModel(cacheDir, name, 'fp32', 1, kv), { device: 'cpu', spin: false })))
  // Each layout's session on its own from the first position to the last (another layout's
  // steps in between would evict its cache: concat's late steps each move the whole KV cache,
  // which cost append × 1.32 at ~900 where stepped beside another append session it took × 1.18), the passes taken in turn twice
  // so a burst of load falls on every layout alike, each step's time the better of its two passes.
  const passes: number[][][] = LAYOUTS.map(() => [])
  try {
    for (let round = 0; round < PASSES; round++) {
      for (const [i, m] of models.entries()) {
        const p = new Pipeline(m.runners.map((r) => r.open()))
        await p.step([1, 2, 3, 4, 5, 6, 7, 8])
        const times: number[] = []
        for (let pos = 8; pos < until; pos++) {
          const t = performance.now()
          await p.step([1 + (pos % 97)])
          times.push(performance.now() - t)
        }
        p.close()
        passes[i].push(times)
      }
    }
  } finally {
    for (const m of models) for (const r of m.runners) await r.dispose()
  }
  const steps = passes.map((ps) => ps[0].map((_, j) => Math.min(...ps.map((times) => times[j]))))
  const around = (xs: number[], at: number): number => median(xs.slice(at - 8 - 16, at - 8 + 16))
  const context: ContextRow[] = LAYOUTS.map((kv, i) => {
    const earlyMs = around(steps[i], early)
    const lateMs = around(steps[i], late)
    return { kv, earlyMs, lateMs, ratio: lateMs / earlyMs }
  })
  for (const r of context)
    console.log(`${name}, kv ${r.kv}: ${r.earlyMs.toFixed(2)} ms a step at position ~${early}, ${r.lateMs.toFixed(2)} at ~${late}: × ${r.ratio.toFixed(2)}`)
  const series = LAYOUTS.map((kv, i) => ({ label: `kv ${kv}`, points: smooth(steps[i], 16).map((ms, j): [number, number] => [8 + (j + 0.5) * 16, ms]) }))
  const plot = join(outDir, 'throughput-context.svg')
  const title = `${name}, whole model, onnxruntime-node: ms per decode step against position`
  await writeFile(plot, linePlot({ title, x: 'position (tokens in the cache)', y: 'ms per step', series }))
  console.log(`wrote ${plot}`)
  const sessions = await benchConcurrency(cacheDir, outDir, name)
  const node = await benchNodeConcurrency(cacheDir, name)
  const bandwidth = await benchBandwidth(cacheDir, name, 1000 / context[0].earlyMs)
  return { preset: name, positions: [early, late], context, plot: 'bench-results/throughput-context.svg', ...sessions, node, bandwidth }
}

export interface NodeConcurrencyRow {
  /** The node's --batch. */
  batch: number
  sessions: number
  tokensPerSecond: number
}

/**
 * The same through a real node: one `tessera node` process serving the whole model, the relay and
 * the client (its HTTP users' path) in this process; n generations at once, each 16 prompt tokens
 * and DECODE more, aggregate tokens/s over the wall time; the node batching (default) and not
 * (`--batch 1`).
 */
async function benchNodeConcurrency(cacheDir: string, name: string): Promise<NodeConcurrencyRow[]> {
  const dir = await ensureModel(cacheDir, name, 'fp32', 1)
  const { nLayers } = preset(name)
  const rows: NodeConcurrencyRow[] = []
  for (const batch of [BATCH_DEFAULTS.maxRows, 1]) {
    const relay = await startRelay({ httpPort: 0, p2pPort: 0, models: [], ledger: join(tempDir('bench-ledger'), 'ledger.sqlite') })
    const node = await spawnTessera(
      ['node', '--relay', relay.nodeAddr, '--model', dir, '--layers', `0-${nLayers}`, '--device', 'cpu', '--batch', String(batch)],
      300_000
    )
    try {
      await waitFor(async () => (await relay.client.network()).peers.length === 1)
      const run = async (n: number): Promise<number> => {
        const t = performance.now()
        await Promise.all(
          Array.from({ length: n }, async (_, i) => {
            const gen = relay.client.generate({ prompt: promptOf(i), maxTokens: DECODE })
            while ((await gen.next()).done !== true) {
              /* tokens */
            }
          })
        )
        return (n * DECODE) / ((performance.now() - t) / 1000)
      }
      await run(2) // warm-up
      for (const n of [1, 16]) {
        const tokensPerSecond = median([await run(n), await run(n), await run(n)])
        rows.push({ batch, sessions: n, tokensPerSecond })
        console.log(`${name} through one node (--batch ${batch}), ${n} generations at once: ${tokensPerSecond.toFixed(1)} tokens/s`)
      }
    } finally {
      node.proc.kill('SIGTERM')
      await relay.stop()
    }
  }
  return rows
}

export interface BandwidthRow {
  /** Bytes of weights one decode step reads (the shard's files less all but one row of the embedding table). */
  weightBytes: number
  /** Bytes per second a large typed-array copy moves, best of several. */
  copyBytesPerSecond: number
  /** The decode speed if reading the weights were all a step did, and what the bench decoded. */
  limitTokensPerSecond: number
  tokensPerSecond: number
  ratio: number
}

/** One process's decode (`small` fp32, one session at position ~30) against this machine's memory bandwidth. */
async function benchBandwidth(cacheDir: string, name: string, tokensPerSecond: number): Promise<BandwidthRow> {
  const dir = await ensureModel(cacheDir, name, 'fp32', 1)
  const manifest = JSON.parse(await readFile(join(dir, MANIFEST_FILE), 'utf8')) as Manifest
  const c = manifest.config
  const weightBytes = manifest.shards.reduce((n, s) => n + s.bytes, 0) - (c.vocabSize - 1) * c.dim * 4
  const src = new Float64Array(32 * 2 ** 20).fill(1.5) // 256 MiB, far past any cache
  const dst = new Float64Array(src.length)
  const times: number[] = []
  for (let i = 0; i < 6; i++) {
    const t = performance.now()
    dst.set(src)
    times.push(performance.now() - t)
  }
  const copyBytesPerSecond = src.byteLength / (Math.min(...times.slice(1)) / 1000)
  const limitTokensPerSecond = copyBytesPerSecond / weightBytes
  const row = { weightBytes, copyBytesPerSecond, limitTokensPerSecond, tokensPerSecond, ratio: tokensPerSecond / limitTokensPerSecond }
  console.log(
    `${name} fp32: a step reads ${(weightBytes / 2 ** 20).toFixed(0)} MiB of weights; copy bandwidth ${(copyBytesPerSecond / 1e9).toFixed(1)} GB/s ` +
      `→ limit ${limitTokensPerSecond.toFixed(0)} tokens/s; decoded ${tokensPerSecond.toFixed(0)}: ${row.ratio.toFixed(2)} of it`
  )
  return row
}

const SESSIONS = [1, 2, 4, 8, 16]
const PROMPT = 16
const DECODE = 48
/** Session i's prompt: PROMPT ids, different per session. */
const promptOf = (i: number): number[] => Array.from({ length: PROMPT }, (_, j) => 1 + ((i * 31 + j * 7) % 200))

export interface ConcurrencyRow {
  sessions: number
  /** Aggregate decode tokens/s with continuous batching (the default limits), and with every step run alone. */
  batched: number
  alone: number
  /** Mean rows per batched run. */
  rowsPerRun: number
}

/**
 * One node's shard (`small`, whole model, default KV layout) serving n sessions at once: each
 * prefills PROMPT tokens, then all decode DECODE tokens concurrently; aggregate tokens/s of the
 * decode, batched against one step at a time, the two alternated at each n.
 */
async function benchConcurrency(
  cacheDir: string,
  outDir: string,
  name: string
): Promise<{ concurrency: ConcurrencyRow[]; concurrencyPlot: string; speedup16: number }> {
  const dir = await ensureModel(cacheDir, name, 'fp32', 1)
  // Not spinning, as in a node (and two loaded models' spinning pools would contend).
  const batched = await loadModel(dir, { device: 'cpu', spin: false })
  const alone = await loadModel(dir, { device: 'cpu', spin: false, batch: batchLimits({ maxRows: 1 }) })
  const rows: ConcurrencyRow[] = []
  try {
    const decode = async (runners: ShardRunner[], n: number): Promise<number> => {
      const pipes = Array.from({ length: n }, () => new Pipeline(runners.map((r) => r.open())))
      await Promise.all(pipes.map(async (p, i) => await p.step(promptOf(i))))
      const t = performance.now()
      await Promise.all(
        pipes.map(async (p, i) => {
          for (let k = 0; k < DECODE; k++) await p.step([1 + ((i + k * 13) % 200)])
        })
      )
      const s = (performance.now() - t) / 1000
      for (const p of pipes) p.close()
      return (n * DECODE) / s
    }
    await decode(batched.runners, 2) // warm-up: first batched shapes
    await decode(alone.runners, 1)
    for (const n of SESSIONS) {
      const before = { ...batched.runners[0].batching! }
      const b: number[] = []
      const a: number[] = []
      for (let rep = 0; rep < 3; rep++) {
        b.push(await decode(batched.runners, n))
        a.push(await decode(alone.runners, n))
      }
      const after = batched.runners[0].batching!
      const row = { sessions: n, batched: median(b), alone: median(a), rowsPerRun: (after.rows - before.rows) / (after.runs - before.runs) }
      rows.push(row)
      console.log(
        `${name}, ${n} sessions: ${row.batched.toFixed(1)} tokens/s batched (${row.rowsPerRun.toFixed(1)} rows a run), ${row.alone.toFixed(1)} one step at a time`
      )
    }
  } finally {
    for (const m of [batched, alone]) for (const r of m.runners) await r.dispose()
  }
  const one = rows[0].batched
  const speedup16 = rows[rows.length - 1].batched / one
  console.log(`${name}: ${SESSIONS[SESSIONS.length - 1]} sessions ÷ one, batched: × ${speedup16.toFixed(2)}`)
  const plot = join(outDir, 'throughput-sessions.svg')
  const series = [
    { label: 'continuous batching', points: rows.map((r): [number, number] => [r.sessions, r.batched]) },
    { label: 'one step at a time', points: rows.map((r): [number, number] => [r.sessions, r.alone]) }
  ]
  const title = `${name}, whole model, one onnxruntime-node shard: aggregate decode tokens/s against concurrent sessions`
  await writeFile(plot, linePlot({ title, x: 'concurrent sessions', y: 'tokens/s, all sessions', series, xTicks: SESSIONS }))
  console.log(`wrote ${plot}`)
  return { concurrency: rows, concurrencyPlot: 'bench-results/throughput-sessions.svg', speedup16 }
}

/** Medians of consecutive windows of `n` steps (the plot's points). */
function smooth(xs: number[], n: number): number[] {
  const out: number[] = []
  for (let i = 0; i + n <= xs.length; i += n) out.push(median(xs.slice(i, i + n)))
  return out
}
