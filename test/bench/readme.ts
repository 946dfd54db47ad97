/**
 * The README's measured figures, rendered from bench-results/bench.json so that none is typed by
 * hand. Each figure sits between markers that name what renders it:
 *
 *   <!-- bench: spine -->
 *   …generated…
 *   <!-- /bench -->
 *
 * `npm run bench:readme` rewrites every such region from the recorded results;
 * test/bench-readme.test.ts fails when a region differs from what the results render, so a figure
 * edited by hand, or results recorded without the README regenerated, cannot land.
 */
import type { DecodeResult } from './spine.js'
import type { Int4Accuracy } from './int4.js'
import type { SamplingBenchRow, ZkBenchRow } from './zk.js'
import type { ChaosRow } from './chaos.js'
import type { ChainBenchRow } from './chain.js'
import type { BandwidthRow, ConcurrencyRow, ContextRow, NodeConcurrencyRow } from './throughput.js'
import type { ReceiptCost } from './verify.js'
import type { HopInPlace } from './hop.js'
import type { WeightsRow } from './weights.js'

/** Where and when a section ran (test/bench/index.ts adds it to every section). */
export interface Ran {
  date: string
  wallSeconds: number
  cpus: number
  cpu?: string
  node: string
  loadAverage: [number, number]
}

export type BenchResults = Record<string, unknown>

// ---- formatting -------------------------------------------------------------------------------

const fixed = (x: number, digits: number): string => x.toFixed(digits)
/** Three significant figures at most, no exponent: 0.0162, 1.08, 24.5, 170. */
const sig = (x: number): string => {
  if (x === 0) return '0'
  const digits = Math.max(0, 2 - Math.floor(Math.log10(Math.abs(x))))
  return x.toFixed(Math.min(digits, 4))
}
const thousands = (x: number): string => Math.round(x).toLocaleString('en-US')
const secs = (ms: number): string => (ms < 1000 ? `${fixed(ms, 0)} ms` : ms < 120_000 ? `${sig(ms / 1000)} s` : `${fixed(ms / 60_000, 1)} min`)
const range = (xs: number[], f: (x: number) => string): string => {
  const lo = Math.min(...xs)
  const hi = Math.max(...xs)
  return f(lo) === f(hi) ? f(lo) : `${f(lo)}–${f(hi)}`
}
const span = (x: [number, number]): string => `[${x.map((v) => fixed(v, 3).replace(/^0\./, '.')).join(', ')}]`
const rate = (x: number): string => (x === 0 ? '0' : fixed(x, 3).replace(/^0\./, '.'))

function table(header: string[], rows: Array<Array<string | number>>): string[] {
  return [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)]
}

/** The line every figure starts with: the command that measured it, when, on what. */
function provenance(command: string, ran: Ran | undefined): string {
  if (ran === undefined) return `(\`${command}\`)`
  const cpu = ran.cpu === undefined ? '' : ` × ${ran.cpu.replace(/\s+/g, ' ').trim()}`
  return (
    `Measured by \`${command}\` on ${ran.date.slice(0, 10)} (${ran.cpus} cores${cpu}, Node ${ran.node}; ` +
    `load average ${ran.loadAverage[0]} → ${ran.loadAverage[1]}, ${ran.wallSeconds} s):`
  )
}

function section<T>(results: BenchResults, name: string): T & { ran?: Ran } {
  const s = results[name]
  if (s === undefined || s === null || typeof s !== 'object')
    throw new Error(`bench-results/bench.json has no "${name}" section: run \`npm run bench -- ${name}\``)
  if ('skipped' in s) throw new Error(`bench section ${name} was skipped when recorded (${String((s as { skipped: unknown }).skipped)})`)
  return s as T & { ran?: Ran }
}

// ---- the figures, one renderer per region ---------------------------------------------------

interface NetworkSection {
  decode: Array<{
    preset: string
    nodes: number
    localTokensPerSecond: number
    localSpin?: boolean
    networkTokensPerSecond: number
    ratio: number
    medianHopOverheadMs: number
  }>
  hop4096: {
    medianOverheadMs: number
    echoMs?: number
    roundTripMs?: number
    echo?: { inProcessMs: number; crossProcessMs: number; cadenceMs: number; gapMs: number }
    stages?: Array<{ side: string; stage: string; us: number; inOverhead?: false }>
    inPlace?: HopInPlace
    signIdle?: { hotUs: number; idleUs: number; gapMs: number }
  }
}
interface BrowserSection {
  preset: string
  shard: [number, number]
  nodeMsPerLayer: number
  nodeLongMsPerLayer?: number
  wasm?: BrowserRow | { error: string }
  wasmThreads?: BrowserRow | { error: string }
  webgpu?: BrowserRow | { error: string }
  webgpuMemoryKv?: BrowserRow | { error: string }
}
interface BrowserRow {
  threads?: number
  msPerLayer: number
  longMsPerLayer?: number
  longRatioToNode?: number
  ratioToNode: number
  clickToServingMs: number
  clickToFirstRequestMs: number
}
interface VerifySection {
  receipt: Array<ReceiptCost & { preset: string; layers: [number, number] }>
  prefill: { tokens: number; bytesPerToken: number }
  latency: { preset: string; tokens: number; noneMs: number; redundantMs: number; spotMs: number; redundantOverNone: number; spotOverNone: number }
  perturbSensitivity: Array<{ eps: number; hopSteps: number; caught: number }>
  optimisticAudit: Array<{ preset: string; layers: [number, number]; rows: number; decodeMs: number; prefillMs: number; speedup: number }>
  disputeCost: Array<{ preset: string; rows: number; blocks: number; layer: number; partLoadMs: number; blockMs: number; shardMs: number; saving: number }>
}
interface ZkSection {
  models: ZkBenchRow[]
  sampling?: SamplingBenchRow
  browser?: { model: string; firstMs: number; verifyMs: number }
}
interface EscapeSection {
  n: number
  tokens: number
  trialsPerRow: number
  rows: Array<{ mode: string; c: number; rate: number; ci95: [number, number]; formula: number; honestSlashed: number; overturnedWrong?: { rate: number } }>
}
/** The swarms: what sessions got, how the layers stayed covered, what routing cost, and what each simulation cost to run. */
function swarmTable(rows: SwarmRow[] | undefined): string[] {
  if (rows === undefined || rows.length === 0) return []
  const ms = (x: number | null): string => (x === null || !Number.isFinite(x) ? '–' : `${fixed(x, 0)} ms`)
  const x0 = rows[0]
  const pct = (v: number): string => `${fixed(v * 100, 0)}%`
  return [
    '',
    `Swarms of native GPU nodes (${pct(x0.natives / x0.peers)}: ${x0.gpuMix.map(([g, share]) => `${g} ${pct(share)}`).join(', ')}) and WebGPU tabs (${x0.tabLayers} layers each at ${sig(x0.tabMsPerLayer)} ms a layer), all choosing their layers with the shipped block selection${x0.rebalanceEveryMs === undefined || x0.rebalanceEveryMs === 0 ? '' : ` and natives checking every ${fixed(x0.rebalanceEveryMs / 1000, 0)} s whether the shipped rebalancing would move them (loading the new layers at ${sig(x0.loadGbPerS ?? 0)} GB/s before they switch)`}, round trips to the client drawn from three regions (20–40, 40–100, 120–250 ms); tabs stay ${fixed(x0.tabStayMs / 60_000, 0)} minutes on average and natives ${fixed(x0.nativeStayMs / 3_600_000, 0)} hours (exponential), ${pct(x0.crashShare)} of the leavers crash (the record goes ${fixed(x0.detectMs / 1000, 0)} s later), each replaced by a newcomer; ${x0.sessions} client sessions each generate ${x0.tokens} tokens after a ${x0.promptTokens}-token prompt, one generation after another:`,
    '',
    ...table(
      [
        'scenario',
        'generations completed',
        'tokens/s a session: p50 (p5–p95)',
        'all sessions, tokens/s',
        'first token p50 / p95',
        'failed over: generations, held up p50',
        'least-covered layer (peers)',
        'peers joined, left, moved',
        'one route over the directory',
        'wrong tokens, honest peers accused',
        'virtual time in real time'
      ],
      rows.map((x) => [
        x.name,
        `${x.completed}/${x.generations}`,
        `${fixed(x.tokensPerSecond.p50, 1)} (${fixed(x.tokensPerSecond.p5, 1)}–${fixed(x.tokensPerSecond.p95, 1)})`,
        fixed(x.aggregateTokensPerSecond, 1),
        `${ms(x.firstTokenMs.p50)} / ${ms(x.firstTokenMs.p95)}`,
        `${x.failovers.generations}, ${ms(x.failovers.p50Ms)}`,
        `≥ ${x.coverage.min}`,
        x.moves === undefined ? `${thousands(x.joined)}, ${thousands(x.left)}, –` : `${thousands(x.joined)}, ${thousands(x.left)}, ${thousands(x.moves)}`,
        `${sig(x.routeMs.p50)} ms over ${thousands(x.routeMs.peers)} records`,
        `${x.wrongTokens}, ${x.honestAccused}`,
        `${fixed(x.virtualMs / 60_000, 1)} min in ${fixed(x.realMs / 1000, 1)} s`
      ])
    )
  ]
}

const FAILOVER_PARTS: Array<[keyof FailoverParts, string]> = [
  ['toSpareMs', 'from the kill to the spare having the replay (the failure seen, a new route, a dial, the send)'],
  ['replayMs', "the replay's compute on the spare (the whole history in one step)"],
  ['restMs', "from the spare's result to the next token"]
]

/** The failover gap in parts, measured (the spare's marks) beside simulated (the same marks on the virtual clock). */
function failoverRows(m: FailoverParts | undefined, sim: FailoverParts | undefined): string[][] {
  if (m === undefined || sim === undefined) return []
  return FAILOVER_PARTS.map(([k, what]) => [`… ${what}`, `${fixed(m[k], 1)} ms`, `${fixed(sim[k], 1)} ms`, `× ${fixed(sim[k] / m[k], 2)}`])
}

/** `d` ms of a token, measured less simulated, in words. */
const tokenGap = (d: number): string => (d >= 0 ? `${fixed(d, 1)} ms longer measured than simulated` : `${fixed(-d, 1)} ms longer simulated than measured`)

/** Which part of the failover gap the simulator misses most. */
function failoverGap(m: FailoverParts | undefined, sim: FailoverParts | undefined): string {
  if (m === undefined || sim === undefined) return ''
  const [k, what] = FAILOVER_PARTS.reduce((a, b) => (m[b[0]] - sim[b[0]] > m[a[0]] - sim[a[0]] ? b : a))
  if (m[k] <= sim[k]) return ''
  return ` Of the failover gap's parts, the simulator falls furthest short on one, ${what}: ${fixed(sim[k], 1)} ms against ${fixed(m[k], 1)} measured.`
}

/** What the swept rows say: how far the GPUs move tokens/s at Petals' round trip, and how far the round trip does on its GPU. */
function sweep(rows: SimulateSection['rows'], base: SimulateSection['rows'][number]): string {
  const tps = (xs: SimulateSection['rows']): number[] => xs.map((x) => x.tokensPerSecond)
  const gpus = tps(rows.filter((x) => x.rttMs === base.rttMs))
  const rtts = tps(rows.filter((x) => x.gpu === base.gpu))
  const span = (v: number[]): string => `${fixed(Math.min(...v), 2)}–${fixed(Math.max(...v), 2)}`
  return `The GPUs here move it within ${span(gpus)} tokens/s at that round trip; the round trip, on the same GPUs, within ${span(rtts)}.`
}

interface LinksSection {
  preset: string
  dtype: string
  hops: string[]
  tokens: number
  draft?: string
  plots?: string[]
  rows: Array<{
    rttMs: number
    tokensPerSecond: number
    msPerToken: number
    expectedMsPerToken: number
    firstTokenMs: number
    speculative?: { tokensPerSecond: number; gamma: number; acceptance: number; tokensPerPass: number; sameTokens: boolean }
    forwarded?: { tokensPerSecond: number; msPerToken: number; expectedMsPerToken: number; sameTokens: boolean; dropped: number }
    both?: { tokensPerSecond: number; gamma: number; acceptance: number; tokensPerPass: number; sameTokens: boolean }
    bothClose?: { tokensPerSecond: number; gamma: number; acceptance: number; tokensPerPass: number; sameTokens: boolean }
  }>
  closerDraft?: string
}

interface FailoverParts {
  toSpareMs: number
  replayMs: number
  restMs: number
}

interface CalibrateSection {
  preset: string
  groups: string[]
  measured: {
    tokensPerSecond: number
    heldUpMs: number
    hops: Array<{ layers: [number, number]; computeMs: number; roundTripMs: number }>
    failover?: FailoverParts
  }
  simulated: { tokensPerSecond: number; heldUpMs: number; failover?: FailoverParts }
  tokensRatio: number
  failoverRatio: number
}

interface SwarmRow {
  name: string
  peers: number
  natives: number
  tabs: number
  sessions: number
  durationMs: number
  tabStayMs: number
  nativeStayMs: number
  crashShare: number
  detectMs: number
  promptTokens: number
  tokens: number
  tabLayers: number
  tabMsPerLayer: number
  gpuMix: Array<[string, number]>
  generations: number
  completed: number
  tokensPerSecond: { p50: number; p95: number; p5: number }
  aggregateTokensPerSecond: number
  firstTokenMs: { p50: number; p95: number }
  failovers: { generations: number; p50Ms: number | null; p95Ms: number | null }
  coverage: { min: number }
  routeMs: { p50: number; max: number; peers: number }
  joined: number
  left: number
  moves?: number
  rebalanceEveryMs?: number
  loadGbPerS?: number
  wrongTokens: number
  honestAccused: number
  virtualMs: number
  realMs: number
}

interface WhatIfRow {
  name: string
  how: 'simulated' | 'projected'
  sessions: number
  completed?: number
  tokensPerSecond: number
  aggregateTokensPerSecond?: number
  msPerToken: number
}

/** The what-ifs beside Petals' setting: tokens/s a session (and in all, where several run), × today's. */
function whatIfTable(rows: WhatIfRow[] | undefined, base: SimulateSection['rows'][number] | undefined): string[] {
  if (rows === undefined || base === undefined) return []
  return [
    '',
    `What would move Petals' setting (${base.nodes} × ${base.gpu}, ${base.rttMs} ms): each change simulated through the shipped client (forwarding over the nodes' own uplinks; speculating, a draft of the stated speed and acceptance rate, \`sim/draft.ts\`):`,
    '',
    ...table(
      ['what if', 'how', 'tokens/s a session', '× today', 'all sessions, tokens/s'],
      [
        ['today: the client mediates every hop', 'simulated', fixed(base.tokensPerSecond, 2), '× 1', '–'],
        ...rows.map((x) => [
          x.name,
          x.how,
          fixed(x.tokensPerSecond, 2),
          `× ${fixed(x.tokensPerSecond / base.tokensPerSecond, 2)}`,
          x.aggregateTokensPerSecond === undefined || x.sessions === 1
            ? '–'
            : `${fixed(x.aggregateTokensPerSecond, 1)} (${x.completed ?? x.sessions} of ${x.sessions} completed)`
        ])
      ]
    )
  ]
}

interface SimulateSection {
  whatIfs?: WhatIfRow[]
  swarms?: SwarmRow[]
  model: string
  rows: Array<{
    name: string
    gpu: string
    nodes: number
    rttMs: number
    tokensPerSecond: number
    msPerToken: number
    firstTokenMs: number
    expected: { rttMs: number; computeMs: number; wireMs: number; totalMs: number }
    virtualMs: number
    realMs: number
  }>
}
interface ChaosSection {
  honestRequests: number
  tokens: number
  wallS: number
  attacks: ChaosRow[]
}

type Renderer = (r: BenchResults) => string[]

const KV_LABELS: Record<string, string> = {
  append: '`append` (buffer read in place, new rows appended)',
  gqa: '`gqa` (GroupQueryAttention in place; the binding copies the buffer out)',
  concat: '`concat` (cache copied in and out each step)'
}

const renderers: Record<string, Renderer> = {
  weights(r) {
    const s = section<{
      preset: string
      dtype: string
      shards: number
      files: number
      bytes: number
      rows: WeightsRow[]
      traded: number
      libp2pOverHttp: number
    }>(r, 'weights')
    const mib = (n: number): string => `${fixed(n / 2 ** 20, 1)} MiB`
    return [
      `${provenance('npm run bench -- weights', s.ran)} \`${s.preset}\` ${s.dtype} in ${s.shards} shards (${s.files} files, ${mib(s.bytes)}), relay and nodes in one process on loopback, every node taking all the layers:`,
      '',
      ...table(
        ['case', 'per node', 'time', 'rate per node', 'from the relay'],
        s.rows.map((x) => [x.case, mib(x.bytes), `${fixed(x.seconds, 2)} s`, `${fixed(x.rate / 2 ** 20, 0)} MiB/s`, `${fixed(x.fromRelay * 100, 0)}%`])
      ),
      '',
      `Chunk by chunk over libp2p, every chunk hashed on arrival and the file once whole, a node downloads at × ${fixed(s.libp2pOverHttp, 2)} the rate of plain HTTP GETs from the same relay in the same run; the two joining together took ${mib(s.traded)} from each other.`
    ]
  },

  spine(r) {
    const s = section<{ decode: DecodeResult[] }>(r, 'spine')
    const d = s.decode[0]
    return [
      `${provenance('npm run bench -- spine', s.ran)} \`${d.preset}\` preset, one process, greedy decode of ${d.decodeTokens} tokens after a ${d.promptTokens}-token prompt, onnxruntime-node (${d.device}):`,
      '',
      ...table(
        ['dtype', 'on disk', 'decode tokens/s', 'ms per layer per token', 'prefill', 'load (hash + session)'],
        s.decode.map((x) => [
          x.dtype,
          x.bytes === undefined ? '' : `${sig(x.bytes / 1e6)} MB`,
          sig(x.tokensPerSecond),
          sig(x.msPerLayerPerToken),
          `${sig(x.prefillMs)} ms`,
          `${fixed(x.loadMs, 0)} ms`
        ])
      )
    ]
  },

  int4(r) {
    const s = section<{ accuracy: Int4Accuracy[] }>(r, 'int4')
    const steps = s.accuracy[0].steps
    return [
      `${provenance('npm run bench -- int4', s.ran)} teacher-forced over ${steps} steps after an 8-token prompt, against fp32 on the same weights:`,
      '',
      ...table(
        ['model', 'relative RMS error of the logits (max / mean)', 'fp32 top-1 = int4 top-1', 'fp32 top-1 in int4 top-5'],
        s.accuracy.map((x) => [
          x.model === 'stories260K' ? x.model : `\`${x.model}\` random preset`,
          `${sig(x.relRmsMax)} / ${sig(x.relRmsMean)}`,
          `${x.top1Agree}/${x.steps}`,
          `${x.fp32Top1InInt4Top5}/${x.steps}`
        ])
      )
    ]
  },

  throughput(r) {
    const s = section<{
      preset: string
      positions: [number, number]
      context: ContextRow[]
      plot: string
      concurrency: ConcurrencyRow[]
      concurrencyPlot: string
      speedup16: number
      node: NodeConcurrencyRow[]
      bandwidth: BandwidthRow
    }>(r, 'throughput')
    const [early, late] = s.positions
    const bw = s.bandwidth
    const nodeCounts = [...new Set(s.node.map((x) => x.sessions))]
    const most = s.concurrency[s.concurrency.length - 1]
    return [
      `${provenance('npm run bench -- throughput', s.ran)} \`${s.preset}\`, whole model, onnxruntime-node (threads not spinning between runs, as a node runs them), in one process.`,
      '',
      `One shard serving concurrent sessions: each prefills 16 tokens, then all decode 48 at once. Aggregate decode tokens/s with continuous batching (the default limits) and with every step run alone, alternated at each count (median of 3):`,
      '',
      ...table(
        ['sessions', 'batched tokens/s', 'rows per batched run', 'one step at a time', 'batched ÷ one session'],
        s.concurrency.map((x) => [x.sessions, sig(x.batched), fixed(x.rowsPerRun, 1), sig(x.alone), `× ${fixed(x.batched / s.concurrency[0].batched, 2)}`])
      ),
      '',
      `${most.sessions} concurrent sessions give × ${fixed(s.speedup16, 2)} the tokens/s of one.`,
      '',
      'The same through a real node (one `tessera node` process serving the whole model, the relay and its client in the bench process, as the HTTP API drives it; each generation 16 prompt tokens and 48 more, aggregate tokens/s over the wall time, median of 3):',
      '',
      ...table(
        ['node', ...nodeCounts.map((n) => `${n} at once`), `${nodeCounts[nodeCounts.length - 1]} ÷ 1`],
        [...new Set(s.node.map((x) => x.batch))].map((batch) => {
          const at = (n: number): number => s.node.find((x) => x.batch === batch && x.sessions === n)!.tokensPerSecond
          return [
            batch === 1 ? '`--batch 1` (every step alone)' : `\`--batch ${batch}\` (the default)`,
            ...nodeCounts.map((n) => `${sig(at(n))} tokens/s`),
            `× ${fixed(at(nodeCounts[nodeCounts.length - 1]) / at(nodeCounts[0]), 2)}`
          ]
        })
      ),
      '',
      `![aggregate decode tokens/s against concurrent sessions](${s.concurrencyPlot})`,
      '',
      `One session, one decode step at a time. Each layout's session runs alone from the first position to the last (another layout's steps in between evict its cache), the layouts in turn, twice; each step's time is the better of its two passes:`,
      '',
      ...table(
        ['KV cache', `ms per step at position ~${early}`, `at ~${late}`, `÷`],
        s.context.map((x) => [KV_LABELS[x.kv] ?? x.kv, sig(x.earlyMs), sig(x.lateMs), `× ${fixed(x.ratio, 2)}`])
      ),
      '',
      `![ms per decode step against position, per KV cache layout](${s.plot})`,
      '',
      `Against memory bandwidth: a step reads ${sig(bw.weightBytes / 2 ** 20)} MiB of weights (the shard less all but one row of the embedding table); a 256 MiB typed-array copy moves ${sig(bw.copyBytesPerSecond / 1e9)} GB/s here, so reading the weights alone allows ${sig(bw.limitTokensPerSecond)} tokens/s. One session decoded ${sig(bw.tokensPerSecond)} (position ~${early}, \`append\`): ${fixed(bw.ratio, 2)} of that limit. A copy reads and writes each byte, a decode step only reads its weights: counting both sides of the copy, the limit is ${sig(2 * bw.limitTokensPerSecond)} tokens/s, and the decode ${fixed(bw.ratio / 2, 2)} of it.`
    ]
  },

  network(r) {
    const s = section<NetworkSection>(r, 'network')
    return [
      `${provenance('npm run bench -- network', s.ran)} relay in the bench process, nodes as separate processes on loopback, fp32, same model files; all processes share the machine's cores, so this is the protocol's cost plus CPU contention. The one-process figure is the best of onnxruntime's default threads spinning and not, measured before and after each network run (the better of the two):`,
      '',
      ...table(
        ['preset', 'nodes', 'network tokens/s', 'best one process tokens/s', 'ratio', 'median per-hop overhead'],
        s.decode.map((x) => [
          x.preset,
          x.nodes,
          sig(x.networkTokensPerSecond),
          `${sig(x.localTokensPerSecond)}${x.localSpin === undefined ? '' : x.localSpin ? ' (spinning)' : ' (not spinning)'}`,
          fixed(x.ratio, 2),
          `${sig(x.medianHopOverheadMs)} ms`
        ])
      ),
      '',
      `Per-hop overhead (round trip minus the node's own compute) at hidden size 4096 (16 KiB of activations per token): **${sig(s.hop4096.medianOverheadMs)} ms** median.`,
      ...hopAnatomy(s.hop4096)
    ]
  },

  browser(r) {
    const s = section<BrowserSection>(r, 'browser')
    const ok = (x: BrowserRow | { error: string } | undefined): x is BrowserRow => x !== undefined && !('error' in x)
    const row = (name: string, x: BrowserRow | { error: string } | undefined): Array<string | number> => {
      if (x === undefined) return [name, 'not run', '', '', '', '', '']
      if ('error' in x) return [name, `failed: ${x.error.replace(/\|/g, '/')}`, '', '', '', '', '']
      const long = x.longMsPerLayer === undefined ? '' : sig(x.longMsPerLayer)
      const longRatio = x.longRatioToNode === undefined ? '' : `${sig(x.longRatioToNode)}×`
      return [name, sig(x.msPerLayer), `${sig(x.ratioToNode)}×`, long, longRatio, secs(x.clickToServingMs), secs(x.clickToFirstRequestMs)]
    }
    const gpu = s.webgpu
    const host = s.webgpuMemoryKv
    const kvRatio =
      ok(gpu) && ok(host) && gpu.longMsPerLayer !== undefined && host.longMsPerLayer !== undefined
        ? [
            '',
            `WebGPU with the KV cache kept on the GPU ÷ in the tab's memory, over the long generation: **× ${fixed(gpu.longMsPerLayer / host.longMsPerLayer, 2)}**` +
              ` (${sig(gpu.longMsPerLayer)} vs ${sig(host.longMsPerLayer)} ms per layer per step). Chromium's software adapter keeps its "GPU" buffers in this machine's memory, so this says what the device path costs there, not what it saves on a real GPU.`
          ]
        : []
    return [
      `${provenance('npm run bench -- browser', s.ran)} \`${s.preset}\` preset, shard [${s.shard.join(',')}), Debian Chromium headless:`,
      '',
      ...table(
        [
          'backend',
          'ms per layer per decode step (as the tab measures itself, context 32)',
          `÷ onnxruntime-node (${sig(s.nodeMsPerLayer)} ms)`,
          'ms per layer per step over a 256-token generation through it',
          `÷ onnxruntime-node over the same steps (${s.nodeLongMsPerLayer === undefined ? 'not run' : `${sig(s.nodeLongMsPerLayer)} ms`})`,
          'click → serving',
          'click → first request served'
        ],
        [
          row('WASM (1 thread)', s.wasm),
          row(`WASM (${s.wasmThreads !== undefined && 'threads' in s.wasmThreads ? s.wasmThreads.threads : 'several'} threads)`, s.wasmThreads),
          row('WebGPU (software adapter), KV cache on the GPU', s.webgpu),
          row("WebGPU (software adapter), KV cache in the tab's memory", s.webgpuMemoryKv)
        ]
      ),
      ...kvRatio
    ]
  },

  verify(r) {
    const s = section<VerifySection>(r, 'verify')
    const l = s.latency
    const audits = s.optimisticAudit.map(
      (a) => `${a.preset} ${fixed(a.decodeMs, 0)} ms step by step vs ${fixed(a.prefillMs, 0)} ms at once (**× ${fixed(a.speedup, 0)}**)`
    )
    const disputes = s.disputeCost.map(
      (d) =>
        `${d.preset}: block ${d.layer} of ${d.blocks} in ${sig(d.blockMs)} ms vs ${sig(d.shardMs)} ms for the whole shard (**× ${fixed(d.saving, 1)}** less work; its graph loads once in ${fixed(d.partLoadMs, 0)} ms)`
    )
    const receipt = s.receipt[0]
    return [
      `${provenance('npm run bench -- verify', s.ran)} decode steps through one shard on the CPU:`,
      '',
      ...table(
        ['shard', 'hop compute', 'fingerprint', "node's whole receipt (chain, fingerprint, Merkle root, Ed25519 signature)", "client's check"],
        s.receipt.map((x) => [
          `${x.preset} [${x.layers.join(',')})`,
          `${sig(x.computeMs)} ms`,
          `${sig(x.fingerprintMs)} ms (${fixed(x.fingerprintPercent, 1)}%)`,
          `${sig(x.nodeReceiptMs)} ms (${fixed(x.nodeReceiptPercent, 0)}%)`,
          `${sig(x.clientCheckMs)} ms (${fixed(x.clientCheckPercent, 0)}%)`
        ])
      ),
      '',
      `Receipts are ${receipt.receiptBytesPerDecodeToken} bytes per decode token, ~${fixed(s.prefill.bytesPerToken, 0)} bytes per token of a ${s.prefill.tokens}-token prefill.`,
      `A ${l.tokens}-token generation (${l.preset}, 2 hops × 2 nodes, all processes on the same cores, median of 7 interleaved runs): ` +
        `\`none\` ${fixed(l.noneMs, 0)} ms, \`redundant\` k = 2 ${fixed(l.redundantMs, 0)} ms (**× ${fixed(l.redundantOverNone, 2)}**), ` +
        `\`spot\` p = 0.2 ${fixed(l.spotMs, 0)} ms (**× ${fixed(l.spotOverNone, 2)}**).`,
      `An optimistic watcher audits a hop in one prefill: ${s.optimisticAudit[0].rows} generated rows through a middle shard, ${audits.join('; ')}.`,
      `A dispute's referee re-executes one block over ${s.disputeCost[0].rows} rows: ${disputes.join('; ')}.`,
      '',
      'How small a weight perturbation the fingerprints notice (`perturb=EPS` on layer 0 of stories260K, share of single hop-steps whose fingerprint no longer matches the honest one):',
      '',
      ...table(
        ['EPS (× weight RMS)', ...s.perturbSensitivity.map((p) => String(p.eps))],
        [['hop-steps caught', ...s.perturbSensitivity.map((p) => `${p.caught} / ${p.hopSteps}`)]]
      )
    ]
  },

  /** The latency column of "Which mode to pick", from the verify and zk sections. */
  modes(r) {
    const v = section<VerifySection>(r, 'verify')
    const z = section<ZkSection>(r, 'zk')
    const l = v.latency
    const audit = range(
      v.optimisticAudit.map((a) => a.speedup),
      (x) => fixed(x, 0)
    )
    const prove = z.sampling === undefined ? 'seconds' : secs(z.sampling.proveMs)
    return [
      `Which mode to pick (\`npm run bench -- verify\` and \`-- zk\`, ${v.ran?.date.slice(0, 10) ?? ''}, ${v.ran?.cpus ?? '?'} cores):`,
      '',
      ...table(
        ['mode', 'extra cost', 'latency', 'what it guarantees'],
        [
          ['`none`', '—', '× 1', 'nothing beyond the receipts: trusts each peer'],
          [
            '`spot` p = 0.2',
            'a checker on ~20% of steps',
            `× ${fixed(l.spotOverNone, 2)}`,
            'a consistently faulty peer is caught with probability 1 − (1 − p)^steps (`test/verify-network.test.ts`)'
          ],
          [
            '`redundant` k = 2',
            'k × compute, a referee on disagreement',
            `× ${fixed(l.redundantOverNone, 2)}`,
            'a wrong hop is caught at the step it happens unless all k lanes collude'
          ],
          [
            '`optimistic`',
            `an audit prefill (× ${audit} cheaper than generating) per sampled hop; disputes re-execute one block`,
            '× 1, final after the window (5–30 s)',
            'wrong results overturned within the window if an honest watcher holds the layers'
          ],
          [
            '`zk` (small models)',
            'a proof per inference: seconds',
            'seconds',
            'cryptographic (given the set-up), weights hidden; only for models that fit a circuit'
          ],
          [
            '`tessera_prove_sampling` (beside any mode)',
            `a proof per token: ${prove} of CPU on the sampler`,
            'tokens at once; the answer after the proofs',
            'the token is the argmax of the logits the last hop signed; nothing about the layers'
          ]
        ]
      )
    ]
  },

  zk(r) {
    const s = section<ZkSection>(r, 'zk')
    const lines = [
      `${provenance('npm run bench -- zk', s.ran)} set-up figures from the run that made the cached set-up (\`.cache/zk\`), proving and verification medians of 5:`,
      '',
      ...table(
        ['model', 'constraints', 'ceremony', 'compile', 'Groth16 keys', 'witness', 'prove', 'verify (Node)', 'proof', 'int8 error'],
        s.models.map((m) => [
          `${m.model} ${m.widths.join('→')}`,
          thousands(m.constraints),
          `2^${m.power}, ${secs(m.ptauMs)}`,
          secs(m.compileMs),
          secs(m.zkeyMs),
          `${fixed(m.witnessMs, 0)} ms`,
          secs(m.proveMs),
          `${fixed(m.verifyMs, 0)} ms`,
          `${m.proofBytes} B (${m.proofJsonBytes} B JSON)`,
          `${fixed(100 * m.maxRelError, 1)}%, argmax ${fixed(100 * m.argmaxAgreement, 1)}%`
        ])
      )
    ]
    if (s.browser !== undefined)
      lines.push(
        '',
        `Verification in Chromium (the SDK in a tab, a native node proving \`${s.browser.model}\` over the network): ${fixed(s.browser.verifyMs, 0)} ms (median), ${fixed(s.browser.firstMs, 0)} ms for the page's first proof while snarkjs loads and starts its workers.`
      )
    return lines
  },

  /** The sampling-step proof, in the zero-knowledge section. */
  sampling(r) {
    const s = section<ZkSection>(r, 'zk')
    const p = s.sampling
    if (p === undefined) throw new Error('bench-results/bench.json: the zk section has no sampling row (stories260K missing when it ran?)')
    return [
      `Measured on stories260K (vocabulary ${p.vocab}, \`npm run bench -- zk\`, ${s.ran?.date.slice(0, 10) ?? ''}): ${thousands(p.constraints)} constraints (a 2^${p.power} powers of tau), ` +
        `set-up ${secs(p.compileMs)} compile + ${secs(p.zkeyMs)} keys once; ${secs(p.proveMs)} of proving per token on ${s.ran?.cpus ?? '?'} cores ` +
        '(proved beside the generation, so tokens stream at once and the answer waits for the proofs); ' +
        `the last hop's commitment (Poseidon over the packed logits, in JS) ${sig(p.commitMs)} ms per step; verification ${sig(p.verifyMs)} ms per token in Node; a proof is ${p.proofBytes} bytes.`
    ]
  },

  links(r) {
    const s = section<LinksSection>(r, 'links')
    const last = s.rows[s.rows.length - 1]
    const hops = s.hops.length
    const ratio = (a: number | undefined, b: number): string => (a === undefined ? '–' : `× ${fixed(a / b, 2)}`)
    const same = (x: { sameTokens: boolean } | undefined): string => (x === undefined ? '–' : x.sameTokens ? 'yes' : '**no**')
    return [
      `${provenance('npm run bench -- links', s.ran)} \`${s.preset}\` ${s.dtype} through a relay and native nodes ${s.hops.join(', ')} as processes on loopback, every process's connections slowed to the round trip (\`TESSERA_LINK_RTT_MS\`), one session, ${s.tokens} tokens after a 16-token prompt (the second of two generations of each kind); speculating, the draft is ${s.draft ?? 'a model'} in the client's process, γ up to ${s.rows[0].speculative?.gamma ?? '–'} a pass, adapting to the drafts kept and the timings (\`chooseGamma\`). Through the client (plain):`,
      '',
      ...table(
        [
          'round trip per link',
          'tokens/s',
          'ms per token',
          `the 0 ms token + ${hops} round trips`,
          'measured ÷ that',
          'first token',
          'speculative: tokens/s',
          '× plain',
          'drafts kept, tokens a pass',
          'same tokens'
        ],
        s.rows.map((x) => [
          `${x.rttMs} ms`,
          fixed(x.tokensPerSecond, 2),
          fixed(x.msPerToken, 1),
          fixed(x.expectedMsPerToken, 1),
          `× ${fixed(x.msPerToken / x.expectedMsPerToken, 2)}`,
          `${fixed(x.firstTokenMs, 0)} ms`,
          x.speculative === undefined ? '–' : fixed(x.speculative.tokensPerSecond, 2),
          ratio(x.speculative?.tokensPerSecond, x.tokensPerSecond),
          x.speculative === undefined ? '–' : `${fixed(x.speculative.acceptance * 100, 0)}%, ${fixed(x.speculative.tokensPerPass, 2)}`,
          same(x.speculative)
        ])
      ),
      '',
      `Node to node (\`forward: true\`, \`tessera generate --forward\`), the same session, beside the pipeline's bound: the 0 ms forwarded token plus (${hops} + 1) / 2 round trips:`,
      '',
      ...table(
        [
          'round trip per link',
          'forwarded: tokens/s',
          'ms per token',
          `the 0 ms token + ${fixed((hops + 1) / 2, 1)} round trips`,
          'measured ÷ that',
          '× plain',
          'forwarded + speculative: tokens/s',
          '× plain',
          'drafts kept',
          'same tokens'
        ],
        s.rows.map((x) => [
          `${x.rttMs} ms`,
          x.forwarded === undefined ? '–' : fixed(x.forwarded.tokensPerSecond, 2),
          x.forwarded === undefined ? '–' : fixed(x.forwarded.msPerToken, 1),
          x.forwarded === undefined ? '–' : fixed(x.forwarded.expectedMsPerToken, 1),
          x.forwarded === undefined ? '–' : `× ${fixed(x.forwarded.msPerToken / x.forwarded.expectedMsPerToken, 2)}`,
          ratio(x.forwarded?.tokensPerSecond, x.tokensPerSecond),
          x.both === undefined ? '–' : fixed(x.both.tokensPerSecond, 2),
          ratio(x.both?.tokensPerSecond, x.tokensPerSecond),
          x.both === undefined ? '–' : `${fixed(x.both.acceptance * 100, 0)}%`,
          x.forwarded === undefined ? '–' : same({ sameTokens: x.forwarded.sameTokens && x.both?.sameTokens !== false })
        ])
      ),
      '',
      `Through the client each token pays a round trip per hop: at ${last.rttMs} ms that is ${fixed((1 - s.rows[0].msPerToken / last.msPerToken) * 100, 0)}% of a plain token. ` +
        `Forwarded it pays (hops + 1) / 2, so over ${hops} hops the most forwarding alone can give is × ${fixed(hops / ((hops + 1) / 2), 2)} on links where the round trips are all there is` +
        (last.forwarded !== undefined ? `; measured at ${last.rttMs} ms: ${ratio(last.forwarded.tokensPerSecond, last.tokensPerSecond)}.` : '.') +
        ' Speculating, one pass of those round trips yields every draft the target keeps plus its own token; the two multiply' +
        (last.both !== undefined
          ? ` (${ratio(last.both.tokensPerSecond, last.tokensPerSecond)} at ${last.rttMs} ms with ${fixed(last.both.acceptance * 100, 0)}% of drafts kept).`
          : '.'),
      ...(s.rows.some((x) => x.bothClose !== undefined)
        ? [
            '',
            `How much the draft's agreement buys: forwarded + speculative again, the draft ${s.closerDraft ?? 'a closer copy'}, in half precision: it agrees with the target far more than the int4 copy does (random weights' logits are nearly flat, so int4 flips their argmax often; a trained model's int4 copy agrees far more), and its time on the client is in the measurement:`,
            '',
            ...table(
              ['round trip per link', 'tokens/s', '× plain', 'drafts kept', 'tokens a pass', 'same tokens'],
              s.rows.map((x) => [
                `${x.rttMs} ms`,
                x.bothClose === undefined ? '–' : fixed(x.bothClose.tokensPerSecond, 2),
                ratio(x.bothClose?.tokensPerSecond, x.tokensPerSecond),
                x.bothClose === undefined ? '–' : `${fixed(x.bothClose.acceptance * 100, 0)}%`,
                x.bothClose === undefined ? '–' : fixed(x.bothClose.tokensPerPass, 2),
                same(x.bothClose)
              ])
            )
          ]
        : []),
      ...(s.plots ?? []).flatMap((p) => ['', `![one session's tokens/s against the round trip per link, each way of running it](${p})`])
    ]
  },

  calibrate(r) {
    const s = section<CalibrateSection>(r, 'calibrate')
    const m = s.measured
    const hops = m.hops.map((h) => `[${h.layers.join(',')}) ${sig(h.computeMs)} ms of its ${sig(h.roundTripMs)} ms round trip`).join(', ')
    return [
      `${provenance('npm run bench -- calibrate', s.ran)} \`${s.preset}\` fp32 through a relay and nodes ${s.groups.join(', ')} as processes on loopback, then the same topology in the simulator given that run's own figures (each hop's compute from the nodes' marks: ${hops}; the rest of each round trip as its link):`,
      '',
      ...table(
        ['', 'measured on loopback', 'simulated', 'simulated ÷ measured'],
        [
          ['decode tokens/s', fixed(m.tokensPerSecond, 1), fixed(s.simulated.tokensPerSecond, 1), `× ${fixed(s.tokensRatio, 2)}`],
          [
            'a kill -9 of the second hop mid-generation holds the next token up',
            `${fixed(m.heldUpMs, 0)} ms`,
            `${fixed(s.simulated.heldUpMs, 0)} ms`,
            `× ${fixed(s.failoverRatio, 2)}`
          ],
          ...failoverRows(m.failover, s.simulated.failover)
        ]
      ),
      '',
      `A token took ${tokenGap(1000 / m.tokensPerSecond - 1000 / s.simulated.tokensPerSecond)}: the simulator leaves out the client's own CPU per token (sampling over the vocabulary, checking receipts) and takes each hop's compute and link as medians of the measured steps.${failoverGap(m.failover, s.simulated.failover)}`
    ]
  },

  simulate(r) {
    const s = section<SimulateSection>(r, 'simulate')
    const rows = s.rows.map((x) => [
      x.name === 'petals' ? `**${x.nodes} × ${x.gpu}, ${x.rttMs} ms** (Petals' setting)` : `${x.nodes} × ${x.gpu}, ${x.rttMs} ms`,
      fixed(x.tokensPerSecond, 2),
      fixed(x.msPerToken, 1),
      `${fixed(x.expected.totalMs, 1)} = ${fixed(x.expected.rttMs, 0)} + ${fixed(x.expected.computeMs, 1)} + ${fixed(x.expected.wireMs, 1)}`,
      `${fixed((x.expected.rttMs / x.expected.totalMs) * 100, 0)}%`,
      secs(x.firstTokenMs),
      `${fixed(x.virtualMs / 1000, 1)} s in ${fixed(x.realMs, 0)} ms`
    ])
    const petals = s.rows.find((x) => x.name === 'petals')
    return [
      `${provenance('npm run bench -- simulate', s.ran)} ${s.model} over a chain of GPU nodes, every link the same round trip and 100 Mbit/s each way, one session through the shipped client (a 16-token prompt, 32 tokens; a layer's decode is its weight bytes ÷ 70% of the GPU's memory bandwidth):`,
      '',
      ...table(
        [
          'nodes, round trip',
          'tokens/s',
          'ms per token (simulated)',
          'ms per token by the links and hardware alone: round trips + compute + wire',
          'round trips’ share',
          'first token',
          'virtual time in real time'
        ],
        rows
      ),
      ...(petals === undefined
        ? []
        : [
            '',
            `In Petals' setting a token costs ${fixed(petals.msPerToken, 0)} ms, ${fixed((petals.expected.rttMs / petals.expected.totalMs) * 100, 0)}% of it the ${petals.nodes} round trips the client mediates: ${fixed(petals.tokensPerSecond, 2)} tokens/s against Petals' published "up to 6". ${sweep(s.rows, petals)}`
          ]),
      ...whatIfTable(s.whatIfs, petals),
      ...swarmTable(s.swarms)
    ]
  },

  chain(r) {
    const s = section<{ rows: ChainBenchRow[]; deployGas: number; verifierDeployGas: number }>(r, 'chain')
    return [
      `${provenance('npm run bench -- chain', s.ran)} a local anvil, median of 7 calls:`,
      '',
      ...table(
        ['call', 'gas', 'latency (ms)'],
        [
          ['deploy TesseraStake', thousands(s.deployGas), 'once'],
          ['deploy + register a ZK model verifier (tiny)', thousands(s.verifierDeployGas), 'once per model'],
          ...s.rows.map((x) => [x.op.replace(/\|/g, '/'), thousands(x.gas), sig(x.medianMs)])
        ]
      )
    ]
  },

  escape(r) {
    const s = section<EscapeSection>(r, 'escape')
    const modes = [...new Set(s.rows.map((x) => x.mode))]
    const cs = [...new Set(s.rows.map((x) => x.c))].sort((a, b) => a - b)
    const slashed = s.rows.reduce((a, x) => a + x.honestSlashed, 0)
    const wrongFixes = s.rows.reduce((a, x) => a + (x.overturnedWrong?.rate ?? 0) * s.trialsPerRow, 0)
    return [
      `${provenance('npm run bench -- escape', s.ran)} stories260K cut [0,2) [2,5), m = ${s.n} on [0,2), colluders \`wrong-weights=7\`, n = ${s.tokens}, ` +
        `${s.trialsPerRow} generations a row, a fresh network and ledger each; the rate, its 95% Wilson interval, the formula in brackets:`,
      '',
      ...table(
        ['mode', ...cs.map((c) => `c = ${c} of ${s.n}`)],
        modes.map((m) => [
          m,
          ...cs.map((c) => {
            const x = s.rows.find((y) => y.mode === m && y.c === c)
            return x === undefined ? '' : `${rate(x.rate)} ${span(x.ci95)} (${rate(x.formula)})`
          })
        ])
      ),
      '',
      `An honest peer lost stake in ${slashed} of the ${thousands(s.rows.length * s.trialsPerRow)} generations; ${Math.round(wrongFixes)} overturned claims were corrected to wrong tokens.`
    ]
  },

  chaos(r) {
    const s = section<ChaosSection>(r, 'chaos')
    const lag = s.attacks.map((a) => Number(a.notes.relayLagMaxMs)).filter((x) => Number.isFinite(x))
    return [
      `${provenance('npm run bench -- chaos', s.ran)} latencies in ms of ${s.honestRequests} honest requests of ${s.tokens} tokens, idle then beside the attack:`,
      '',
      ...table(
        ['attack', 'tried', 'caught', 'honest slashed', 'wrong tokens', 'honest ok', 'p50 idle → attack', '×', 'p99 idle → attack', '×'],
        s.attacks.map((a) => [
          a.attack,
          a.tried,
          a.caught,
          a.honestSlashed,
          a.wrongTokens,
          `${a.honestOk}/${a.honestOk + a.honestFailed}`,
          `${fixed(a.idleP50, 0)} → ${fixed(a.p50, 0)}`,
          fixed(a.p50Ratio, 2),
          `${fixed(a.idleP99, 0)} → ${fixed(a.p99, 0)}`,
          fixed(a.p99Ratio, 2)
        ])
      ),
      ...(lag.length > 0 ? ['', `The relay's longest event-loop delay during an attack (its \`/metrics\`) was ${range(lag, (x) => fixed(x, 0))} ms.`] : [])
    ]
  }
}

export const REGION_NAMES = Object.keys(renderers)

const OPEN = /^( *)<!-- bench: ([a-z0-9-]+) -->$/
const CLOSE = /^ *<!-- \/bench -->$/

export interface Region {
  name: string
  /** Line numbers (0-based) of the markers. */
  open: number
  close: number
  indent: string
  body: string
}

/** The regions of a README, with their current text. */
export function regions(readme: string): Region[] {
  const lines = readme.split('\n')
  const found: Region[] = []
  for (let i = 0; i < lines.length; i++) {
    const m = OPEN.exec(lines[i])
    if (m === null) continue
    const close = lines.findIndex((l, j) => j > i && CLOSE.test(l))
    if (close < 0) throw new Error(`README line ${i + 1}: <!-- bench: ${m[2]} --> has no <!-- /bench -->`)
    found.push({ name: m[2], open: i, close, indent: m[1], body: lines.slice(i + 1, close).join('\n') })
    i = close
  }
  return found
}

/** What a region should say, given the results. */
export function render(name: string, results: BenchResults, indent = ''): string {
  const r = renderers[name]
  if (r === undefined) throw new Error(`no renderer for bench region "${name}" (known: ${REGION_NAMES.join(', ')})`)
  return r(results)
    .map((l) => (l === '' ? '' : indent + l))
    .join('\n')
}

/** The README with every region rendered from the results. */
export function renderReadme(readme: string, results: BenchResults): string {
  const lines = readme.split('\n')
  // From the last region up, so earlier line numbers stay valid.
  for (const g of regions(readme).reverse()) lines.splice(g.open + 1, g.close - g.open - 1, render(g.name, results, g.indent))
  return lines.join('\n')
}

/** Where the hop's overhead goes: our stages (test/bench/hop.ts) and the transport against a bare libp2p echo. */
function hopAnatomy(h: NetworkSection['hop4096']): string[] {
  if (h.echo === undefined || h.stages === undefined) {
    return h.echoMs === undefined ? [] : [`A bare libp2p echo of 16 KiB in the same run (two peers in the bench process) takes ${sig(h.echoMs)} ms.`]
  }
  const e = h.echo
  const ours = h.stages.filter((x) => x.inOverhead !== false).reduce((a, x) => a + x.us / 1000, 0)
  return [
    '',
    `Where it goes. Our own stages, each timed alone at width 4096 with the functions the client and \`serve.ts\` call (Node's native sha256 and Ed25519): ${sig(ours * 1000)} µs in all.`,
    '',
    ...table(
      ['side', 'stage', 'µs'],
      h.stages.map((x) => [x.side, x.stage, sig(x.us)])
    ),
    '',
    `The rest, ${sig(h.medianOverheadMs - ours)} ms, is the transport: the two 16 KiB messages through noise, yamux and TCP, and each process waking up. A bare libp2p echo of 16 KiB (peers built like ours, nothing of Tessera's on the stream) takes ${sig(e.inProcessMs)} ms between two peers in one process, ${sig(e.crossProcessMs)} ms between two processes back to back, and ${sig(e.cadenceMs)} ms between two processes at the hop's own cadence (${sig(e.gapMs)} ms idle before each round, as a node of the 2-node pipeline idles while the other hop runs). A hop always crosses processes and idles between steps, so the last is its floor: the hop costs **× ${fixed(h.medianOverheadMs / e.cadenceMs, 2)}** it (× ${fixed(h.medianOverheadMs / e.crossProcessMs, 2)} the back-to-back echo, × ${fixed(h.medianOverheadMs / e.inProcessMs, 2)} the one-process echo).`,
    ...inPlace(h)
  ]
}

/** The same hop's stages where they run, from the client's and nodes' marks (host/hop-marks.ts). */
function inPlace(h: NetworkSection['hop4096']): string[] {
  const p = h.inPlace
  if (p === undefined) return []
  const alone = (names: string[]): number => (h.stages ?? []).filter((x) => names.includes(x.stage)).reduce((a, x) => a + x.us / 1000, 0)
  const receiptAlone = alone(["the output's fingerprint", 'receipt (CBOR + Ed25519 signature)'])
  const s = h.signIdle
  const idleNote =
    s === undefined
      ? ''
      : ` (in the same run an Ed25519 signature alone took ${fixed(s.hotUs, 0)} µs back to back and ${fixed(s.idleUs, 0)} µs after ${sig(s.gapMs)} ms idle)`
  return [
    '',
    `The same stages where they really run: marks on both ends of every step (\`host/hop-marks.ts\`, nodes started with \`TESSERA_HOP_MARKS=1\`), on the monotonic clock the processes share, medians of ${p.steps} decode steps of the measured generation:`,
    '',
    ...table(
      ['from → to', 'ms'],
      [
        ["client starts the step → node has it decoded (the client's encoding, the way there)", sig(p.toNodeMs)],
        ["node's checks", sig(p.checksMs)],
        ['compute', sig(p.computeMs)],
        [`fingerprint + signed receipt (${sig(receiptAlone)} ms timed alone)`, sig(p.receiptMs)],
        ['node encodes and writes the result', sig(p.writeMs)],
        ['receipt signed → client has the result decoded (the write included)', sig(p.toClientMs)],
        ['round trip', sig(p.roundTripMs)]
      ]
    ),
    '',
    `The fingerprint and receipt take × ${fixed(p.receiptMs / receiptAlone, 1)} in place what they take in a warm loop: the node runs them after idling while the other hop computed, on caches its compute just went through${idleNote}. The two ways through the transport, ${sig(p.toNodeMs)} + ${sig(p.toClientMs)} ms, are × ${fixed((p.toNodeMs + p.toClientMs) / (h.echo?.cadenceMs ?? Number.NaN), 2)} the echo at the same cadence.`
  ]
}
