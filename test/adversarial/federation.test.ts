/**
 * Relayed records are hostile until checked (relay/registry.ts, relay/federation.ts): a record
 * passed on by another relay is its own peer's signed word or nothing; an older copy cannot undo
 * a newer record or a withdrawal; a swarm of fresh keys speaking gossipsub cannot crowd out the
 * configured relays; a relayed record neither stakes anyone nor leaves with a connection.
 */
import { describe, expect, it } from 'vitest'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { ConnectionGater, Libp2p, PeerId, PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { encode } from 'cborg'
import type { GossipSub } from '@libp2p/gossipsub'
import { createPeer } from '../../host/libp2p.js'
import { parseDenyList } from '../../host/deny-list.js'
import { createRegistry, handleRegistry, type Registry } from '../../relay/registry.js'
import { federate, RECORDS_TOPIC, type Federation } from '../../relay/federation.js'
import { signCapability } from '../../shared/protocol/capability.js'
import { TesseraError } from '../../shared/errors.js'
import { waitFor } from '../helpers/network.js'
import { lyingRecord } from '../helpers/lying-record.js'

const ROOT = 'ab'.repeat(32)
const identity = async (): Promise<{ key: PrivateKey; peer: string }> => {
  const key = await generateKeyPair('Ed25519')
  return { key, peer: peerIdFromPrivateKey(key).toString() }
}
const record = async (who: { key: PrivateKey; peer: string }, issued: number, extra = {}) =>
  await signCapability(lyingRecord(who.peer, [], ROOT, 'm', { issued, expires: issued + 20_000, ...extra }), who.key)
const codeOf = async (p: Promise<unknown>): Promise<string | undefined> =>
  await p.then(
    () => undefined,
    (err: unknown) => (err instanceof TesseraError ? err.code : String(err))
  )

describe("an operator's block list (--deny-file)", () => {
  it('takes peer ids and comments, and names the line that is not a peer id', async () => {
    const p = await identity()
    expect([...parseDenyList(`# cut off\n${p.peer}  # this one\n\n`, 'deny.txt')]).toEqual([p.peer])
    expect(() => parseDenyList(`${p.peer}\nnot-a-peer\n`, 'deny.txt')).toThrow(/deny\.txt:2: "not-a-peer" is not a peer id/)
  })
})

describe('the registry, given relayed records', () => {
  it('orders records by issue time: an older copy cannot replace a newer one nor bring back a withdrawn peer', async () => {
    const t = Date.now()
    const registry = createRegistry()
    const p = await identity()
    await registry.accept(await record(p, t + 10), undefined, 'relay-a')
    expect(await codeOf(registry.accept(await record(p, t), undefined, 'relay-b'))).toBe('STALE')
    await registry.accept(await record(p, t + 20, { withdrawn: true }), undefined, 'relay-a')
    expect(registry.find(p.peer)).toBeUndefined()
    // The record from before the withdrawal, replayed by anyone: stale; a newer one from the peer is back.
    expect(await codeOf(registry.accept(await record(p, t + 15), undefined, 'relay-b'))).toBe('STALE')
    expect(registry.find(p.peer)).toBeUndefined()
    // The peer itself, over its own connection, is believed (a clock stepped back refuses nothing).
    await registry.accept(await record(p, t + 15), p.peer)
    expect(registry.find(p.peer)).toBeDefined()
  })

  it('gives each relay a bounded share; relayed records do not stake and do not leave with a connection', async () => {
    const t = Date.now()
    const joined: string[] = []
    const registry = createRegistry({ maxPerRelay: 3, onJoin: (c) => joined.push(c.peer) })
    const peers = await Promise.all([1, 2, 3, 4].map(identity))
    for (const p of peers.slice(0, 3)) await registry.accept(await record(p, t), undefined, 'greedy')
    expect(await codeOf(registry.accept(await record(peers[3], t), undefined, 'greedy'))).toBe('BUSY')
    // A refresh of a record it already holds is no new share.
    await registry.accept(await record(peers[0], t + 1), undefined, 'greedy')
    expect(registry.relayedBy().get('greedy')).toBe(3)
    await registry.accept(await record(peers[3], t), undefined, 'other')
    expect(joined).toEqual([])
    // Another relay's word that a peer disconnected from it is not ours: only a peer announced here leaves with its connection.
    expect(registry.left(peers[0].peer)).toBe(false)
    expect(registry.find(peers[0].peer)).toBeDefined()
    // The peer announcing here itself: now ours (staked on that first own announce), and gone when its connection closes.
    await registry.accept(await record(peers[0], t + 2), peers[0].peer)
    expect(joined).toEqual([peers[0].peer])
    expect(registry.relayedBy().get('greedy')).toBe(2)
    expect(registry.left(peers[0].peer)).toBe(true)
    expect(registry.find(peers[0].peer)).toBeUndefined()
  })
})

interface Relay {
  node: Libp2p
  registry: Registry
  federation: Federation
}
const relay = async (peers: string[] = [], o: { maxFromStrangers?: number; gater?: ConnectionGater } = {}): Promise<Relay> => {
  const node = await createPeer({ listen: ['/ip4/127.0.0.1/tcp/0'], gossip: { direct: [] }, gater: o.gater })
  const registry = createRegistry()
  const federation = federate(node, registry, { peers, ...o })
  // As a relay serves them: its registry's protocols (read by relays it meets), and what peers announce passed on.
  await handleRegistry(node, registry, { announced: (s) => federation.publish(s) })
  return { node, registry, federation }
}
const addrOf = (r: Relay): string => r.node.getMultiaddrs()[0].toString()

describe('relays sharing records over gossipsub', () => {
  it('a partition (C cut from A and B, then healed): records and withdrawals converge, each peer listed once', async () => {
    // C refuses A and B while `cut` holds: its partition, in user space.
    const blocked = new Set<string>()
    const gater: ConnectionGater = {
      denyDialPeer: (p: PeerId) => blocked.has(p.toString()),
      denyInboundEncryptedConnection: (p: PeerId) => blocked.has(p.toString())
    }
    const a = await relay()
    const b = await relay([addrOf(a)])
    const c = await relay([addrOf(a), addrOf(b)], { gater })
    const all = [a, b, c]
    try {
      const [stays, leaves, late] = await Promise.all([1, 2, 3].map(identity))
      for (const p of [stays, leaves]) {
        await a.registry.accept(await record(p, Date.now()), p.peer)
        a.federation.publish(await record(p, Date.now()))
      }
      await waitFor(async () => all.every((r) => r.registry.find(stays.peer) !== undefined && r.registry.find(leaves.peer) !== undefined), 5_000)

      for (const r of [a, b]) blocked.add(r.node.peerId.toString())
      for (const r of [a, b]) await c.node.hangUp(r.node.peerId)
      // Apart: one peer leaves and another joins on A's side; C hears of neither.
      const gone = await record(leaves, Date.now() + 1, { withdrawn: true })
      await a.registry.accept(gone, leaves.peer)
      a.federation.publish(gone)
      const joined = await record(late, Date.now())
      await a.registry.accept(joined, late.peer)
      a.federation.publish(joined)
      await waitFor(async () => b.registry.find(late.peer) !== undefined && b.registry.find(leaves.peer) === undefined, 5_000)
      await new Promise((resolve) => setTimeout(resolve, 500))
      expect(c.registry.find(late.peer)).toBeUndefined()
      expect(c.registry.find(leaves.peer)).toBeDefined()

      // Healed: C's configured relays are dialled again; meeting them, it reads what it missed.
      blocked.clear()
      const t0 = Date.now()
      await waitFor(async () => c.registry.find(late.peer) !== undefined && c.registry.find(leaves.peer) === undefined, 15_000)
      console.log(`federation: a healed partition converged ${Date.now() - t0} ms after it healed`)
      for (const r of all) {
        const peers = (await r.registry.list()).map((x) => x.peer)
        expect(peers.sort()).toEqual([stays.peer, late.peer].sort())
      }
    } finally {
      for (const r of all) {
        r.federation.stop()
        await r.node.stop()
      }
    }
  }, 40_000)

  it('a relay that meets the federation late (or a partition that heals) reads what it missed at once, not at the next announces', async () => {
    const a = await relay()
    const late: Relay[] = []
    try {
      const peers = await Promise.all([1, 2, 3].map(identity))
      for (const p of peers) await a.registry.accept(await record(p, Date.now()), p.peer)
      const t0 = Date.now()
      late.push(await relay([addrOf(a)]))
      await waitFor(async () => peers.every((p) => late[0].registry.find(p.peer) !== undefined), 5_000)
      console.log(`federation: a late relay listed 3 earlier records ${Date.now() - t0} ms after it started`)
      expect(late[0].registry.viaOf(peers[0].peer)).toBe(a.node.peerId.toString())
    } finally {
      for (const r of [a, ...late]) {
        r.federation.stop()
        await r.node.stop()
      }
    }
  }, 30_000)

  it('take forged records from nobody, and a swarm of fresh records from strangers only up to their pool', async () => {
    const a = await relay()
    const b = await relay([addrOf(a)], { maxFromStrangers: 20 })
    // A stranger: a peer speaking gossipsub that nobody configured, meeting B.
    const stranger = await createPeer({ listen: [], gossip: { direct: [] } })
    const pubsub = (stranger.services as { pubsub: GossipSub }).pubsub
    pubsub.subscribe(RECORDS_TOPIC)
    try {
      await stranger.dial(b.node.getMultiaddrs()[0])
      await waitFor(async () => pubsub.getSubscribers(RECORDS_TOPIC).length > 0 && b.federation.relays().length >= 2)
      const t = Date.now()
      // A forged record: a victim's record signed by the stranger's key.
      const victim = await identity()
      const forged = { ...(await record(victim, t)), signature: (await record(await identity(), t)).signature }
      await pubsub.publish(RECORDS_TOPIC, encode(forged))
      // A swarm of fresh keys, each with a valid record of its own.
      for (let i = 0; i < 40; i++) await pubsub.publish(RECORDS_TOPIC, encode(await record(await identity(), t)))
      await waitFor(async () => (b.registry.relayedBy().get(stranger.peerId.toString()) ?? 0) >= 20)
      await new Promise((resolve) => setTimeout(resolve, 500))
      expect(b.registry.relayedBy().get(stranger.peerId.toString())).toBe(20)
      expect(b.registry.find(victim.peer)).toBeUndefined()
      // The configured relay's records still get through, pool full or not.
      const honest = await identity()
      await a.registry.accept(await record(honest, Date.now()), honest.peer)
      a.federation.publish(await record(honest, Date.now()))
      await waitFor(async () => b.registry.find(honest.peer) !== undefined, 5_000)
      expect(b.registry.viaOf(honest.peer)).toBe(a.node.peerId.toString())
    } finally {
      for (const n of [stranger, a.node, b.node]) await n.stop()
      a.federation.stop()
      b.federation.stop()
    }
  }, 30_000)
})
