/**
 * Receipts: a node's signed statement about one hop — this session, this step, this model
 * root and layer range, this input history (a hash chained over every row the session was fed),
 * this output (its fingerprint), by me. The client checks every receipt on arrival; a result
 * whose receipt is missing, forged, for another input, or not about the output it came with is
 * rejected and never used.
 *
 * The input hash is chained per row, not per message, so two peers that were fed the same rows
 * in different chunks (one step by step, a referee in one replayed prefill) sign the same value:
 * receipts from different peers about the same positions can be compared as evidence.
 */
import { decode, encode } from 'cborg'
import { peerIdFromString } from '@libp2p/peer-id'
import { ProtocolError } from '../errors.js'
import { bytesToHex, sha256 } from '../hash.js'
import { encodeFingerprint, fingerprint, type Fingerprint } from './fingerprint.js'
import { verifySignature } from './signature.js'

export interface ReceiptBody {
  peer: string
  session: string
  step: number
  root: string
  layers: [number, number]
  /** Position of the step's first row. */
  start: number
  /** The session's input chain after this step (see chainRows): what everything so far was computed from. */
  input: Uint8Array
  /** encodeFingerprint() of the output. */
  output: Uint8Array
  /** Merkle root over each layer's output fingerprint (verify/merkle.ts), for disputes. */
  trace?: Uint8Array
  /** The last hop, when asked (open.commit): Poseidon commitment to the last row's logits (zk/argmax.ts), for a sampling proof. */
  logits?: string
}

export interface Receipt {
  body: Uint8Array
  signature: Uint8Array
}

export type Signer = (bytes: Uint8Array) => Promise<Uint8Array>

/** The chain before any input. */
export const EMPTY_CHAIN = new Uint8Array(32)

/**
 * Extends an input chain by `rows` equal rows of `bytes` (token ids as int32, or hidden states
 * as fp32): c ← sha256(c ‖ row) per row.
 */
export function chainRows(prev: Uint8Array, bytes: Uint8Array, rows: number): Uint8Array {
  const states = chainStates(prev, bytes, rows)
  return states[states.length - 1]
}

/** The chain after each of the `rows` rows, in order: where a step that rewinds to a position picks it up. */
export function chainStates(prev: Uint8Array, bytes: Uint8Array, rows: number): Uint8Array[] {
  if (rows <= 0 || bytes.byteLength % rows !== 0) throw new ProtocolError('MALFORMED', `${bytes.byteLength} input bytes do not split into ${rows} rows`)
  const size = bytes.byteLength / rows
  const out: Uint8Array[] = []
  let c = prev
  for (let r = 0; r < rows; r++) {
    c = sha256(c, bytes.subarray(r * size, (r + 1) * size))
    out.push(c)
  }
  return out
}

export async function signReceipt(body: ReceiptBody, sign: Signer): Promise<Uint8Array> {
  const b = encode(body)
  return encode({ body: b, signature: await sign(b) })
}

/** What the client sent and received: the receipt must say exactly this. */
export interface Expected extends Omit<ReceiptBody, 'output'> {
  /** The output the receipt came with, [seq, width]. */
  output: { data: Float32Array; seq: number; width: number }
  /**
   * The input reached the node from another node (a handoff), not from the client: a receipt for
   * another input is then BAD_HANDOFF, which blames nobody (either of the two may have lied).
   */
  handedOff?: boolean
}

/**
 * Decodes a signed record ({ body, signature }, body naming its `peer`) and checks the signature
 * against that peer's key and the body's shape; throws ProtocolError('BAD_RECEIPT').
 */
export async function openSigned<T extends { peer: string }>(bytes: Uint8Array | undefined, shaped: (b: Record<string, unknown>) => boolean): Promise<T> {
  const bad = (why: string): never => {
    throw new ProtocolError('BAD_RECEIPT', `receipt rejected: ${why}`)
  }
  if (!(bytes instanceof Uint8Array)) return bad('the result carries no receipt')
  let r: Receipt
  let body: Record<string, unknown>
  try {
    r = decode(bytes)
    body = decode(r.body)
  } catch {
    return bad('not valid CBOR')
  }
  if (!(r.signature instanceof Uint8Array) || typeof body?.peer !== 'string' || !shaped(body)) return bad('malformed')
  let key
  try {
    key = peerIdFromString(body.peer as string).publicKey
  } catch {
    return bad(`${body.peer as string} is not a peer id`)
  }
  if (key === undefined || !(await verifySignature(key, r.body, r.signature))) bad("the signature does not verify with the peer's key")
  return body as unknown as T
}

/** Decodes a hop receipt and checks its signature against the key of the peer it names. */
export async function openReceipt(bytes: Uint8Array | undefined): Promise<ReceiptBody> {
  return await openSigned<ReceiptBody>(bytes, (b) => b.output instanceof Uint8Array)
}

/**
 * Checks a receipt against what the client sent and received; returns the body and the output's
 * fingerprint (computed here to compare; callers reuse it), or throws ProtocolError('BAD_RECEIPT').
 */
export async function verifyReceipt(bytes: Uint8Array | undefined, e: Expected): Promise<ReceiptBody & { fingerprint: Fingerprint }> {
  const bad = (why: string): never => {
    throw new ProtocolError('BAD_RECEIPT', `receipt rejected: ${why}`)
  }
  const body = await openReceipt(bytes)
  if (body.peer !== e.peer) bad(`signed for ${body.peer}, but ${e.peer} served the hop`)
  if (body.session !== e.session || body.step !== e.step) bad(`it is for session ${body.session} step ${body.step}, not ${e.session} step ${e.step}`)
  if (body.root !== e.root || body.layers?.[0] !== e.layers[0] || body.layers?.[1] !== e.layers[1]) bad('it names another model or other layers')
  if (body.start !== e.start || !(body.input instanceof Uint8Array) || bytesToHex(body.input) !== bytesToHex(e.input)) {
    if (e.handedOff === true) throw new ProtocolError('BAD_HANDOFF', 'receipt for other rows than the upstream hop sent the client')
    bad('it is for another input')
  }
  const fp = fingerprint(e.output.data, e.output.seq, e.output.width)
  if (!(body.output instanceof Uint8Array) || bytesToHex(body.output) !== bytesToHex(encodeFingerprint(fp)))
    bad('its fingerprint is not of the output it came with')
  return { ...body, fingerprint: fp }
}
