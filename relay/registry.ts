/**
 * The relay's directory of capability records. Nodes announce over /tessera/announce/1.0.0;
 * clients read over /tessera/peers/1.0.0 and check the signatures themselves. A record is
 * accepted only from the peer it names, and dropped when it expires.
 */
import { lpStream } from '@libp2p/utils'
import type { Connection, Libp2p, Stream } from '@libp2p/interface'
import { decode, encode } from 'cborg'
import { ANNOUNCE_PROTOCOL, PEERS_PROTOCOL, verifyCapability, type Capability, type SignedCapability } from '../shared/protocol/capability.js'
import { MAX_MESSAGE_BYTES, MAX_RECORD_BYTES } from '../shared/protocol/limits.js'
import type { PeerDirectory } from '../shared/route/directory.js'
import { ProtocolError } from '../shared/errors.js'
import { logger } from '../shared/log.js'
import { REGISTRY_DEFAULTS } from './config.js'

const log = logger('tessera:relay:registry')

export interface Registry extends PeerDirectory {
  accept(signed: SignedCapability, from?: string): Promise<Capability>
  /** A live record even if the peer is excluded from listings (a dispute must still reach a blacklisted accused). */
  find(peer: string): Capability | undefined
  remove(peer: string): void
  /** Live records as the peers signed them, for clients that check for themselves. */
  signedRecords(): SignedCapability[]
}

export interface RegistryOptions {
  now?: () => number
  /** Peers to leave out of every listing (the ledger's blacklist): routing never sees them. */
  excluded?: (peer: string) => boolean
  /** Called when a peer announces for the first time (the relay stakes it). */
  onJoin?: (cap: Capability) => void
}

export function createRegistry(o: RegistryOptions = {}): Registry {
  const now = o.now ?? (() => Date.now())
  const records = new Map<string, { cap: Capability; signed: SignedCapability }>()
  const live = (): Array<{ cap: Capability; signed: SignedCapability }> => {
    const t = now()
    for (const [k, r] of records) if (r.cap.expires < t) records.delete(k)
    return [...records.values()].filter((r) => o.excluded?.(r.cap.peer) !== true)
  }
  return {
    async accept(signed, from) {
      const cap = await verifyCapability(signed, now())
      // A valid signature by another peer: a record is announced by the peer it names, or not at all.
      if (from !== undefined && cap.peer !== from) throw new ProtocolError('BAD_SIGNATURE', `record names ${cap.peer} but was sent by ${from}`)
      if (cap.withdrawn === true) {
        if (records.delete(cap.peer)) log.info(`peer ${cap.peer.slice(-8)} left`)
        return cap
      }
      const known = records.has(cap.peer)
      records.set(cap.peer, { cap, signed })
      if (!known) {
        log.info(`peer ${cap.peer.slice(-8)} serves ${cap.model} layers [${cap.layers.join(',')}) on ${cap.device}`)
        o.onJoin?.(cap)
      }
      return cap
    },
    remove(peer) {
      records.delete(peer)
    },
    find(peer) {
      const r = records.get(peer)
      return r !== undefined && r.cap.expires >= now() ? r.cap : undefined
    },
    async list() {
      return live().map((r) => r.cap)
    },
    signedRecords: () => live().map((r) => r.signed)
  }
}

/** Serves the registry's two protocols on the relay's libp2p node. */
export async function handleRegistry(node: Libp2p, registry: Registry): Promise<void> {
  // The same limits for both protocols; limited (relayed) connections may announce and list too.
  const streams = { runOnLimitedConnection: true, maxInboundStreams: REGISTRY_DEFAULTS.maxInboundStreams }
  // A peer reachable only through this relay (a tab) is gone when its connection to us closes.
  node.addEventListener('peer:disconnect', (evt) => {
    const peer = evt.detail.toString()
    void registry.list().then((caps) => {
      const cap = caps.find((c) => c.peer === peer)
      if (cap?.addrs.every((a) => a.includes('/p2p-circuit'))) {
        registry.remove(peer)
        log.info(`peer ${peer.slice(-8)} disconnected`)
      }
    })
  })

  await node.handle(
    ANNOUNCE_PROTOCOL,
    async (stream: Stream, connection: Connection) => {
      const lp = lpStream(stream, { maxDataLength: MAX_RECORD_BYTES * 2 })
      try {
        const msg = decode((await lp.read({ signal: AbortSignal.timeout(REGISTRY_DEFAULTS.readTimeoutMs) })).subarray()) as SignedCapability
        await registry.accept(msg, connection.remotePeer.toString())
        await lp.write(encode({ ok: true }))
      } catch (err) {
        log.debug(`announce refused: ${(err as Error).message}`)
        await lp.write(encode({ ok: false, error: (err as Error).message })).catch(() => {})
      }
      await stream.close().catch(() => {})
    },
    streams
  )

  await node.handle(
    PEERS_PROTOCOL,
    async (stream: Stream) => {
      const lp = lpStream(stream, { maxDataLength: MAX_MESSAGE_BYTES })
      try {
        await lp.read({ signal: AbortSignal.timeout(REGISTRY_DEFAULTS.readTimeoutMs) })
        const records = registry.signedRecords()
        await lp.write(encode({ records }))
      } catch (err) {
        log.debug(`peers request failed: ${(err as Error).message}`)
      }
      await stream.close().catch(() => {})
    },
    streams
  )
}
