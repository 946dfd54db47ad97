/**
 * Evidence of a wrong result, and the check a ledger runs before it slashes anyone. Evidence is
 * signed receipts: the accused's, and those of other peers that were fed the very same input rows
 * (equal input chains). Two rules, one per kind of checker:
 * - re-execution (verify/reexec.ts), when the evidence carries the hop's input rows and the checker
 *   can run the model (`reexecute`): the checker recomputes the hop, and only a receipt that
 *   disagrees with the recomputation convicts; witnesses need no standing, colluders frame no one;
 * - otherwise the witness rule: at least two witnesses with standing that agree with each other and
 *   disagree with the accused (for a dispute, verify/dispute.ts: the winner and the referee).
 * Dispute evidence that carries the hop's rows is re-executed as a whole hop, like any other.
 * No one's word is taken: every signature, every input chain and every comparison is redone here.
 */
import { bytesToHex } from '../hash.js'
import type { Evidence, EvidenceChecker } from '../ledger/types.js'
import { compareFingerprints, decodeFingerprint, tailFingerprint, type Fingerprint } from './fingerprint.js'
import { checkDisputeEvidence, witnessRefusal, type MayWitness } from './dispute.js'
import type { ZkModelEntry } from '../zk/types.js'
import { openReceipt, type ReceiptBody } from './receipt.js'
import { reexecJudge, type Reexecute } from './reexec.js'

/** Peers that must agree against the accused: a majority of three when k = 2 and a referee. */
export const MIN_WITNESSES = 2

export function mismatchEvidence(
  kind: 'redundant' | 'spot' | 'optimistic',
  accused: { peer: string; receipt: Uint8Array },
  witnesses: Array<{ receipt: Uint8Array }>,
  detail: Record<string, unknown>
): Evidence {
  return { kind, accused: accused.peer, receipts: [accused.receipt, ...witnesses.map((w) => w.receipt)], detail }
}

export interface CheckerOptions {
  /** Whether a witness (a referee, a dispute's winner) may testify; the relay passes the ledger's standing rule (relay/evidence.ts). */
  mayWitness?: MayWitness
  /** The ZK models' published entries, to re-verify a forged proof (kind 'proof'). */
  zkModels?: (name: string) => ZkModelEntry | undefined
  /** Runs a disputed hop here, so that evidence carrying its inputs is judged by recomputation (verify/reexec.ts). */
  reexecute?: Reexecute
  /**
   * Hops this checker re-executes (root, layers): evidence about one of them without its inputs is
   * refused instead of judged by witnesses, whom staked colluders could be. Off unless given, since
   * evidence from clients that send no inputs would then convict no one.
   */
  requireInputs?: (root: string, layers: [number, number]) => boolean
}

export function receiptEvidenceChecker(o: CheckerOptions = {}): EvidenceChecker {
  const judge = o.reexecute === undefined ? undefined : reexecJudge(o.reexecute)
  return {
    async check(e) {
      const no = (reason: string): { valid: false; reason: string } => ({ valid: false, reason })
      if (e.kind === 'dispute') {
        // A dispute's two hop receipts and the rows they were fed: where this checker can run the hop, its own
        // re-execution is the last word, so a staked referee in league with one side decides nothing.
        const recomputed = judge === undefined || e.inputs === undefined ? undefined : await judge({ ...e, receipts: e.receipts.slice(0, 2) })
        if (recomputed !== undefined) return recomputed
        if (e.inputs === undefined && o.requireInputs !== undefined) {
          const hop = await openReceipt(e.receipts[0]).catch(() => undefined)
          if (hop !== undefined && Array.isArray(hop.layers) && o.requireInputs(hop.root, hop.layers))
            return no("this relay re-executes that hop: send the rows it was fed (inputs), a referee's word convicts no one here")
        }
        return await checkDisputeEvidence(e, o.mayWitness)
      }
      // snarkjs loads only when a proof is to be judged (it is large, and most pages never need it).
      if (e.kind === 'proof') return await (await import('./proof.js')).checkProofEvidence(e.receipts, e.accused, o.zkModels ?? (() => undefined))
      if (e.kind !== 'redundant' && e.kind !== 'spot' && e.kind !== 'optimistic') return no(`${e.kind} evidence is not checked from receipts`)
      const recomputed = judge === undefined || e.inputs === undefined ? undefined : await judge(e)
      if (recomputed !== undefined) return recomputed
      if (e.receipts.length < 1 + MIN_WITNESSES) return no(`needs the accused's receipt and ${MIN_WITNESSES} witnesses, got ${e.receipts.length} receipts`)
      let bodies: ReceiptBody[]
      try {
        bodies = await Promise.all(e.receipts.map(async (r) => await openReceipt(r)))
      } catch (err) {
        return no((err as Error).message)
      }
      // A referee's part statement (verify/dispute.ts) is about one block, never a hop.
      if (bodies.some((b) => (b as { kind?: unknown }).kind !== undefined || !Array.isArray(b.layers))) return no('these are not all hop receipts')
      const [accused, ...witnesses] = bodies
      if (accused.peer !== e.accused) return no(`the first receipt is ${accused.peer}'s, not the accused's`)
      if (e.inputs === undefined && o.requireInputs?.(accused.root, accused.layers) === true)
        return no('this relay re-executes that hop: send the rows it was fed (inputs), witnesses alone convict no one here')
      if (new Set(bodies.map((b) => b.peer)).size !== bodies.length) return no('the receipts are not from distinct peers')
      const sameWork = (b: ReceiptBody): boolean =>
        b.root === accused.root && b.layers[0] === accused.layers[0] && b.layers[1] === accused.layers[1] && bytesToHex(b.input) === bytesToHex(accused.input)
      if (!witnesses.every(sameWork)) return no('the receipts are about different computations (model, layers or input rows differ)')
      let fa: Fingerprint
      let fw: Fingerprint[]
      try {
        fa = decodeFingerprint(accused.output)
        fw = witnesses.map((w) => decodeFingerprint(w.output))
      } catch (err) {
        return no((err as Error).message)
      }
      const end = accused.start + fa.positions
      if (witnesses.some((w, i) => w.start + fw[i].positions !== end || fw[i].positions < fa.positions))
        return no('the receipts do not end at the same position')
      const tails = fw.map((f) => tailFingerprint(f, fa.positions))
      for (let i = 1; i < tails.length; i++) {
        if (compareFingerprints(tails[0], tails[i]).verdict !== 'match') return no('the witnesses disagree among themselves')
      }
      const against = tails.map((t) => compareFingerprints(fa, t))
      const agreeing = against.findIndex((c) => c.verdict === 'match')
      if (agreeing >= 0) return no(`the accused agrees with ${witnesses[agreeing].peer}`)
      // Only witnesses with standing count (staked, not blacklisted: shared/ledger/rules.ts), else fresh keys frame anyone.
      const refused = await witnessRefusal(
        o.mayWitness,
        witnesses.map((w) => w.peer)
      )
      if (refused !== undefined) return no(refused)
      const worst = against.reduce((a, b) => (a.distance < b.distance ? a : b))
      return {
        valid: true,
        reason:
          `${witnesses.length} peers agree on layers [${accused.layers.join(',')})` +
          ` at positions [${accused.start},${end})` +
          ` and the accused does not (overlap ${worst.minOverlap.toFixed(2)}, rel. error ${worst.maxRelErr.toPrecision(2)})`
      }
    }
  }
}
