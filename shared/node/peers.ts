/** The rest of the network as one peer sees it, for block selection and rebalancing. */
import type { Libp2p } from '@libp2p/interface'
import type { Capability } from '../protocol/capability.js'
import type { Manifest } from '../manifest.js'
import { TesseraError } from '../errors.js'
import { relayDirectory } from '../route/directory.js'

/**
 * The live records of the other peers serving `m`'s model, read fresh from the relay's registry
 * (signatures checked). Throws UNREACHABLE if the relay does not answer.
 */
export async function otherPeers(node: Libp2p, relay: string, m: Manifest): Promise<Capability[]> {
  let peers: Capability[]
  try {
    peers = await relayDirectory(node, relay, 0).list()
  } catch (err) {
    throw new TesseraError('UNREACHABLE', `reading the relay's peer list failed: ${(err as Error).message}; check that the relay is running`)
  }
  const self = node.peerId.toString()
  return peers.filter((p) => p.root === m.root && p.peer !== self)
}
