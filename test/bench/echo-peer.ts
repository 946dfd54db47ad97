/**
 * A bare libp2p echo peer in its own process, for the network bench's transport floor: built
 * like our peers (host/libp2p.ts: TCP on loopback, noise, yamux), it echoes each length-prefixed
 * message back on the stream. Prints its address on stdout when ready.
 */
import '../../host/shim.js'
import { lpStream } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import { createPeer } from '../../host/libp2p.js'
import { lpLimits } from '../../shared/protocol/limits.js'

export const ECHO_PROTOCOL = '/tessera-bench/echo/1.0.0'

/** Echoes every message on `stream` until it ends. */
export async function echo(stream: Stream, maxBytes: number): Promise<void> {
  const lp = lpStream(stream, lpLimits(maxBytes))
  for (;;) {
    const m = await lp.read().catch(() => undefined)
    if (m === undefined) return
    await lp.write(m.subarray())
  }
}

if (process.argv[1]?.endsWith('echo-peer.ts') === true) {
  const peer = await createPeer({ listen: ['/ip4/127.0.0.1/tcp/0'] })
  await peer.handle(ECHO_PROTOCOL, async (s: Stream) => await echo(s, 1 << 20))
  console.log(peer.getMultiaddrs()[0].toString())
  process.on('SIGTERM', () => process.exit(0))
}
