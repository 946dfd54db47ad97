/** `redundant`: k peers run every step of every hop in parallel; their outputs are put to a vote. */
import { vote } from './vote.js'
import type { Verifier } from './verifier.js'

export function redundantVerifier(k: number): Verifier {
  return { mode: 'redundant', lanes: k, recut: false, sample: () => false, decide: async (answers, ctx) => await vote(answers, ctx, 'redundant') }
}
