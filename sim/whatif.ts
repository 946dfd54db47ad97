/**
 * Drafts for simulated speculative decoding (sim/draft.ts runs them through the client's own
 * speculation code), with where their figures come from, and what a pass should yield.
 */

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

/** Tokens a pass yields on average with γ drafted: the accepted prefix plus the target's own (Leviathan et al. 2023, eq. 1). */
export const tokensPerPass = (alpha: number, gamma: number): number => (alpha === 1 ? gamma + 1 : (1 - alpha ** (gamma + 1)) / (1 - alpha))
