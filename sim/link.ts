/**
 * Simulated links: what a byte costs between two simulated machines. Each machine has an uplink
 * (bytes leave one after another at its bandwidth) and a one-way delay to every other (half the
 * round trip). A stream between them is a real in-memory libp2p stream pair (@libp2p/utils
 * streamPair) whose writes are delivered when the link says, in order; so the shipped protocol
 * code (framing, CBOR, receipts, time-outs) runs on both ends as it does over TCP.
 */
import { streamPair } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'

export interface Uplink {
  /** Bytes per virtual ms (100 Mbit/s = 12,500). */
  readonly bytesPerMs: number
  /** When the uplink is free again. */
  freeAt: number
}

export const uplink = (mbps: number): Uplink => ({ bytesPerMs: (mbps * 1e6) / 8 / 1000, freeAt: 0 })

/**
 * Delivers `stream`'s writes over the link: each leaves when `from`'s uplink is free (and not
 * before `notBefore()`: a result still being computed) and has sent it, and arrives `oneWayMs`
 * later, never before the write before it. A close follows the last write; an abort (a reset)
 * goes at once, as a reset overtakes data in flight.
 */
export function overLink(stream: Stream, from: Uplink, oneWayMs: number, notBefore: () => number = () => 0): void {
  const send = stream.send.bind(stream)
  const close = stream.close.bind(stream)
  let lastArrival = 0
  stream.send = (data) => {
    const now = Date.now()
    const left = Math.max(now, from.freeAt, notBefore()) + data.byteLength / from.bytesPerMs
    from.freeAt = left
    lastArrival = Math.max(lastArrival, left + oneWayMs)
    setTimeout(
      () => {
        if (stream.writeStatus !== 'writable') return // reset or closed meanwhile: the bytes are lost with it
        try {
          send(data)
        } catch {
          /* the stream ended while the bytes were in flight */
        }
      },
      Math.round(lastArrival - now)
    ) // timers tick in whole ms
    return true
  }
  stream.close = async (options) => {
    const wait = lastArrival - Date.now()
    if (wait > 0) await new Promise((r) => setTimeout(r, wait))
    await close(options)
  }
}

/** A stream pair between two machines, `rttMs` apart: [the dialer's end, the listener's end]. */
export async function linkedPair(
  protocol: string,
  dialer: Uplink,
  listener: Uplink,
  rttMs: number,
  listenerNotBefore?: () => number,
  dialerNotBefore?: () => number
): Promise<[Stream, Stream]> {
  // Delivery timing is the link's (below): the pair itself delivers at once, in whole messages, without back-pressure.
  const [out, inbound] = await streamPair({ protocol, capacity: Number.MAX_SAFE_INTEGER, ...({ chunkSize: Number.MAX_SAFE_INTEGER } as object) })
  overLink(out, dialer, rttMs / 2, dialerNotBefore)
  overLink(inbound, listener, rttMs / 2, listenerNotBefore)
  return [out, inbound]
}
