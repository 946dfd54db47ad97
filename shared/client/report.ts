/**
 * What one routed session saw, gathered as it goes: failover switches, faults caught, how many
 * hop-steps were compared and how many disagreed, who was vouched for, the closest honest call,
 * and per layer range who ran and checked it. The session hands it back; the client reads it.
 */
import type { FaultReport, HopSummary, HopTrace, RouteSwitch, VerificationReport } from './types.js'

export class SessionReport {
  readonly switches: RouteSwitch[] = []
  readonly faults: FaultReport[] = []
  /** Hop-steps compared with someone else's. */
  checks = 0
  /** Of those, how many disagreed, plus receipts that did not hold up. */
  mismatches = 0
  /** Steps sent node to node, and those that went on through the client part of the way (a hop failed, a handoff disagreed, the handing lane lost). */
  readonly forwarded = { steps: 0, dropped: 0 }
  /** Peers whose output was checked and held up; the caller raises their reputation. */
  readonly vouched = new Set<string>()
  /** The closest call among agreeing peers: the honest margin to the fingerprint thresholds. */
  readonly closest = { minOverlap: 1, maxRelErr: 0 }
  private readonly summary = new Map<string, HopSummary>()

  vouch(peer: string, margin: { minOverlap: number; maxRelErr: number }): void {
    this.vouched.add(peer)
    this.closest.minOverlap = Math.min(this.closest.minOverlap, margin.minOverlap)
    this.closest.maxRelErr = Math.max(this.closest.maxRelErr, margin.maxRelErr)
  }

  /** One finished step's hop: who ran it, who checked it, its verdict. */
  hop(h: HopTrace): void {
    const key = h.layers.join('-')
    const s = this.summary.get(key) ?? {
      layers: h.layers,
      ranBy: [],
      checkedBy: [],
      verdicts: { unchecked: 0, agreed: 0, overruled: 0, pending: 0, unverified: 0 }
    }
    this.summary.set(key, s)
    if (!s.ranBy.includes(h.peer)) s.ranBy.push(h.peer)
    for (const p of h.checkedBy ?? []) if (!s.checkedBy.includes(p)) s.checkedBy.push(p)
    s.verdicts[h.verdict ?? 'unchecked']++
  }

  /** The verification part of a generation's result (the caller adds mode, k or p, and a claim). */
  verification(): Pick<VerificationReport, 'checks' | 'mismatches' | 'closest' | 'hops' | 'faults'> {
    return { checks: this.checks, mismatches: this.mismatches, closest: { ...this.closest }, hops: [...this.summary.values()], faults: this.faults }
  }
}
