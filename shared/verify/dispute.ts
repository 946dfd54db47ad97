/**
 * The end of a dispute: one block re-executed by a referee, and the evidence that lets any ledger
 * check who was wrong without re-running anything.
 *
 * Bisection over the per-layer commitments finds block L: the first whose committed fingerprints
 * differ while both parties agree on what entered it (block L-1's output, or the hop's own input
 * when L is its first block). A referee re-executes the hop from its own input, every block up to
 * and through L (`from` = the hop's first block), and signs a PartStatement. The evidence is four
 * records, all self-authenticating:
 *
 *   [the loser's hop receipt, the winner's hop receipt, the referee's part statement,
 *    the openings: each party's committed fingerprints of blocks L-1 and L with Merkle proofs
 *    against the `trace` root its receipt signed]
 *
 * L = the hop's end stands for its head (final norm + LM head on the model's last hop, nothing on
 * another): there the parties' "block L output" is the hop output their receipts state.
 *
 * What binds the referee's input is the hop's input chain, which both receipts signed: the
 * referee computed block L-1's output itself. (A fingerprint of block L-1 binds only its top-k
 * values per row: a challenger that handed over a state matching them while differing elsewhere
 * could steer a re-execution of L alone, so a statement not started at the hop's input is refused.)
 * The referee's own block L-1 fingerprint must still agree with what the parties committed to.
 */
import { decode, encode } from 'cborg'
import { bytesToHex } from '../hash.js'
import type { Evidence } from '../ledger/types.js'
import { compareFingerprints, decodeFingerprint, tailFingerprint, type Fingerprint } from './fingerprint.js'
import { layerLeaf, verifyMerkleProof } from './merkle.js'
import { openReceipt, openSigned, type ReceiptBody, type Signer } from './receipt.js'
import { TesseraError } from '../errors.js'

/** A referee's signed re-execution of one block of a hop (or its head), from position 0. */
export interface PartBody {
  kind: 'part'
  peer: string
  root: string
  /** The disputed hop. */
  hop: [number, number]
  /** The block re-executed; hop[1] is the head. */
  layer: number
  /** The block whose input `input` is (the referee ran every block from it up to `layer`); absent: `layer` itself. */
  from?: number
  /** The chain over the input rows (chainRows), comparable with a hop receipt's `input` when layer = hop[0]. */
  input: Uint8Array
  /** Fingerprint of the input rows (hidden states entering the block). */
  inputFp?: Uint8Array
  /** Fingerprint of the block's output over every row. */
  output: Uint8Array
}

export async function signPart(body: Omit<PartBody, 'kind'>, sign: Signer): Promise<Uint8Array> {
  const b = encode({ ...body, kind: 'part' })
  return encode({ body: b, signature: await sign(b) })
}

/** Checks the signature and shape of a part statement; throws ProtocolError('BAD_RECEIPT'). */
export async function openPart(bytes: Uint8Array | undefined): Promise<PartBody> {
  return await openSigned<PartBody>(
    bytes,
    (b) =>
      b.kind === 'part' &&
      typeof b.root === 'string' &&
      Array.isArray(b.hop) &&
      Number.isInteger(b.layer) &&
      (b.from === undefined || Number.isInteger(b.from)) &&
      b.input instanceof Uint8Array &&
      b.output instanceof Uint8Array &&
      (b.inputFp === undefined || b.inputFp instanceof Uint8Array)
  )
}

/** One committed per-layer fingerprint, as revealed in a dispute. */
export interface Opening {
  peer: string
  layer: number
  fp: Uint8Array
  proof: Uint8Array[]
}

export function encodeOpenings(layer: number, openings: Opening[]): Uint8Array {
  return encode({ layer, openings })
}

export function disputeEvidence(
  loser: { peer: string; receipt: Uint8Array },
  winner: { receipt: Uint8Array },
  part: Uint8Array,
  { layer, openings, detail }: { layer: number; openings: Opening[]; detail: Record<string, unknown> }
): Evidence {
  return { kind: 'dispute', accused: loser.peer, receipts: [loser.receipt, winner.receipt, part, encodeOpenings(layer, openings)], detail }
}

/**
 * Whether a peer may testify: true, or false / a string saying why not (false reads "blacklisted",
 * what the older callers' predicate meant). The relay passes the ledger's standing rule
 * (relay/evidence.ts). It is asked when the evidence is reported, never when the log is re-verified.
 */
export type MayWitness = (peer: string) => Promise<boolean | string>

/** Why the first of `peers` that may not testify may not, or undefined when all may. */
export async function witnessRefusal(mayWitness: MayWitness | undefined, peers: string[]): Promise<string | undefined> {
  if (mayWitness === undefined) return undefined
  for (const p of peers) {
    const may = await mayWitness(p)
    if (may !== true) return `${p} may not witness (${may === false ? 'blacklisted' : may})`
  }
  return undefined
}

const agree = (a: Fingerprint, b: Fingerprint): boolean => compareFingerprints(a, b).verdict === 'match'

/** Re-checks dispute evidence (see the top of this file): valid when the referee and the winner agree on block L and the accused does not. */
export async function checkDisputeEvidence(e: Evidence, mayWitness?: MayWitness): Promise<{ valid: boolean; reason: string }> {
  const no = (reason: string): { valid: false; reason: string } => ({ valid: false, reason })
  if (e.receipts.length !== 4) return no(`dispute evidence is two hop receipts, a part statement and the openings; got ${e.receipts.length} records`)
  let loser: ReceiptBody, winner: ReceiptBody, part: PartBody
  let layer: number, openings: Opening[]
  try {
    ;[loser, winner] = await Promise.all([openReceipt(e.receipts[0]), openReceipt(e.receipts[1])])
    part = await openPart(e.receipts[2])
    const o = decode(e.receipts[3]) as { layer?: unknown; openings?: unknown }
    if (!Number.isInteger(o.layer) || !Array.isArray(o.openings)) throw new TesseraError('MALFORMED', 'malformed openings')
    layer = o.layer as number
    openings = o.openings as Opening[]
  } catch (err) {
    return no((err as Error).message)
  }
  if (loser.peer !== e.accused) return no(`the first receipt is ${loser.peer}'s, not the accused's`)
  if (new Set([loser.peer, winner.peer, part.peer]).size !== 3) return no('the accused, the winner and the referee are not distinct peers')
  const [a, b] = loser.layers
  const sameHop = (x: [number, number]): boolean => x[0] === a && x[1] === b
  if ((loser as { kind?: unknown }).kind !== undefined || (winner as { kind?: unknown }).kind !== undefined)
    return no('the first two records must be hop receipts')
  if (winner.root !== loser.root || part.root !== loser.root || !sameHop(winner.layers) || !sameHop(part.hop))
    return no('the records are about different models or hops')
  if (part.layer !== layer || layer < a || layer > b) return no(`the referee re-executed block ${part.layer}, the dispute is about ${layer} of [${a},${b})`)
  if (loser.trace === undefined || winner.trace === undefined) return no('a receipt carries no per-layer commitment')
  let fl: Fingerprint, fw: Fingerprint, fr: Fingerprint
  try {
    ;[fl, fw, fr] = [decodeFingerprint(loser.output), decodeFingerprint(winner.output), decodeFingerprint(part.output)]
  } catch (err) {
    return no((err as Error).message)
  }
  const end = loser.start + fl.positions
  if (winner.start + fw.positions !== end || bytesToHex(winner.input) !== bytesToHex(loser.input))
    return no('the hop receipts do not cover the same input rows')
  if (fr.positions !== end) return no(`the referee re-executed ${fr.positions} rows, the receipts end at row ${end}`)
  const rows = Math.min(fl.positions, fw.positions)
  const full = [loser, winner].find((r) => r.start === 0)
  if (full === undefined) return no("neither receipt covers the whole history (a challenger's replay starts at row 0)")

  // A party's committed fingerprint of `l`: its output for the head, else an opening proven against its trace root.
  const committed = (r: ReceiptBody, l: number): Fingerprint | undefined => {
    if (l === b) return decodeFingerprint(r.output)
    const o = openings.find((x) => x.peer === r.peer && x.layer === l)
    if (o === undefined || !(o.fp instanceof Uint8Array) || !Array.isArray(o.proof) || !verifyMerkleProof(layerLeaf(l, o.fp), l - a, o.proof, r.trace!))
      return undefined
    return decodeFingerprint(o.fp)
  }
  try {
    // Started anywhere but the hop's input, the referee would have run on a state a party handed it.
    if ((part.from ?? part.layer) !== a) return no(`the referee did not re-execute from the hop's input (block ${a})`)
    if (bytesToHex(part.input) !== bytesToHex(loser.input)) return no("the referee was not fed the hop's input rows")
    if (layer > a) {
      const [pl, pw, pf] = [committed(loser, layer - 1), committed(winner, layer - 1), committed(full, layer - 1)]
      if (pl === undefined || pw === undefined || pf === undefined)
        return no(`an opening of block ${layer - 1} is missing or does not prove against its receipt`)
      if (!agree(tailFingerprint(pl, rows), tailFingerprint(pw, rows)))
        return no(`the parties already disagree on block ${layer - 1}: ${layer} is not where they part`)
      if (part.inputFp === undefined) return no('the part statement does not say what entered the block')
      const fin = decodeFingerprint(part.inputFp)
      if (fin.positions !== end || !agree(fin, pf) || !agree(tailFingerprint(fin, rows), tailFingerprint(pl, rows)))
        return no(`the referee's input is not the block ${layer - 1} output both parties committed to`)
    }
    const [cl, cw] = [committed(loser, layer), committed(winner, layer)]
    if (cl === undefined || cw === undefined) return no(`an opening of block ${layer} is missing or does not prove against its receipt`)
    const ref = tailFingerprint(fr, rows)
    if (!agree(tailFingerprint(cw, rows), ref)) return no(`the referee does not agree with ${winner.peer} on block ${layer}`)
    const against = compareFingerprints(tailFingerprint(cl, rows), ref)
    if (against.verdict === 'match') return no(`the accused agrees with the referee on block ${layer}`)
    // The winner and the referee must have standing (staked, not blacklisted): fresh keys cannot convict.
    const refused = await witnessRefusal(mayWitness, [winner.peer, part.peer])
    if (refused !== undefined) return no(refused)
    const what = layer === b ? `the head of [${a},${b})` : `block ${layer} of [${a},${b})`
    return {
      valid: true,
      reason:
        `referee and ${winner.peer.slice(-8)} agree on ${what} at rows [${end - rows},${end})` +
        ` and the accused does not (overlap ${against.minOverlap.toFixed(2)}, rel. error ${against.maxRelErr.toPrecision(2)})`
    }
  } catch (err) {
    return no((err as Error).message)
  }
}
