/**
 * /tessera/zk/1.0.0 — one proven inference per stream, for models small enough to prove
 * (shared/zk). Length-prefixed CBOR:
 *
 *   client → node   prove   { model, input (int8 bytes) }
 *   node → client   proved  { reply }     reply: signed { peer, model, input, output (int32 bytes), proof (256 bytes), publicSignals, ms }
 *                   error   { code, message }
 *
 * The node signs its reply, so a reply whose proof does not verify is evidence against it.
 */
import { decode, encode } from 'cborg'
import { ProtocolError } from '../errors.js'
import { openSigned, type Signer } from '../verify/receipt.js'

export const ZK_PROTOCOL = '/tessera/zk/1.0.0'

export interface ZkRequest {
  t: 'prove'
  model: string
  input: Uint8Array
}

/** What a prover signs about one proven inference. */
export interface ZkReplyBody {
  kind: 'zk'
  peer: string
  model: string
  /** The int8 input as sent. */
  input: Uint8Array
  /** The int32 outputs claimed, little-endian. */
  output: Uint8Array
  /** encodeProof() of the Groth16 proof. */
  proof: Uint8Array
  publicSignals: string[]
  /** Witness + proving time on the node. */
  ms: number
}

export function encodeZkRequest(model: string, input: Int8Array): Uint8Array {
  return encode({ t: 'prove', model, input: new Uint8Array(input.buffer, input.byteOffset, input.byteLength) })
}

export function decodeZkRequest(bytes: Uint8Array): ZkRequest {
  let m: Record<string, unknown>
  try {
    m = decode(bytes)
  } catch {
    throw new ProtocolError('MALFORMED', 'not valid CBOR')
  }
  if (m?.t !== 'prove' || typeof m.model !== 'string' || m.model.length > 64 || !(m.input instanceof Uint8Array))
    throw new ProtocolError('MALFORMED', 'expected { t: "prove", model, input (int8 bytes) }')
  return m as unknown as ZkRequest
}

export async function signZkReply(body: Omit<ZkReplyBody, 'kind'>, sign: Signer): Promise<Uint8Array> {
  const b = encode({ ...body, kind: 'zk' })
  return encode({ body: b, signature: await sign(b) })
}

/** Checks the reply's signature and shape; throws ProtocolError('BAD_RECEIPT'). */
export async function openZkReply(bytes: Uint8Array | undefined): Promise<ZkReplyBody> {
  return await openSigned<ZkReplyBody>(
    bytes,
    (b) =>
      b.kind === 'zk' &&
      typeof b.model === 'string' &&
      b.input instanceof Uint8Array &&
      b.output instanceof Uint8Array &&
      b.output.byteLength % 4 === 0 &&
      b.proof instanceof Uint8Array &&
      Array.isArray(b.publicSignals) &&
      b.publicSignals.every((s) => typeof s === 'string') &&
      typeof b.ms === 'number'
  )
}

export const int8Of = (b: Uint8Array): Int8Array => new Int8Array(b.buffer, b.byteOffset, b.byteLength)
export const int32Of = (b: Uint8Array): Int32Array => new Int32Array(b.slice().buffer)
export const bytesOfInt32 = (x: Int32Array): Uint8Array => new Uint8Array(x.buffer, x.byteOffset, x.byteLength)
