/**
 * The vote of redundant execution: peers that ran the same hop are grouped by whether their
 * output fingerprints match; the group with the most reputation behind it wins, and a tie is
 * no decision (a referee is asked). Pure, so the client and tests share it exactly.
 */
import { compareFingerprints, type Fingerprint } from './fingerprint.js'

export interface Claim {
  peer: string
  /** Fingerprint of the hop's output for the step being judged (its rows only). */
  fp: Fingerprint
  /** The peer's reputation (0..1) from the ledger. */
  weight: number
}

export interface Tally<C extends Claim> {
  /** The winning group (empty when undecided). */
  winner: C[]
  /** Everyone outside the winning group. */
  losers: C[]
  /** Every claim matched every other. */
  unanimous: boolean
}

/** A peer the ledger never saw still counts a little: otherwise two newcomers could never outvote anyone. */
const MIN_WEIGHT = 0.05

export function tally<C extends Claim>(claims: C[]): Tally<C> {
  const groups: C[][] = []
  for (const c of claims) {
    const g = groups.find((g) => compareFingerprints(g[0].fp, c.fp).verdict === 'match')
    if (g !== undefined) g.push(c)
    else groups.push([c])
  }
  if (groups.length === 1) return { winner: groups[0], losers: [], unanimous: true }
  const weight = (g: C[]): number => g.reduce((s, c) => s + Math.max(MIN_WEIGHT, c.weight), 0)
  groups.sort((a, b) => weight(b) - weight(a) || b.length - a.length)
  // A tie (equal weight and size) decides nothing: both sides are as believable.
  if (weight(groups[0]) === weight(groups[1]) && groups[0].length === groups[1].length) return { winner: [], losers: claims, unanimous: false }
  return { winner: groups[0], losers: groups.slice(1).flat(), unanimous: false }
}
