/**
 * One scenario family: a model split over a chain of GPU nodes (each one GPU, or a
 * tensor-parallel group of them), every link the same round trip, sessions generating through
 * the shipped client at once. What a token costs, simulated, beside where each millisecond of it
 * should go by the links and the hardware alone.
 */
import { createClient } from '../shared/client/client.js'
import { InputError } from '../shared/errors.js'
import { BATCH_DEFAULTS } from '../shared/batch.js'
import { mulberry32 } from '../shared/rng.js'
import { simulate } from './run.js'
import { gpuCost, layersThatFit, tensorParallelCost, type GroupLink, type Gpu, type ModelFacts } from './hardware.js'
import { simNetwork } from './network.js'
import { uplink } from './link.js'
import { simDraft } from './draft.js'
import type { Draft as DraftModel } from './whatif.js'

export interface ChainScenario {
  model: ModelFacts
  gpu: Gpu
  nodes: number
  rttMs: number
  uplinkMbps: number
  vocab: number
  promptTokens: number
  tokens: number
  /** Sessions generating at once (default 1), each its own client. */
  sessions?: number
  /** A node's continuous batching: one-token steps of this many sessions at most run as one (default the node's, shared/batch.ts); 1 = each alone. */
  batchRows?: number
  /** Each node a group of this many GPUs splitting every layer (tensor parallelism) over `link`. */
  tensorParallel?: { gpus: number; link: GroupLink }
  /** Node-to-node forwarding (the client's `forward`): each node hands its output to the next over its own uplink. */
  forward?: boolean
  /** Speculative decoding through the client's own code, a draft of this acceptance rate and speed (sim/draft.ts); γ at most `gamma`, adapting unless `adapt` is false. */
  speculate?: { gamma: number; draft: DraftModel; adapt?: boolean }
}

export interface ChainResult {
  /** The median session's. */
  tokensPerSecond: number
  /** Sessions that completed their generation (of `sessions`). */
  completed: number
  /** Completed sessions' tokens over the time the last one took, its prefill included. */
  aggregateTokensPerSecond: number
  firstTokenMs: number
  /** Per decoded token of one session alone, by the model: round trips, compute, bytes on the uplinks. */
  expected: { rttMs: number; computeMs: number; wireMs: number; totalMs: number }
  msPerToken: number
  msPerLayer: number
  /** A further row of a step (a prefill, a batch) through one layer. */
  msPerRowLayer: number
  virtualMs: number
  realMs: number
  events: number
  /** Speculating, over all sessions: drafts kept ÷ drafted, tokens a pass, mean γ. */
  speculation?: { acceptance: number; tokensPerPass: number; meanGamma: number }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]

export async function simulateChain(s: ChainScenario): Promise<ChainResult> {
  const gpus = s.tensorParallel?.gpus ?? 1
  const fit = layersThatFit(s.model, s.gpu) * gpus
  if (fit * s.nodes < s.model.layers) {
    const what = `${s.nodes === 1 ? 'node' : 'nodes'} of ${gpus > 1 ? `${gpus} × ` : ''}${s.gpu.name}`
    throw new InputError(
      `${s.nodes} ${what} ${s.nodes === 1 ? 'holds' : 'hold'} ${fit * s.nodes} of ${s.model.name}'s ${s.model.layers} layers (${fit} a node): give more nodes or larger GPUs`
    )
  }
  const cost = s.tensorParallel === undefined ? gpuCost(s.model, s.gpu) : tensorParallelCost(s.model, s.gpu, gpus, s.tensorParallel.link)
  const bounds = Array.from({ length: s.nodes + 1 }, (_, i) => Math.round((i * s.model.layers) / s.nodes))
  const sessions = s.sessions ?? 1
  const batch = { ...BATCH_DEFAULTS, maxRows: s.batchRows ?? BATCH_DEFAULTS.maxRows }
  const sim = await simulate(async () => {
    // The wire carries the model's real hidden size (fp32 rows) and vocabulary (the last hop's logits).
    const net = simNetwork({ name: s.model.name, width: s.model.hidden, vocab: s.vocab, layers: s.model.layers }, { clientUplinkMbps: s.uplinkMbps })
    for (let i = 0; i < s.nodes; i++) {
      await net.add({ layers: [bounds[i], bounds[i + 1]], cost, device: 'cuda', uplinkMbps: s.uplinkMbps, rttMs: s.rttMs, batch })
    }
    // A session that fails (an overloaded node times out) is counted, not fatal: overload is a finding.
    return await Promise.allSettled(
      Array.from({ length: sessions }, async (_, k) => {
        const sp = s.speculate
        const draft = sp === undefined ? undefined : simDraft(net.model, bounds, sp.draft, 1 + k)
        const client = createClient({
          dialer: net.dialerFrom(uplink(s.uplinkMbps)),
          directory: net.directory,
          random: mulberry32(1 + k),
          ...(draft !== undefined ? { draft } : {})
        })
        const gen = client.generate({
          prompt: Array.from({ length: s.promptTokens }, (_, i) => 1 + ((i + k) % 60)),
          maxTokens: s.tokens,
          forward: s.forward === true,
          ...(sp !== undefined ? { speculate: { gamma: sp.gamma, adapt: sp.adapt ?? true } } : {})
        })
        try {
          for (;;) {
            const x = await gen.next()
            if (x.done === true) return x.value
          }
        } finally {
          draft?.close()
        }
      })
    )
  })
  const done = sim.value.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []))
  if (done.length === 0) throw (sim.value[0] as PromiseRejectedResult).reason
  const decodeMs = done.map((r) => r.timings.totalMs - r.timings.firstTokenMs)
  const { bytesPerMs } = uplink(s.uplinkMbps)
  const row = s.model.hidden * 4
  const expected = {
    rttMs: s.nodes * s.rttMs,
    computeMs: s.model.layers * cost.msPerLayer,
    // The client sends each hop its input row; each node but the last returns a row, the last a row of logits.
    wireMs: (s.nodes * row + (s.nodes - 1) * row + s.vocab * 4) / bytesPerMs,
    totalMs: 0
  }
  expected.totalMs = expected.rttMs + expected.computeMs + expected.wireMs
  const msPerToken = median(decodeMs) / (s.tokens - 1)
  return {
    tokensPerSecond: 1000 / msPerToken,
    completed: done.length,
    aggregateTokensPerSecond: (done.length * s.tokens) / (Math.max(...done.map((r) => r.timings.totalMs)) / 1000),
    firstTokenMs: median(done.map((r) => r.timings.firstTokenMs)),
    expected,
    msPerToken,
    msPerLayer: cost.msPerLayer,
    msPerRowLayer: cost.msPerPrefillRowLayer,
    virtualMs: sim.virtualMs,
    realMs: sim.realMs,
    events: sim.events,
    ...(s.speculate !== undefined ? { speculation: speculationOf(done) } : {})
  }
}

function speculationOf(done: Array<{ speculation?: { passes: number; drafted: number; kept: number } }>): ChainResult['speculation'] {
  const t = done.reduce(
    (a, r) => ({
      passes: a.passes + (r.speculation?.passes ?? 0),
      drafted: a.drafted + (r.speculation?.drafted ?? 0),
      kept: a.kept + (r.speculation?.kept ?? 0)
    }),
    {
      passes: 0,
      drafted: 0,
      kept: 0
    }
  )
  return {
    acceptance: t.drafted > 0 ? t.kept / t.drafted : 0,
    tokensPerPass: t.passes > 0 ? (t.kept + t.passes) / t.passes : 1,
    meanGamma: t.passes > 0 ? t.drafted / t.passes : 0
  }
}
