/**
 * One request, one reply, on a fresh stream (the dispute and ZK protocols): length-prefixed
 * CBOR each way; a reply `{ t: 'error', message }` becomes a thrown Error.
 */
import { lpStream } from '@libp2p/utils'
import { decode, encode } from 'cborg'
import type { Capability } from '../protocol/capability.js'
import type { Dialer } from './remote-hop.js'
import { asErrorCode, ProtocolError, TesseraError } from '../errors.js'
import { lpLimits } from '../protocol/limits.js'

export async function request(
  dialer: Dialer,
  peer: Capability,
  protocol: string,
  message: Record<string, unknown> | Uint8Array,
  o: { ms: number; maxBytes: number }
): Promise<Record<string, unknown>> {
  const signal = AbortSignal.timeout(Math.ceil(o.ms))
  const stream = await dialer.dial(peer, protocol, signal)
  try {
    const lp = lpStream(stream, lpLimits(o.maxBytes))
    await lp.write(message instanceof Uint8Array ? message : encode(message), { signal })
    const m = decode((await lp.read({ signal })).subarray()) as Record<string, unknown>
    if (m.t === 'error') throw new ProtocolError(asErrorCode(m.code), typeof m.message === 'string' ? m.message : 'refused')
    return m
  } finally {
    await stream.close().catch(() => stream.abort(new TesseraError('RESET', 'done')))
  }
}
