/**
 * One scenario family: a model split over a chain of GPU nodes, every link the same round trip,
 * one session generating through the shipped client. What it costs per token, simulated, beside
 * where each millisecond of it should go by the links and the hardware alone.
 */
import { createClient } from '../shared/client/client.js'
import { mulberry32 } from '../shared/rng.js'
import { simulate } from './run.js'
import { gpuCost, type Gpu, type ModelFacts } from './hardware.js'
import { simNetwork } from './network.js'
import { uplink } from './link.js'

export interface ChainScenario {
  model: ModelFacts
  gpu: Gpu
  nodes: number
  rttMs: number
  uplinkMbps: number
  vocab: number
  promptTokens: number
  tokens: number
}

export interface ChainResult {
  tokensPerSecond: number
  firstTokenMs: number
  /** Per decoded token, by the model alone: round trips, compute, bytes on the uplinks. */
  expected: { rttMs: number; computeMs: number; wireMs: number; totalMs: number }
  msPerToken: number
  msPerLayer: number
  virtualMs: number
  realMs: number
  events: number
}

export async function simulateChain(s: ChainScenario): Promise<ChainResult> {
  const cost = gpuCost(s.model, s.gpu)
  const bounds = Array.from({ length: s.nodes + 1 }, (_, i) => Math.round((i * s.model.layers) / s.nodes))
  const sim = await simulate(async () => {
    // The wire carries the model's real hidden size (fp32 rows) and vocabulary (the last hop's logits).
    const net = simNetwork({ name: s.model.name, width: s.model.hidden, vocab: s.vocab, layers: s.model.layers }, { clientUplinkMbps: s.uplinkMbps })
    for (let i = 0; i < s.nodes; i++) {
      await net.add({ layers: [bounds[i], bounds[i + 1]], cost, device: 'cuda', uplinkMbps: s.uplinkMbps, rttMs: s.rttMs })
    }
    const client = createClient({ dialer: net.dialer, directory: net.directory, random: mulberry32(1) })
    const gen = client.generate({ prompt: Array.from({ length: s.promptTokens }, (_, i) => 1 + (i % 60)), maxTokens: s.tokens })
    for (;;) {
      const x = await gen.next()
      if (x.done === true) return x.value
    }
  })
  const r = sim.value
  const decodeMs = r.timings.totalMs - r.timings.firstTokenMs
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
  return {
    tokensPerSecond: (s.tokens - 1) / (decodeMs / 1000),
    firstTokenMs: r.timings.firstTokenMs,
    expected,
    msPerToken: decodeMs / (s.tokens - 1),
    msPerLayer: cost.msPerLayer,
    virtualMs: sim.virtualMs,
    realMs: sim.realMs,
    events: sim.events
  }
}
