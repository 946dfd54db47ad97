/**
 * `optimistic`: one peer per hop and the tokens at once, marked pending. Every step's receipt is
 * kept, with the row it ends at, for the claim that watchers audit after the generation
 * (shared/optimistic/board.ts).
 */
import type { HopInput } from '../../runner.js'
import type { Claim, HopClaim } from '../../optimistic/claim.js'
import { unchecked, type Verifier } from './verifier.js'

export interface OptimisticVerifier extends Verifier {
  /** The claim over what each slot computed: its receipts and every row it was fed. */
  claim: (o: { id: string; root: string; window: number; slots: Array<{ layers: [number, number]; inputs: HopInput }> }) => Claim
}

export function optimisticVerifier(): OptimisticVerifier {
  // Keyed by layer range: an optimistic slot keeps its layers for the whole generation (no re-cut).
  const entries = new Map<string, HopClaim['entries']>()
  return {
    mode: 'optimistic',
    lanes: 1,
    recut: false,
    sample: () => false,
    async decide(answers, ctx) {
      const a = answers[0]
      const key = ctx.layers.join('-')
      entries.set(key, [...(entries.get(key) ?? []), { peer: a.peer, receipt: a.receipt, end: ctx.position + a.out.seq }])
      return unchecked(a, 'pending')
    },
    claim: ({ id, root, window, slots }) => ({
      id,
      root,
      window,
      hops: slots.map((s) => ({ layers: s.layers, entries: entries.get(s.layers.join('-')) ?? [], inputs: s.inputs }))
    })
  }
}
