/**
 * `redundant`: k peers run every step of every hop in parallel; their outputs are put to a vote.
 * With probability `audit` a peer outside the k lanes also runs the step (like spot's checker), so
 * k colluding lanes cannot count on agreeing unseen.
 */
import { vote } from './vote.js'
import type { Verifier } from './verifier.js'

export function redundantVerifier(k: number, audit = 0, random: () => number = Math.random): Verifier {
  return {
    mode: 'redundant',
    lanes: k,
    recut: false,
    sample: () => audit > 0 && random() < audit,
    decide: async (answers, ctx) => await vote(answers, ctx, 'redundant')
  }
}
