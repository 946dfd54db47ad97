/**
 * Registry records an attacker writes: a real relay and real nodes in this process, and attackers
 * with fresh keys that announce records claiming a speed of 0 ms, an expiry in the year 3000, and
 * layers an honest node serves, then vanish. Their expiry is capped at the relay's TTL, they are
 * gone once their connection closes, and honest generations keep succeeding. A claimed speed ranks
 * nothing once clients measured it; reports of failed dials drop a record only from several hosts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { buildModel } from '../../host/model-store.js'
import { createPeer } from '../../host/libp2p.js'
import { startNode, type RunningNode } from '../../native-node/node.js'
import { startRelay, type RunningRelay } from '../../relay/relay.js'
import { REGISTRY_DEFAULTS } from '../../relay/config.js'
import { createRegistry, measuring } from '../../relay/registry.js'
import { signCapability } from '../../shared/protocol/capability.js'
import { announce } from '../../shared/node/announce.js'
import { relayDirectory, withHint } from '../../shared/route/directory.js'
import { serversOf } from '../../shared/route/route.js'
import { reference, stories } from '../helpers/reference.js'
import { tempDir } from '../helpers/paths.js'
import { api, waitFor } from '../helpers/network.js'
import { buildStories, modelRunners } from '../helpers/memory-model.js'
import { memoryNet } from '../helpers/memory-net.js'
import { generateAll, memoryClient } from '../helpers/memory-client.js'
import { lyingRecord } from '../helpers/lying-record.js'
import { plannedCoverage } from '../../shared/node/select.js'
import type { Capability } from '../../shared/protocol/capability.js'

const cases = reference()

const identity = async (): Promise<{ key: PrivateKey; peer: string }> => {
  const key = await generateKeyPair('Ed25519')
  return { key, peer: peerIdFromPrivateKey(key).toString() }
}

describe('a flood of lying records on a real relay', () => {
  let relay: RunningRelay
  let model: string
  const nodes: RunningNode[] = []
  const attackers: Libp2p[] = []

  beforeAll(async () => {
    model = join(tempDir('registry-attack'), 'model')
    await buildModel(await stories(), model, { source: 'stories260K.bin', cuts: [2] })
    relay = await startRelay({ httpPort: 0, p2pPort: 0, models: [model], ledger: join(tempDir('registry-ledger'), 'ledger.sqlite') })
    nodes.push(await startNode({ relay: relay.addr, model, layers: [0, 2] }))
    nodes.push(await startNode({ relay: relay.addr, model, layers: [2, 5] }))
  }, 120_000)
  afterAll(async () => {
    for (const a of attackers) await Promise.resolve(a.stop()).catch(() => {})
    for (const n of nodes) await n.stop().catch(() => {})
    await relay?.stop()
  })

  /** A greedy generation through the relay's API, checked against the reference. */
  async function honestGeneration(): Promise<void> {
    const c = cases[0]
    const r = await api(relay.httpUrl, '/v1/completions', { prompt: c.prompt, max_tokens: 8, temperature: 0 })
    expect(r.tessera.tokens).toEqual(c.greedy.slice(0, 8))
  }

  it('caps a claimed expiry at the TTL, drops the records of peers that vanish, and honest generations keep succeeding', async () => {
    await honestGeneration()
    const { root, name } = (await api(relay.httpUrl, '/api/models')).models[0]
    const liars: string[] = []
    for (let i = 0; i < 8; i++) {
      const key = await generateKeyPair('Ed25519')
      const node = await createPeer({ privateKey: key, listen: [] })
      attackers.push(node)
      const peer = node.peerId.toString()
      // Addresses that go nowhere: nobody will ever serve these records.
      await announce(node, relay.addr, lyingRecord(peer, [`/ip4/127.0.0.1/tcp/1/ws/p2p/${peer}`], root, name), key)
      liars.push(peer)
    }
    // /api/network is refreshed each second.
    let listed: Array<{ peer: string; expires: number }> = []
    await waitFor(async () => {
      listed = (await api(relay.httpUrl, '/api/network')).peers
      return liars.every((id) => listed.some((p) => p.peer === id))
    })
    const cap = Date.now() + REGISTRY_DEFAULTS.ttlMs
    for (const id of liars) {
      const p = listed.find((x) => x.peer === id)
      expect(p, id).toBeDefined()
      expect(p!.expires).toBeLessThanOrEqual(cap)
      expect(relay.registry.find(id)!.expires).toBeLessThanOrEqual(cap)
    }
    // Clients that check the signed records themselves get the capped expiry too.
    // libp2p takes 5 new connections a second from one host (inboundConnectionThreshold): the attackers just used them.
    await new Promise((resolve) => setTimeout(resolve, 1500))
    const sdk = await createPeer({ listen: [] })
    try {
      const seen = await relayDirectory(sdk, relay.addr, 0).list()
      for (const id of liars) expect(seen.find((c) => c.peer === id)!.expires).toBeLessThanOrEqual(cap)
    } finally {
      await sdk.stop()
    }

    // The attackers vanish without withdrawing: the relay sees their connections close.
    for (const a of attackers.splice(0)) await a.stop()
    await waitFor(async () => {
      const peers = new Set(((await api(relay.httpUrl, '/api/network')).peers as Array<{ peer: string }>).map((p) => p.peer))
      return liars.every((id) => !peers.has(id))
    }, 10_000)
    expect(liars.map((id) => relay.registry.find(id))).toEqual(liars.map(() => undefined))
    for (let g = 0; g < 4; g++) await honestGeneration()
    // The honest nodes are still listed, and measured now: routing goes by what the relay's client timed.
    const hints = relay.registry.hints()
    for (const n of nodes) expect(hints.find((h) => h.peer === n.peerId)).toMatchObject({ measured: true })
    // Clients reading the registry over libp2p route by the same: never faster than measured, nor than claimed.
    const reader = await createPeer({ listen: [] })
    try {
      const seen = await relayDirectory(reader, relay.addr, 0).list()
      for (const n of nodes) {
        const h = relay.registry.hints().find((x) => x.peer === n.peerId)!
        expect(seen.find((c) => c.peer === n.peerId)!.msPerLayer).toBe(Math.max(n.capability().msPerLayer, h.msPerLayer))
      }
    } finally {
      await reader.stop()
    }
  }, 120_000)

  it('drops peers that stay connected but do not serve what they announced, as soon as the relay draws them', async () => {
    const { root, name } = (await api(relay.httpUrl, '/api/models')).models[0]
    const zombies: string[] = []
    for (let i = 0; i < 4; i++) {
      const key = await generateKeyPair('Ed25519')
      const node = await createPeer({ privateKey: key, listen: [] })
      attackers.push(node)
      await announce(node, relay.addr, lyingRecord(node.peerId.toString(), [`/ip4/127.0.0.1/tcp/1/ws/p2p/${node.peerId}`], root, name), key)
      zombies.push(node.peerId.toString())
    }
    expect(zombies.every((z) => relay.registry.find(z) !== undefined)).toBe(true)
    // A zombie drawn is dropped at once, so at most one generation (four tries a hop) can run out of peers to try.
    let failed = 0
    for (let g = 0; g < 4; g++) await honestGeneration().catch(() => failed++)
    expect(failed).toBeLessThanOrEqual(1)
    // Zombies nobody drew yet are drawn where the honest peer is avoided; then none is left, and honest generations succeed.
    const left = zombies.filter((z) => relay.registry.find(z) !== undefined).length
    for (let i = 0; i < left; i++)
      await relay.client
        .generate({ prompt: [1], maxTokens: 1, avoid: [nodes[0].peerId] })
        .next()
        .catch(() => {})
    expect(zombies.filter((z) => relay.registry.find(z) !== undefined)).toEqual([])
    for (let g = 0; g < 3; g++) await honestGeneration()
    for (const a of attackers.splice(0)) await a.stop()
  }, 120_000)

  it('counts reports of failed dials once per host: one attacker cannot drop an honest record', async () => {
    const honest = nodes[0].peerId
    for (let i = 0; i < 10; i++) {
      const r = await api(relay.httpUrl, `/api/peers/${honest}/unreachable`, {})
      expect(r).toEqual({ peer: honest, dropped: false })
    }
    // And over libp2p from the same host, under fresh peer ids: the same one reporter.
    for (let i = 0; i < 3; i++) {
      const sdk = await createPeer({ listen: [], privateKey: (await identity()).key })
      try {
        await relayDirectory(sdk, relay.addr, 0).unreachable(honest)
      } finally {
        await sdk.stop()
      }
      await new Promise((resolve) => setTimeout(resolve, 400)) // libp2p's 5 new connections a second per host
    }
    expect(relay.registry.find(honest)).toBeDefined()
    await honestGeneration()
  }, 60_000)

  it('a libp2p report counts: with two other distinct reporters, the record goes', async () => {
    const key = await generateKeyPair('Ed25519')
    const node = await createPeer({ privateKey: key, listen: [] })
    attackers.push(node)
    const peer = node.peerId.toString()
    const { root, name } = (await api(relay.httpUrl, '/api/models')).models[0]
    // A record for layers nobody routes through: only the reports can drop it.
    await announce(node, relay.addr, lyingRecord(peer, [], root, name, { layers: [4, 5], shardBounds: [4, 5] }), key)
    const sdk = await createPeer({ listen: [] })
    try {
      await relayDirectory(sdk, relay.addr, 0).unreachable(peer)
    } finally {
      await sdk.stop()
    }
    expect(relay.registry.unreachable(peer, '10.9.9.9')).toBe(false)
    expect(relay.registry.find(peer)).toBeDefined()
    // The relay's own client is the third host.
    expect(relay.registry.unreachable(peer)).toBe(true)
    expect(relay.registry.find(peer)).toBeUndefined()
    await node.stop()
  }, 60_000)

  it('an announce reply tells an unstaked peer it is unstaked', async () => {
    const key = await generateKeyPair('Ed25519')
    const node = await createPeer({ privateKey: key, listen: [] })
    try {
      const peer = node.peerId.toString()
      const { root, name } = (await api(relay.httpUrl, '/api/models')).models[0]
      const { lpStream } = await import('@libp2p/utils')
      const { decode, encode } = await import('cborg')
      const stream = await node.dialProtocol(multiaddr(relay.addr), '/tessera/announce/1.0.0')
      const lp = lpStream(stream)
      await lp.write(encode(await signCapability(lyingRecord(peer, [], root, name, { msPerLayer: 1, expires: Date.now() + 20_000 }), key)))
      const reply = decode((await lp.read()).subarray())
      expect(reply).toMatchObject({ ok: true, staked: false, stake: 0 })
      expect(reply.note).toMatch(/unstaked/)
      // No stake was granted by announcing (the relay's default join stake is 0).
      expect((await relay.ledger.standing(peer)).stake).toBe(0)
    } finally {
      await node.stop()
    }
  })
})

describe('what a record claims about its speed', () => {
  it('ranks by measured speed: a record claiming 0 ms is not first once measured, nor unmeasured below the measured median', async () => {
    const registry = createRegistry()
    const [honest, liar, fresh] = [await identity(), await identity(), await identity()]
    const root = 'ab'.repeat(32)
    for (const [who, ms] of [
      [honest, 5],
      [liar, 0]
    ] as const)
      await registry.accept(await signCapability(lyingRecord(who.peer, [], root, 'm', { msPerLayer: ms, expires: Date.now() + 20_000 }), who.key))
    const order = async (): Promise<string[]> => serversOf(await registry.list(), [0, 2]).map((c) => c.peer)
    // Nothing measured yet: claims are all there is.
    expect((await order())[0]).toBe(liar.peer)
    // The relay's client timed both: the liar takes 40 ms a layer, the honest peer 6.
    for (let i = 0; i < 5; i++) {
      registry.measured(liar.peer, 80, 2)
      registry.measured(honest.peer, 12, 2)
    }
    expect(await order()).toEqual([honest.peer, liar.peer])
    expect((await registry.list()).find((c) => c.peer === liar.peer)!.msPerLayer).toBeCloseTo(40)
    // A newcomer claiming 0 ms is ranked at the measured median at best, never ahead on its claim alone.
    await registry.accept(await signCapability(lyingRecord(fresh.peer, [], root, 'm', { msPerLayer: 0, expires: Date.now() + 20_000 }), fresh.key))
    const median = (40 + 6) / 2
    expect((await registry.list()).find((c) => c.peer === fresh.peer)!.msPerLayer).toBe(median)
    expect((await order())[0]).toBe(honest.peer)
  })

  it('the relay times every decode hop of its generations: a slow peer measures slow, whatever it claims', async () => {
    const runners = await modelRunners(await buildStories([2]))
    const net = memoryNet(runners)
    try {
      const slow = await net.add({ layers: [0, 2], msPerLayer: 0 })
      const fast = await net.add({ layers: [2, 5], msPerLayer: 1 })
      slow.onStep = async () => await new Promise((resolve) => setTimeout(resolve, 40))
      const seen = new Map<string, number[]>()
      const spy = {
        measured: (peer: string, ms: number, layers: number) => seen.set(peer, [...(seen.get(peer) ?? []), ms / layers])
      }
      const r = await generateAll(measuring(memoryClient(net), spy), { prompt: cases[0].prompt, maxTokens: 6 })
      expect(r.tokens).toEqual(cases[0].greedy.slice(0, 6))
      // Five decode steps (the prefill is left out), each hop timed.
      expect(seen.get(slow.id)).toHaveLength(5)
      expect(seen.get(fast.id)).toHaveLength(5)
      for (const x of seen.get(slow.id)!) expect(x).toBeGreaterThanOrEqual(20)
      expect(Math.min(...seen.get(slow.id)!)).toBeGreaterThan(Math.max(...seen.get(fast.id)!))
    } finally {
      net.stop()
      await runners.dispose()
    }
  }, 60_000)

  it('drops a record that distinct hosts could not reach; reports outlive a re-announce, not the window', async () => {
    let t = 1_000_000
    const registry = createRegistry({ now: () => t, unreachableReports: 3 })
    const dead = await identity()
    const record = async () => await signCapability(lyingRecord(dead.peer, [], 'ab'.repeat(32), 'm', { msPerLayer: 1, expires: t + 20_000 }), dead.key)
    await registry.accept(await record())
    // One host, however often: one reporter.
    for (let i = 0; i < 5; i++) expect(registry.unreachable(dead.peer, '10.0.0.1')).toBe(false)
    expect(registry.unreachable(dead.peer, 'relay')).toBe(false)
    // Announcing again does not wipe the slate: a peer that announces but never serves still adds up.
    await registry.accept(await record())
    expect(registry.unreachable(dead.peer, '10.0.0.2')).toBe(true)
    expect(registry.find(dead.peer)).toBeUndefined()
    expect(await registry.list()).toEqual([])
    // Dropped, it starts over when it announces again (a live peer is back at its next announce).
    await registry.accept(await record())
    expect(registry.unreachable(dead.peer, '10.0.0.3')).toBe(false)
    // Reports older than the window no longer count.
    t += REGISTRY_DEFAULTS.unreachableWindowMs + 1
    await registry.accept(await record())
    expect(registry.unreachable(dead.peer, '10.0.0.4')).toBe(false)
    expect(registry.unreachable(dead.peer, '10.0.0.5')).toBe(false)
    expect(registry.find(dead.peer)).toBeDefined()
    expect(registry.unreachable(dead.peer, '10.0.0.6')).toBe(true)
  })

  it('a peer that says it is moving but never arrives holds nobody off the gap for longer than a move takes', async () => {
    let t = Date.now()
    const registry = createRegistry({ now: () => t })
    const root = 'ab'.repeat(32)
    const [squatter, honest] = [await identity(), await identity()]
    const announceOf = async (who: { key: PrivateKey; peer: string }, extra: Partial<Capability>): Promise<void> => {
      await registry.accept(await signCapability(lyingRecord(who.peer, [], root, 'm', { issued: t, expires: t + 20_000, ...extra }), who.key))
    }
    // [0,2) is served; [2,4) is the gap. The squatter serves [0,2) and claims, every announce, to be moving into it,
    // re-aimed every 5 minutes (the grace runs from its first claim, not its latest). Both re-announce every 10 s.
    const planned = async (): Promise<number[]> => plannedCoverage(await registry.list(), 4)
    const start = t
    const tick = async (): Promise<void> => {
      const minute = Math.floor((t - start) / 60_000)
      await announceOf(honest, { layers: [0, 2], modelLayers: 4 })
      await announceOf(squatter, { layers: [0, 2], modelLayers: 4, moving: Math.floor(minute / 5) % 2 === 0 ? [2, 4] : [2, 3] })
    }
    while (t - start < REGISTRY_DEFAULTS.moveGraceMs) {
      await tick()
      t += 10_000
    }
    // At the grace: still counted where it goes.
    t = start + REGISTRY_DEFAULTS.moveGraceMs
    await tick()
    expect((await planned())[2]).toBe(1)
    // Past it: the gap shows as a gap, to the relay's own selection and to a client reading the hints.
    t += 1000
    await tick()
    expect((await planned()).slice(2)).toEqual([0, 0])
    expect(registry.hints().find((h) => h.peer === squatter.peer)?.movingStale).toBe(true)
    // A peer that arrives (no `moving` in its record) starts afresh next time.
    await announceOf(squatter, { layers: [2, 4], modelLayers: 4 })
    await announceOf(squatter, { layers: [2, 4], modelLayers: 4, moving: [0, 2] })
    expect(registry.hints().find((h) => h.peer === squatter.peer)?.movingStale).toBeUndefined()
    expect((await registry.list()).find((c) => c.peer === squatter.peer)?.moving).toEqual([0, 2])

    // A node or client reading the relay over libp2p applies the same hint to the signed record, and a hint only removes a claim.
    const signed = lyingRecord(squatter.peer, [], root, 'm', { moving: [2, 4] })
    const hint = { peer: squatter.peer, expires: signed.expires, msPerLayer: 1 }
    expect(withHint(signed, { ...hint, movingStale: true }).moving).toBeUndefined()
    expect(withHint(signed, hint).moving).toEqual([2, 4])
    expect(withHint(lyingRecord(honest.peer, [], root, 'm'), { ...hint, peer: honest.peer, movingStale: false }).moving).toBeUndefined()
  })
})
