/**
 * Receipts: a node's signed statement about one hop — this session, this step, this model
 * root and layer range, this input (its sha256), this output (its fingerprint), by me. The
 * client checks every receipt on arrival; a result whose receipt is missing, forged, for another
 * input, or not about the output it came with is rejected and never used.
 */
import { decode, encode } from 'cborg'
import { peerIdFromString } from '@libp2p/peer-id'
import { sha256 } from '@noble/hashes/sha2.js'
import { ProtocolError } from '../errors.js'
import { bytesToHex } from '../hash.js'
import { encodeFingerprint, fingerprint } from './fingerprint.js'

export interface ReceiptBody {
  peer: string
  session: string
  step: number
  root: string
  layers: [number, number]
  /** sha256 of the step's input bytes (token ids as int32, or hidden states as fp32). */
  input: Uint8Array
  /** encodeFingerprint() of the output. */
  output: Uint8Array
}

export interface Receipt { body: Uint8Array, signature: Uint8Array }

export type Signer = (bytes: Uint8Array) => Promise<Uint8Array>

export const inputHash = (bytes: Uint8Array): Uint8Array => sha256(bytes)

export async function signReceipt (body: ReceiptBody, sign: Signer): Promise<Uint8Array> {
  const b = encode(body)
  return encode({ body: b, signature: await sign(b) })
}

/** What the client sent and received: the receipt must say exactly this. */
export interface Expected extends Omit<ReceiptBody, 'output'> {
  /** The output the receipt came with, [seq, width]. */
  output: { data: Float32Array, seq: number, width: number }
}

/** Checks a receipt against what the client sent and received; returns the body or throws ProtocolError('BAD_RECEIPT'). */
export async function verifyReceipt (bytes: Uint8Array | undefined, e: Expected): Promise<ReceiptBody> {
  const bad = (why: string): never => { throw new ProtocolError('BAD_RECEIPT', `receipt rejected: ${why}`) }
  if (!(bytes instanceof Uint8Array)) return bad('the result carries no receipt')
  let r: Receipt
  let body: ReceiptBody
  try {
    r = decode(bytes)
    body = decode(r.body)
  } catch {
    return bad('not valid CBOR')
  }
  if (!(r.signature instanceof Uint8Array) || typeof body?.peer !== 'string') return bad('malformed')
  if (body.peer !== e.peer) bad(`signed for ${body.peer}, but ${e.peer} served the hop`)
  const key = peerIdFromString(body.peer).publicKey
  if (key === undefined || !await key.verify(r.body, r.signature)) bad('the signature does not verify with the peer\'s key')
  if (body.session !== e.session || body.step !== e.step) bad(`it is for session ${body.session} step ${body.step}, not ${e.session} step ${e.step}`)
  if (body.root !== e.root || body.layers?.[0] !== e.layers[0] || body.layers?.[1] !== e.layers[1]) bad('it names another model or other layers')
  if (!(body.input instanceof Uint8Array) || bytesToHex(body.input) !== bytesToHex(e.input)) bad('it is for another input')
  const mine = encodeFingerprint(fingerprint(e.output.data, e.output.seq, e.output.width))
  if (!(body.output instanceof Uint8Array) || bytesToHex(body.output) !== bytesToHex(mine)) bad('its fingerprint is not of the output it came with')
  return body
}
