/**
 * Petals' rebalancing, simply: a peer that chose its own layers moves when the window it would
 * choose now, given the others' coverage, raises the network's least-covered layer.
 */
import type { Manifest, ShardEntry } from '../manifest.js'
import { chooseShards } from './select.js'

export interface Move {
  to: ShardEntry[]
  /** The network's least-covered layer, in peers, with us where we are and where we would go. */
  minBefore: number
  minAfter: number
}

/**
 * Where to move from `span` given `others` (each layer's coverage by the other peers), or
 * undefined to stay: staying wins unless moving strictly raises the least-covered layer.
 */
export function rebalanceMove(m: Manifest, span: [number, number], others: number[], fit: number): Move | undefined {
  const next = chooseShards(m, [], fit, others)
  const [a, b] = span
  const [c, d] = [next[0].layers[0], next[next.length - 1].layers[1]]
  if (a === c && b === d) return undefined
  const minWith = (lo: number, hi: number): number => Math.min(...others.map((v, l) => v + (l >= lo && l < hi ? 1 : 0)))
  const [minBefore, minAfter] = [minWith(a, b), minWith(c, d)]
  return minAfter > minBefore ? { to: next, minBefore, minAfter } : undefined
}
