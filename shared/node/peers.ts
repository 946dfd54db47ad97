/** The rest of the network as one peer sees it, for block selection and rebalancing. */
import type { Libp2p } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import type { Capability } from '../protocol/capability.js'
import type { Manifest } from '../manifest.js'
import { TesseraError } from '../errors.js'
import { relayDirectory } from '../route/directory.js'

/**
 * The live records of the other peers serving `m`'s model, read fresh from the first of `relays`
 * that answers (federated relays list the same records; signatures checked). Throws UNREACHABLE
 * if none does.
 */
export async function otherPeers(node: Libp2p, relays: string | string[], m: Manifest): Promise<Capability[]> {
  let peers: Capability[]
  try {
    peers = await relayDirectory(node, relays, 0).list()
  } catch (err) {
    throw new TesseraError('UNREACHABLE', `reading the relay's peer list failed: ${(err as Error).message}; check that the relay is running`)
  }
  const self = node.peerId.toString()
  return peers.filter((p) => p.root === m.root && p.peer !== self)
}

/**
 * The relay's peer id: the last /p2p/ of its multiaddr (what `tessera relay` prints and tabs get
 * from /api/relay), else that of the connection the node dialled to that address (to announce). Its client carries every HTTP user's sessions, so the node allows it more of them.
 */
export function relayPeerId(node: Libp2p, relay: string): string | undefined {
  try {
    const named = multiaddr(relay)
      .getComponents()
      .filter((c) => c.name === 'p2p')
      .at(-1)?.value
    if (named !== undefined) return named
  } catch {
    return undefined // not a multiaddr: announce() says so
  }
  // One we dialled (an inbound one could come from anyone), to exactly that address.
  const to = (a: string): boolean => a === relay || a.startsWith(`${relay}/`)
  return node
    .getConnections()
    .find((c) => c.direction === 'outbound' && to(c.remoteAddr.toString()))
    ?.remotePeer.toString()
}
