/**
 * A verifier per mode: the failover core (session.ts) runs a slot's lanes for a step and hands the
 * answers here; the verifier decides which output goes on and what the step's verdict is, may ask
 * for a referee, and reports what it caught. The core knows nothing of modes beyond these fields.
 */
import type { HopOutput } from '../../runner.js'
import type { Fingerprint } from '../../verify/fingerprint.js'
import type { EvidenceInputs } from '../../ledger/types.js'
import type { LedgerLink } from '../ledger-link.js'
import type { RemoteHop } from '../remote-hop.js'
import type { SessionReport } from '../report.js'
import type { Verdict, VerificationMode } from '../types.js'

/** One peer's answer for one slot and step (its rows for this step only). */
export interface Answer {
  hop: RemoteHop
  out: HopOutput & { ms: number; nodeMs: number }
  receipt: Uint8Array
  fp: Fingerprint
  peer: string
  /** The peer's reputation: its vote's weight. */
  weight: number
}

/** What a verifier may use while it decides one slot-step. */
export interface StepContext {
  layers: [number, number]
  step: number
  /** The session's id (receipts name it) and the tokens its caches held before this step. */
  session: string
  position: number
  /** A peer outside `involved` replays the slot's history and this step; undefined if none can. */
  referee: (involved: string[]) => Promise<Answer | undefined>
  ban: (peer: string) => void
  /** Every row the slot was fed, through this step: evidence carries them so the ledger can re-execute the hop. */
  inputs: () => EvidenceInputs
  ledger: LedgerLink
  report: SessionReport
}

export interface Decision {
  /** The answer whose output goes on to the next slot. */
  used: Answer
  verdict: Verdict
  /** Everyone else who ran this step and was compared. */
  checkedBy: string[]
  /** Answers that lost a vote: the core closes their hops. */
  losers: Answer[]
  /** A referee asked for this step: it may take a lane a loser left. */
  referee?: Answer
}

export interface Verifier {
  readonly mode: VerificationMode
  /** Peers each slot keeps in step (k for redundant, else 1). */
  readonly lanes: number
  /**
   * Whether a failed peer's layers may be routed again over several peers (the slot re-cut). Only
   * where nothing compares or audits the slot's past: a replacement must otherwise serve exactly
   * the slot's layers.
   */
  readonly recut: boolean
  /** Whether the mode needs a second peer per slot to re-run sampled steps (spot): refused without one unless the request allows a fallback. */
  readonly checker?: boolean
  /** Whether this step of a slot is also run by the slot's checker, beside its lanes (spot sampling). */
  sample: () => boolean
  /** `answers[0]` is lane 0's (the primary's), then the other lanes', then the checker's if sampled. */
  decide: (answers: Answer[], ctx: StepContext) => Promise<Decision>
}

/** An answer nobody compared: what `none`, and `spot` on a step it did not sample, return. */
export const unchecked = (a: Answer, verdict: Verdict = 'unchecked'): Decision => ({ used: a, verdict, checkedBy: [], losers: [] })
