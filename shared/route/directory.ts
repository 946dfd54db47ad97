/** A Dialer and a peer directory over a libp2p node; the same code in Node and in a tab. */
import type { Libp2p } from '@libp2p/interface'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { lpStream } from '@libp2p/utils'
import { decode, encode } from 'cborg'
import { PEERS_PROTOCOL, verifyCapability, type Capability, type SignedCapability } from '../protocol/capability.js'
import { MAX_MESSAGE_BYTES, lpLimits } from '../protocol/limits.js'
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
  /**
   * Tells the directory's keeper that dials to `peer` failed (best effort): the relay drops a record
   * that several distinct clients could not reach. A client calls it where a dial or an open fails.
   */
  unreachable?(peer: string): void
}

/** The relay's view of a record beside the signed one (relay/registry.ts RecordHint). */
export interface Hint {
  peer: string
  expires: number
  msPerLayer: number
  /** The peer has said it is moving for longer than a move takes: count it where it is. */
  movingStale?: boolean
}

/**
 * A record as routing should see it: never faster than the relay measured it nor than it claims,
 * never listed past the relay's expiry, not counted where it says it is moving once that claim is
 * older than a move takes. The relay lists records anyway; its hints only make it stricter.
 */
export function withHint(c: Capability, h: Hint | undefined): Capability {
  const num = (x: unknown): x is number => typeof x === 'number' && !Number.isNaN(x)
  if (h === undefined || !num(h.msPerLayer) || !num(h.expires)) return c
  const out = { ...c, msPerLayer: Math.max(c.msPerLayer, h.msPerLayer), expires: Math.min(c.expires, h.expires) }
  // Only ever removes a claim: a relay cannot make a peer look as if it were moving.
  if (h.movingStale === true) delete out.moving
  return out
}

/**
 * Reads the relay's registry over /tessera/peers/1.0.0 and checks every record's signature
 * itself (the relay is not trusted to vouch for peers); the relay's measured speeds and capped
 * expiries (its hints) only make a record slower or shorter-lived. Cached for `cacheMs`.
 *
 * Several relays (a federation lists the same records): one is read until it fails, then the
 * next, so a client keeps its directory while any relay is up.
 */
export function relayDirectory(
  node: Libp2p,
  relay: string | Multiaddr | Array<string | Multiaddr>,
  cacheMs = CLIENT_DEFAULTS.directoryCacheMs
): PeerDirectory & { unreachable(peer: string): Promise<void> } {
  const addrs = [relay].flat().map((r) => (typeof r === 'string' ? multiaddr(r) : r))
  let at = 0 // the relay that answered last
  let cached: { at: number; peers: Promise<Capability[]> } | undefined
  const fetchFrom = async (addr: Multiaddr): Promise<Capability[]> => {
    const stream = await node.dialProtocol(addr, PEERS_PROTOCOL, {
      signal: AbortSignal.timeout(CLIENT_DEFAULTS.directoryTimeoutMs),
      runOnLimitedConnection: true
    })
    const lp = lpStream(stream, lpLimits(MAX_MESSAGE_BYTES))
    await lp.write(encode({ t: 'list' }))
    const reply = decode((await lp.read({ signal: AbortSignal.timeout(CLIENT_DEFAULTS.directoryTimeoutMs) })).subarray()) as {
      records: SignedCapability[]
      hints?: Hint[]
    }
    await stream.close().catch(() => {})
    const hints = new Map((Array.isArray(reply.hints) ? reply.hints : []).filter((h) => typeof h?.peer === 'string').map((h) => [h.peer, h]))
    const out: Capability[] = []
    const now = Date.now()
    for (const r of reply.records ?? []) {
      try {
        const v = await verifyCapability(r)
        const c = withHint(v, hints.get(v.peer))
        if (c.withdrawn !== true && c.expires >= now) out.push(c)
      } catch (err) {
        log.warn(`dropping a peer record: ${(err as Error).message}`)
      }
    }
    return out
  }
  const fetchPeers = async (): Promise<Capability[]> => {
    let first: unknown
    for (let i = 0; i < addrs.length; i++) {
      const k = (at + i) % addrs.length
      try {
        const peers = await fetchFrom(addrs[k])
        if (k !== at) log.info(`reading peers from relay ${addrs[k].toString()} (${addrs[at].toString()} did not answer)`)
        at = k
        return peers
      } catch (err) {
        first ??= err
      }
    }
    throw first
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
    },
    /** Resolves once the relay has the report, or it could not be sent (best effort: never throws). */
    async unreachable(peer) {
      await (async () => {
        const stream = await node.dialProtocol(addrs[at], PEERS_PROTOCOL, {
          signal: AbortSignal.timeout(CLIENT_DEFAULTS.directoryTimeoutMs),
          runOnLimitedConnection: true
        })
        const lp = lpStream(stream, lpLimits(MAX_MESSAGE_BYTES))
        await lp.write(encode({ t: 'unreachable', peer }))
        await lp.read({ signal: AbortSignal.timeout(CLIENT_DEFAULTS.directoryTimeoutMs) })
        await stream.close().catch(() => {})
        cached = undefined
      })().catch((err: Error) => {
        log.debug(`could not report ${peer} unreachable: ${err.message}`)
      })
    }
  }
}
