/**
 * An optimistic claim: a generation served by one peer per hop, posted with the receipts each hop
 * signed and every row each hop was fed, so that watchers can re-execute it. The shapes here are
 * what the board, its store and the HTTP API (claim-sink.ts) pass around.
 */
import { seqOf, type HopInput, type HopOutput } from '../runner.js'
import { TesseraError } from '../errors.js'
import { bytesToHex } from '../hash.js'
import { bytesOf } from '../protocol/infer.js'
import { chainRows, EMPTY_CHAIN, openReceipt, type ReceiptBody } from '../verify/receipt.js'
import { decodeFingerprint } from '../verify/fingerprint.js'
import type { ChallengeReport, Settlement } from '../client/types.js'

/** One hop of a claim: who computed which steps (each receipt's output ends at row `end`), and every row it was fed. */
export interface HopClaim {
  layers: [number, number]
  entries: Array<{ peer: string; receipt: Uint8Array; end: number }>
  inputs: HopInput
}

export interface Claim {
  id: string
  root: string
  /** ms during which the claim may be challenged. */
  window: number
  hops: HopClaim[]
}

export interface ClaimStatus {
  claim: string
  /** final: every hop audited and every challenge decided for it; unverified: some part never was (see the settlement's audits). */
  status: 'pending' | 'final' | 'overturned' | 'unverified'
  window: number
  submittedAt: number
  settlement?: Settlement
}

/** A claim as a store keeps it. */
export interface StoredClaim {
  claim: Claim
  submittedAt: number
  status: ClaimStatus['status']
  settlement?: Settlement
  webhook?: string
}

/** Where claims outlive a restart (relay/claims-sqlite.ts). */
export interface ClaimStore {
  put(claim: Claim, submittedAt: number): void
  settle(s: Settlement): void
  webhook(id: string, url: string): void
  get(id: string): StoredClaim | undefined
  /** Claims posted and never settled: a restart cut their audits short. */
  pending(): StoredClaim[]
}

/**
 * Where a client posts its optimistic claims: the relay's board in-process, or over HTTP
 * (claim-sink.ts). `correct`, when given, produces the corrected tokens of an overturned claim.
 */
export interface ClaimSink {
  submit(claim: Claim, correct?: (challenges: ChallengeReport[]) => Promise<number[]>): Promise<Settlement>
}

/**
 * Checks every receipt of a claim before it is accepted: signed by the peer it names, about the
 * claim's model and the hop's layers, ending at the row its entry says, over the inputs the claim
 * carries. A claim that fails is refused (BAD_CLAIM, 400): it is never audited, so it can frame
 * nobody and cannot settle.
 */
export async function checkClaim(claim: Claim): Promise<ReceiptBody[][]> {
  const all: ReceiptBody[][] = []
  for (const hop of claim.hops) {
    const where = `hop [${hop.layers.join(',')})`
    const bodies: ReceiptBody[] = []
    for (const [k, e] of hop.entries.entries()) {
      let b: ReceiptBody
      try {
        b = await openReceipt(e.receipt)
      } catch (err) {
        throw new TesseraError('BAD_CLAIM', `${where}: receipt ${k} is not a signed receipt: ${(err as Error).message}`)
      }
      const bad = (why: string): never => {
        throw new TesseraError('BAD_CLAIM', `${where}: receipt ${k} ${why}`)
      }
      if (b.peer !== e.peer) bad(`is signed by ${b.peer}, not by ${e.peer}`)
      if (b.root !== claim.root) bad(`is about model ${String(b.root).slice(0, 16)}…, not the claim's`)
      if (!Array.isArray(b.layers) || b.layers[0] !== hop.layers[0] || b.layers[1] !== hop.layers[1]) bad(`is about layers ${JSON.stringify(b.layers)}`)
      let positions: number
      try {
        positions = decodeFingerprint(b.output).positions
      } catch (err) {
        return bad(`has no readable output: ${(err as Error).message}`)
      }
      if (!Number.isSafeInteger(b.start) || b.start + positions !== e.end) bad(`covers rows [${b.start},${b.start + positions}), not up to ${e.end}`)
      bodies.push(b)
    }
    checkInputs(hop, bodies)
    all.push(bodies)
  }
  return all
}

/** The claim's inputs must be what the peers signed for (each receipt's input chain): a client cannot frame a peer. */
export function checkInputs(hop: HopClaim, bodies: ReceiptBody[]): void {
  let chain: Uint8Array = EMPTY_CHAIN
  let at = 0
  for (const [j, e] of hop.entries.entries()) {
    if (e.end < at) throw new TesseraError('BAD_CLAIM', `hop [${hop.layers.join(',')}): receipts out of order`)
    if (e.end > at) {
      chain = chainRows(chain, rowBytes(hop.inputs, at, e.end), e.end - at)
      at = e.end
    }
    if (bytesToHex(chain) !== bytesToHex(bodies[j].input))
      throw new TesseraError('BAD_CLAIM', `hop [${hop.layers.join(',')}): the inputs do not match ${e.peer.slice(-8)}'s receipt`)
  }
}

/** The first `n` rows of a hop's input. */
export function prefixRows(x: HopInput, n: number): HopInput {
  if (n > seqOf(x)) throw new TesseraError('BAD_CLAIM', `a receipt ends at row ${n} but the claim holds ${seqOf(x)} rows`)
  if ('tokens' in x) return { tokens: Array.from(x.tokens).slice(0, n) }
  return { hidden: x.hidden.subarray(0, n * (x.hidden.length / x.seq)), seq: n }
}

/** The bytes of rows [from, to), as the receipts' input chains hash them. */
function rowBytes(x: HopInput, from: number, to: number): Uint8Array {
  if (to > seqOf(x)) throw new TesseraError('BAD_CLAIM', `a receipt ends at row ${to} but the claim holds ${seqOf(x)} rows`)
  if ('tokens' in x) return new Uint8Array(Int32Array.from(Array.from(x.tokens).slice(from, to)).buffer)
  const w = x.hidden.length / x.seq
  return bytesOf(x.hidden.subarray(from * w, to * w))
}

export function sliceRows(out: HopOutput, from: number, to: number): HopOutput {
  return { ...out, data: out.data.subarray(from * out.width, to * out.width), seq: to - from }
}
