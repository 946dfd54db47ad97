/** `none`: one peer per hop, trusted as it is (its receipt is still checked on arrival). */
import type { Verifier } from './verifier.js'
import { unchecked } from './verifier.js'

export function noneVerifier(): Verifier {
  return { mode: 'none', lanes: 1, recut: true, sample: () => false, decide: async (answers) => unchecked(answers[0]) }
}
