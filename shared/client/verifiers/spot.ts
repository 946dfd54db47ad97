/**
 * `spot`: one peer per hop; each step of each hop is also run, with probability p, by a checker
 * kept lazily in sync (it is fed what it missed in one prefill, so checking costs prefill, not
 * decode). A step that was sampled is put to a vote like a redundant one.
 */
import { vote } from './vote.js'
import { unchecked, type Verifier } from './verifier.js'

export function spotVerifier(p: number, random: () => number): Verifier {
  return {
    mode: 'spot',
    lanes: 1,
    recut: false,
    sample: () => random() < p,
    // A sampled step whose checker could not run (nobody else serves the layers) stays unchecked.
    decide: async (answers, ctx) => (answers.length < 2 ? unchecked(answers[0]) : await vote(answers, ctx, 'spot'))
  }
}
