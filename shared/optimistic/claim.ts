/**
 * An optimistic claim: a generation served by one peer per hop, posted with the receipts each hop
 * signed and every row each hop was fed, so that watchers can re-execute it. The shapes here are
 * what the board, its store and the HTTP API (claim-sink.ts) pass around.
 */
import { seqOf, type HopInput, type HopOutput } from '../runner.js'
import { TesseraError } from '../errors.js'
import { bytesToHex } from '../hash.js'
import { bytesOf } from '../protocol/infer.js'
import { chainRows, EMPTY_CHAIN, type ReceiptBody } from '../verify/receipt.js'
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
  status: 'pending' | 'final' | 'overturned'
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
