/**
 * `spot`: one peer per hop; each step of each hop is also run, with probability p, by a checker
 * drawn afresh for that step (fed the slot's history in one prefill, so checking costs prefill,
 * not decode; session.ts). A step that was sampled is put to a vote like a redundant one.
 */
import { vote } from './vote.js'
import { unchecked, type Verifier } from './verifier.js'

export function spotVerifier(p: number, random: () => number): Verifier {
  return {
    mode: 'spot',
    lanes: 1,
    recut: false,
    checker: true,
    sample: () => random() < p,
    // One answer: the step was not sampled, or (only where the request allowed a fallback: session.ts) its checker could not run.
    decide: async (answers, ctx) => (answers.length < 2 ? unchecked(answers[0]) : await vote(answers, ctx, 'spot'))
  }
}
