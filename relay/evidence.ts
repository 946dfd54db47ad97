/**
 * The checker the relay's ledger runs before any slash: the receipt checks of
 * shared/verify/evidence.ts, with witnesses (and a dispute's winner and referee) admitted only
 * when the ledger knows them as staked, non-blacklisted peers (standingRefusal in
 * shared/ledger/rules.ts). Fresh keys cost nothing to mint, so their receipts convict no one.
 *
 * The rule is applied when evidence is reported, against the standings of that moment; the audit
 * chain's verification re-hashes the log and never re-runs the checker, so evidence already logged
 * stays verifiable whatever becomes of its witnesses later.
 */
import { standingRefusal } from '../shared/ledger/rules.js'
import type { EvidenceChecker, PeerStanding } from '../shared/ledger/types.js'
import { receiptEvidenceChecker } from '../shared/verify/evidence.js'
import type { ZkModelEntry } from '../shared/zk/types.js'

export interface LedgerCheckerOptions {
  /** A peer's standing in the ledger that will act on the verdict (bound late: the ledger takes the checker). */
  standing: (peer: string) => Promise<PeerStanding>
  /** The ZK models' published entries, for 'proof' evidence. */
  zkModels?: (name: string) => ZkModelEntry | undefined
}

export function ledgerEvidenceChecker(o: LedgerCheckerOptions): EvidenceChecker {
  return receiptEvidenceChecker({ mayWitness: async (p) => standingRefusal(await o.standing(p)) ?? true, zkModels: o.zkModels })
}
