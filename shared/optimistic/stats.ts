/** What the pages show of a claim board: claims by state (final, overturned, unverified), challenges by outcome, mean time to settle, referees' work. */
import type { ClaimStatus } from './claim.js'

export interface BoardStats {
  pending: number
  final: number
  overturned: number
  /** Settled without every part verified: a hop unaudited, a challenge undecided, audits too late. */
  unverified: number
  challenges: number
  frivolous: number
  meanFinalMs: number
  /** Blocks referees re-executed, against the blocks of the hops they judged (a whole-hop replay runs them all). */
  refereeBlocks: { ran: number; of: number }
}

export function boardStats(all: ClaimStatus[]): BoardStats {
  const settled = all.filter((c) => c.settlement !== undefined)
  const finals = settled.filter((c) => c.status === 'final')
  const ch = settled.flatMap((c) => c.settlement!.challenges)
  return {
    pending: all.filter((c) => c.status === 'pending').length,
    final: finals.length,
    overturned: settled.filter((c) => c.status === 'overturned').length,
    unverified: settled.filter((c) => c.status === 'unverified').length,
    challenges: ch.length,
    frivolous: ch.filter((c) => c.outcome === 'frivolous').length,
    meanFinalMs: finals.length === 0 ? 0 : finals.reduce((s, c) => s + c.settlement!.afterMs, 0) / finals.length,
    refereeBlocks: { ran: ch.reduce((n, c) => n + (c.reexecuted?.layers ?? 0), 0), of: ch.reduce((n, c) => n + (c.reexecuted?.of ?? 0), 0) }
  }
}
