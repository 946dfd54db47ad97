/**
 * The checker the relay's ledger runs before any slash: the receipt checks of
 * shared/verify/evidence.ts, with witnesses (and a dispute's winner and referee) admitted only
 * when the ledger knows them as staked, non-blacklisted peers (standingRefusal in
 * shared/ledger/rules.ts). Fresh keys cost nothing to mint, so their receipts convict no one.
 * Where the relay can re-run the disputed hop (`reexecute`, composed by the CLI over the shards it
 * serves) and the evidence carries the hop's inputs, the recomputation decides instead
 * (shared/verify/reexec.ts): then even staked colluders frame no one.
 *
 * The rule is applied when evidence is reported, against the standings of that moment; the audit
 * chain's verification re-hashes the log and never re-runs the checker, so evidence already logged
 * stays verifiable whatever becomes of its witnesses later.
 */
import { standingRefusal } from '../shared/ledger/rules.js'
import type { EvidenceChecker, PeerStanding } from '../shared/ledger/types.js'
import { receiptEvidenceChecker } from '../shared/verify/evidence.js'
import type { ZkModelEntry } from '../shared/zk/types.js'
import type { Reexecute } from '../shared/verify/reexec.js'

export interface LedgerCheckerOptions {
  /** A peer's standing in the ledger that will act on the verdict (bound late: the ledger takes the checker). */
  standing: (peer: string) => Promise<PeerStanding>
  /** The ZK models' published entries, for 'proof' evidence. */
  zkModels?: (name: string) => ZkModelEntry | undefined
  /** Re-runs a disputed hop over the shards the relay holds: evidence with inputs is then judged by recomputation, witnesses need no standing. */
  reexecute?: Reexecute
  /** Hops `reexecute` runs: evidence about them must carry inputs (the witness rule is not offered for them). */
  requireInputs?: (root: string, layers: [number, number]) => boolean
}

export function ledgerEvidenceChecker(o: LedgerCheckerOptions): EvidenceChecker {
  return receiptEvidenceChecker({
    mayWitness: async (p) => standingRefusal(await o.standing(p)) ?? true,
    zkModels: o.zkModels,
    reexecute: o.reexecute,
    requireInputs: o.requireInputs
  })
}
