/**
 * Many relays, one network. Each relay publishes the records its own peers announce to it (and
 * their withdrawals) on one gossipsub topic, and lists the records other relays publish. A relay
 * that meets another (configured, or any peer subscribing to the topic) also reads its whole
 * registry once, so a relay that joins late, or a partition that heals, catches up at once
 * instead of at each peer's next announce.
 *
 * Gossipsub and not the Kademlia DHT: every relay needs every record within seconds (a client of
 * any relay routes over all of them), which is a broadcast to a few dozen relays, not a lookup
 * among millions of keys; a DHT would need every relay to walk the whole keyspace to list it.
 *
 * Nothing here is trusted because a relay passed it on: each record is checked against its own
 * peer's signature and expiry (relay/registry.ts), an older copy cannot undo a newer record or a
 * withdrawal, and each relay may fill only its share of the registry, so a stranger speaking
 * gossipsub cannot crowd out the configured relays' records.
 */
import type { Libp2p, PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { lpStream } from '@libp2p/utils'
import { decode, encode } from 'cborg'
import { TopicValidatorResult, type GossipSub, type Message } from '@libp2p/gossipsub'
import { PEERS_PROTOCOL, type SignedCapability } from '../shared/protocol/capability.js'
import { MAX_MESSAGE_BYTES, MAX_RECORD_BYTES, lpLimits } from '../shared/protocol/limits.js'
import { ConfigError, ProtocolError, TesseraError } from '../shared/errors.js'
import type { Claim, ClaimBoard } from '../shared/optimistic/board.js'
import { claimFromJson, claimToJson } from '../shared/optimistic/claim-sink.js'
import { logger } from '../shared/log.js'
import { FEDERATION_DEFAULTS } from './config.js'
import type { Registry } from './registry.js'

const log = logger('tessera:relay:federation')

/** One topic for every record of every model: relays list them all, clients pick. */
export const RECORDS_TOPIC = '/tessera/records/1.0.0'
/** Optimistic claims: posted to any relay, held and audited by all, so a claim outlives the relay it was posted to. */
export const CLAIMS_TOPIC = '/tessera/claims/1.0.0'

export interface Federation {
  /** Passes a record a peer announced here on to the other relays. */
  publish(signed: SignedCapability): void
  /** Passes a claim posted here on to the other relays' boards. */
  publishClaim(claim: Claim): void
  /** The other relays in the mesh now (peer ids). */
  relays(): string[]
  stop(): void
}

export interface FederationOptions {
  /** Relays to federate with (multiaddrs naming their /p2p/ id): kept connected, always sent every record. */
  peers?: string[]
  /** Records one relay may have listed here at once; configured relays' shares are never crowded out by strangers'. */
  maxFromStrangers?: number
  /** The claim board other relays' claims are posted to (its checks apply: every receipt, its capacity). */
  board?: () => Pick<ClaimBoard, 'post'> | undefined
}

/** What a gossipsub message's data must be: one signed record, nothing more. */
function recordOf(data: Uint8Array): SignedCapability {
  if (data.byteLength > MAX_RECORD_BYTES * 2) throw new ProtocolError('TOO_LARGE', `a relayed record of ${data.byteLength} bytes`)
  let s: SignedCapability
  try {
    s = decode(data) as SignedCapability
  } catch {
    throw new ProtocolError('MALFORMED', 'a relayed record is not valid CBOR')
  }
  return s
}

/** The peer a record names, unchecked (only to find what is held: the registry checks the signature). */
function peerNamed(s: SignedCapability): string {
  try {
    const peer = (decode(s.record) as { peer?: unknown }).peer
    return typeof peer === 'string' ? peer : ''
  } catch {
    return ''
  }
}

/** The libp2p node's gossipsub service, started by createPeer({ gossip: true }). */
const pubsubOf = (node: Libp2p): GossipSub => (node.services as { pubsub?: GossipSub }).pubsub ?? missing()
const missing = (): never => {
  throw new Error('the relay was started without gossipsub (createPeer({ gossip: true }))')
}

export function federate(node: Libp2p, registry: Registry, o: FederationOptions = {}): Federation {
  const pubsub = pubsubOf(node)
  const configured = new Set((o.peers ?? []).map(peerOf))
  const strangersCap = o.maxFromStrangers ?? FEDERATION_DEFAULTS.maxFromStrangers
  const self = node.peerId.toString()
  const strangers = (): number => {
    let n = 0
    for (const [via, count] of registry.relayedBy()) if (!configured.has(via)) n += count
    return n
  }

  /** Takes one record another relay vouches for; the verdict tells gossipsub whether to pass it on. */
  const take = async (signed: SignedCapability, via: string): Promise<TopicValidatorResult> => {
    if (via === self) return TopicValidatorResult.Ignore
    // Relays nobody configured share one pool, so a swarm of fresh keys cannot crowd out the federation.
    if (!configured.has(via) && strangers() >= strangersCap && registry.viaOf(peerNamed(signed)) !== via) return TopicValidatorResult.Ignore
    try {
      await registry.accept(signed, undefined, via)
      return TopicValidatorResult.Accept
    } catch (err) {
      const code = err instanceof ProtocolError ? err.code : 'MALFORMED'
      log.debug(`relayed record from ${via.slice(-8)} not taken: ${(err as Error).message}`)
      // A forged or broken record is the sender's fault; a stale, expired or over-quota one may be honest lag.
      return code === 'STALE' || code === 'EXPIRED' || code === 'BUSY' ? TopicValidatorResult.Ignore : TopicValidatorResult.Reject
    }
  }

  pubsub.topicValidators.set(RECORDS_TOPIC, async (_from: PeerId, msg: Message) => {
    // The publishing relay signs the envelope: who vouches is known even when the message came the long way round.
    if (msg.type !== 'signed') return TopicValidatorResult.Reject
    try {
      return await take(recordOf(msg.data), msg.from.toString())
    } catch {
      return TopicValidatorResult.Reject
    }
  })
  pubsub.subscribe(RECORDS_TOPIC)

  // A claim from another relay is posted here as a replica: its receipts are checked as any claim's
  // (a forged one is rejected and not passed on), then audited here too, with the same seeded draws.
  pubsub.topicValidators.set(CLAIMS_TOPIC, async (_from: PeerId, msg: Message) => {
    const board = o.board?.()
    if (board === undefined || msg.type !== 'signed' || msg.from.toString() === self) return TopicValidatorResult.Ignore
    let claim: Claim
    try {
      claim = claimFromJson(JSON.parse(new TextDecoder().decode(msg.data)))
    } catch {
      return TopicValidatorResult.Reject
    }
    try {
      await board.post(claim, undefined, { replica: true })
      log.info(`claim ${claim.id} from relay ${msg.from.toString().slice(-8)} held and audited here too`)
      return TopicValidatorResult.Accept
    } catch (err) {
      const code = err instanceof TesseraError ? err.code : 'MALFORMED'
      log.debug(`claim ${claim.id} from relay ${msg.from.toString().slice(-8)} not taken: ${(err as Error).message}`)
      // Already held (it came the long way round too) or the board is full: no fault of the sender's.
      return code === 'INPUT' || code === 'BUSY' ? TopicValidatorResult.Ignore : TopicValidatorResult.Reject
    }
  })
  if (o.board !== undefined) pubsub.subscribe(CLAIMS_TOPIC)

  // A relay met: read its registry once (records already announced there would otherwise wait for their peers' next announce).
  const synced = new Set<string>()
  const sync = async (peer: PeerId): Promise<void> => {
    const id = peer.toString()
    if (synced.has(id)) return
    synced.add(id)
    try {
      const stream = await node.dialProtocol(peer, PEERS_PROTOCOL, { signal: AbortSignal.timeout(FEDERATION_DEFAULTS.syncTimeoutMs) })
      const lp = lpStream(stream, lpLimits(MAX_MESSAGE_BYTES))
      await lp.write(encode({ t: 'list' }))
      const reply = decode((await lp.read({ signal: AbortSignal.timeout(FEDERATION_DEFAULTS.syncTimeoutMs) })).subarray()) as {
        records?: unknown
        withdrawn?: unknown
      }
      await stream.close().catch(() => {})
      const list = (x: unknown): SignedCapability[] => (Array.isArray(x) ? (x as SignedCapability[]) : [])
      const records = list(reply.records)
      // Withdrawals too: who left while the two were apart (each is its peer's own signed word).
      const left = list(reply.withdrawn)
      let taken = 0
      for (const r of [...left, ...records]) if ((await take(r, id)) === TopicValidatorResult.Accept) taken++
      log.info(`relay ${id.slice(-8)} met: ${taken} of its ${records.length} records and ${left.length} withdrawals taken`)
    } catch (err) {
      synced.delete(id) // try again when it is met again
      log.debug(`reading relay ${id.slice(-8)}'s registry failed: ${(err as Error).message}`)
    }
  }
  const onSubscription = (evt: CustomEvent<{ peerId: PeerId; subscriptions: Array<{ topic: string; subscribe: boolean }> }>): void => {
    const { peerId, subscriptions } = evt.detail
    if (subscriptions.some((s) => s.topic === RECORDS_TOPIC && s.subscribe)) void sync(peerId)
  }
  const onDisconnect = (evt: CustomEvent<PeerId>): void => {
    synced.delete(evt.detail.toString())
  }
  pubsub.addEventListener('subscription-change', onSubscription)
  node.addEventListener('peer:disconnect', onDisconnect)

  // Configured relays are dialled until they answer, and again whenever the connection drops.
  const dialConfigured = (): void => {
    for (const a of o.peers ?? []) {
      const id = peerOf(a)
      if (node.getConnections(peerIdFromString(id)).length > 0) continue
      node.dial(multiaddr(a), { signal: AbortSignal.timeout(FEDERATION_DEFAULTS.syncTimeoutMs) }).catch((err: Error) => {
        log.debug(`relay ${a} not reached: ${err.message}`)
      })
    }
  }
  dialConfigured()
  const redial = setInterval(dialConfigured, FEDERATION_DEFAULTS.redialMs)

  return {
    publish(signed) {
      pubsub.publish(RECORDS_TOPIC, encode(signed)).catch((err: Error) => {
        log.debug(`publishing a record failed: ${err.message}`)
      })
    },
    publishClaim(claim) {
      pubsub.publish(CLAIMS_TOPIC, new TextEncoder().encode(JSON.stringify(claimToJson(claim)))).catch((err: Error) => {
        log.warn(`passing claim ${claim.id} on to the other relays failed: ${err.message}`)
      })
    },
    relays: () => pubsub.getSubscribers(RECORDS_TOPIC).map(String),
    stop() {
      clearInterval(redial)
      pubsub.removeEventListener('subscription-change', onSubscription)
      node.removeEventListener('peer:disconnect', onDisconnect)
    }
  }
}

/** The peer id a relay's multiaddr names (required: a federation member is known by its key). */
export function peerOf(addr: string): string {
  const id = multiaddr(addr)
    .getComponents()
    .filter((c) => c.name === 'p2p')
    .at(-1)?.value
  if (id === undefined) throw new ConfigError(`relay address ${addr} does not name its peer: add /p2p/<its peer id> (tessera relay prints it)`)
  return id
}
