/** A Dialer and a peer directory over a libp2p node; the same code in Node and in a tab. */
import type { Libp2p } from '@libp2p/interface'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { lpStream } from '@libp2p/utils'
import { decode, encode } from 'cborg'
import { PEERS_PROTOCOL, verifyCapability, type Capability, type SignedCapability } from '../protocol/capability.js'
import { MAX_MESSAGE_BYTES } from '../protocol/limits.js'
import type { Dialer } from '../client/remote-hop.js'
import { logger } from '../log.js'
import { CLIENT_DEFAULTS } from '../client/config.js'

const log = logger('tessera:client:directory')

/** Streams per connection we may open at once: every concurrent session is one stream. */
const MAX_STREAMS = 1024

export function libp2pDialer(node: Libp2p): Dialer {
  return {
    async dial(peer, protocol, signal) {
      return await node.dialProtocol(
        peer.addrs.map((a) => multiaddr(a)),
        protocol,
        { signal, runOnLimitedConnection: true, maxOutboundStreams: MAX_STREAMS }
      )
    }
  }
}

export interface PeerDirectory {
  list(): Promise<Capability[]>
}

/**
 * Reads the relay's registry over /tessera/peers/1.0.0 and checks every record's signature
 * itself (the relay is not trusted to vouch for peers). Cached for `cacheMs`.
 */
export function relayDirectory(node: Libp2p, relay: string | Multiaddr, cacheMs = CLIENT_DEFAULTS.directoryCacheMs): PeerDirectory {
  const addr = typeof relay === 'string' ? multiaddr(relay) : relay
  let cached: { at: number; peers: Promise<Capability[]> } | undefined
  const fetchPeers = async (): Promise<Capability[]> => {
    const stream = await node.dialProtocol(addr, PEERS_PROTOCOL, {
      signal: AbortSignal.timeout(CLIENT_DEFAULTS.directoryTimeoutMs),
      runOnLimitedConnection: true
    })
    const lp = lpStream(stream, { maxDataLength: MAX_MESSAGE_BYTES })
    await lp.write(encode({ t: 'list' }))
    const reply = decode((await lp.read({ signal: AbortSignal.timeout(CLIENT_DEFAULTS.directoryTimeoutMs) })).subarray()) as { records: SignedCapability[] }
    await stream.close().catch(() => {})
    const out: Capability[] = []
    for (const r of reply.records ?? []) {
      try {
        const c = await verifyCapability(r)
        if (c.withdrawn !== true) out.push(c)
      } catch (err) {
        log.warn(`dropping a peer record: ${(err as Error).message}`)
      }
    }
    return out
  }
  return {
    async list() {
      if (cached === undefined || Date.now() - cached.at > cacheMs) {
        cached = { at: Date.now(), peers: fetchPeers() }
        cached.peers.catch(() => {
          cached = undefined
        })
      }
      return await cached.peers
    }
  }
}
