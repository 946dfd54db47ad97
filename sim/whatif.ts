/**
 * What-ifs the shipped client cannot run yet (issue 20 builds them): node-to-node forwarding and
 * speculative decoding, projected from a simulated chain's own figures. Only the term each one
 * changes is replaced; the rest of a token (compute, queueing, the client's share) is what the
 * simulation measured. Once the client forwards and speculates, these become simulated rows.
 */
import type { ChainResult, ChainScenario } from './pipeline.js'
import { uplink } from './link.js'

export interface Projection {
  msPerToken: number
  tokensPerSecond: number
}

/** A draft model beside the sampler, and how often the target agrees with its guesses. */
export interface Draft {
  name: string
  /** ms for the draft to propose one token on the client. */
  msPerToken: number
  /** Acceptance rate α: the chance the target keeps each drafted token (taken as independent). */
  acceptance: number
  source: string
}

/** TinyLlama 1.1B shares Llama 2's tokenizer; in int4 on a laptop's unified memory. α is an assumption. */
export const TINYLLAMA_DRAFT: Draft = {
  name: 'TinyLlama-1.1B int4 on the client',
  // 1.1e9 parameters × 4.5 bits = 0.62 GB read per token, at 70% of an Apple M2's 100 GB/s.
  msPerToken: ((1.1e9 * 4.5) / 8 / (100e9 * 0.7)) * 1000,
  acceptance: 0.7,
  source:
    'Zhang et al. 2024, TinyLlama (Llama 2 architecture and tokenizer, 1.1B); α = 0.7 assumed: Leviathan et al. 2023 measured α of 0.6–0.8 for their draft/target pairs'
}

/**
 * Forwarding: the client sends the token to the first node, each node hands its output to the
 * next, the last returns the logits: (hops + 1) one-way trips, (hops + 1) / 2 round trips,
 * instead of a round trip per hop; and the client no longer re-sends each hop's input row.
 */
export function forwarded(s: ChainScenario, r: ChainResult): Projection {
  const saved = s.nodes * s.rttMs - ((s.nodes + 1) / 2) * s.rttMs + ((s.nodes - 1) * s.model.hidden * 4) / uplink(s.uplinkMbps).bytesPerMs
  const msPerToken = r.msPerToken - saved
  return { msPerToken, tokensPerSecond: 1000 / msPerToken }
}

/** Tokens a pass yields on average with γ drafted: the accepted prefix plus the target's own (Leviathan et al. 2023, eq. 1). */
export const tokensPerPass = (alpha: number, gamma: number): number => (alpha === 1 ? gamma + 1 : (1 - alpha ** (gamma + 1)) / (1 - alpha))

/**
 * Speculative decoding over `base` (client-mediated or forwarded): a pass carries γ + 1 rows
 * through every hop (each further row costs its batched compute and its bytes), after γ draft
 * steps on the client, and yields tokensPerPass(α, γ) tokens. γ is the best from 1 to 8 for α
 * (what an adaptive γ settles on).
 */
export function speculative(s: ChainScenario, r: ChainResult, base: Projection, draft: Draft): Projection & { gamma: number; tokensPerPass: number } {
  const rowMs = s.model.layers * r.msPerRowLayer + r.expected.wireMs // a further row: its batched compute and its bytes (the logits too: every row is checked)
  let best = { msPerToken: Infinity, tokensPerSecond: 0, gamma: 0, tokensPerPass: 1 }
  for (let gamma = 1; gamma <= 8; gamma++) {
    const pass = base.msPerToken + gamma * (rowMs + draft.msPerToken)
    const n = tokensPerPass(draft.acceptance, gamma)
    if (n / pass > best.tokensPerSecond / 1000) best = { msPerToken: pass / n, tokensPerSecond: (1000 * n) / pass, gamma, tokensPerPass: n }
  }
  return best
}
