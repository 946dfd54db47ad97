/**
 * The shared peer service (shared/node/service.ts) in this process, on onnxruntime-node and a
 * bare relay registry: the cache cap it enforces is the kvRoom it advertises, the record carries
 * this build's version, announce failures carry their code, and a session's stream tells a
 * client leaving between frames from a frame cut short.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Libp2p, Stream } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { buildModel, readManifest } from '../host/model-store.js'
import { loadShard } from '../native-node/store.js'
import { createPeer } from '../host/libp2p.js'
import { createRegistry, handleRegistry } from '../relay/registry.js'
import { preset } from '../shared/model/config.js'
import { randomWeights } from '../shared/model/random.js'
import type { Manifest } from '../shared/manifest.js'
import { signCapability, verifyCapability, type Capability } from '../shared/protocol/capability.js'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { INFER_PROTOCOL } from '../shared/protocol/infer.js'
import { announce } from '../shared/node/announce.js'
import { planMemory } from '../shared/plan.js'
import { rebalanceMove } from '../shared/node/rebalance.js'
import { chooseShards, plannedCoverage } from '../shared/node/select.js'
import { coverage } from '../shared/route/route.js'
import { frameStream } from '../shared/node/frames.js'
import { startPeerService, type PeerService } from '../shared/node/service.js'
import { openRemoteHop } from '../shared/client/remote-hop.js'
import { libp2pDialer, relayDirectory } from '../shared/route/directory.js'
import { type HopError, TesseraError } from '../shared/errors.js'
import { VERSION } from '../shared/version.js'
import { tempDir } from './helpers/paths.js'

let dir: string
let manifest: Manifest
let relay: Libp2p
let relayAddr: string
let client: Libp2p

beforeAll(async () => {
  dir = tempDir('peer-service')
  await buildModel(randomWeights(preset('tiny'), 9), dir, { source: 'x', shards: 2 })
  manifest = await readManifest(dir)
  relay = await createPeer()
  await handleRegistry(relay, createRegistry())
  relayAddr = relay.getMultiaddrs()[0].toString()
  client = await createPeer({ listen: [] })
})
afterAll(async () => {
  await client?.stop()
  await relay?.stop()
})

/** A budget that holds shard 0's weights (its blocks and the embedding) and `tokens` tokens of KV cache beside them. */
function budgetFor(tokens: number): number {
  const plan = planMemory(manifest.config, { dtype: manifest.dtype, budget: 0 })
  const [a, b] = manifest.shards[0].layers
  return (b - a) * (plan.weightsPerLayer + (tokens * plan.kvPerLayer) / manifest.config.maxSeqLen) + plan.embedding
}

describe('rebalanceMove', () => {
  it('moves only when that raises the least-covered layer', () => {
    expect(rebalanceMove(manifest, [0, 2], [1, 1, 0, 0], 2)).toMatchObject({ to: [manifest.shards[1]], minBefore: 0, minAfter: 1 })
    expect(rebalanceMove(manifest, [0, 2], [0, 0, 0, 0], 2)).toBeUndefined()
    expect(rebalanceMove(manifest, [2, 4], [1, 1, 0, 0], 2)).toBeUndefined()
  })

  it('counts a peer that is moving where it goes, so a second peer seeing the same gap stays', () => {
    // a and b both serve [0,2); nobody serves [2,4). a decides first and says so in its record.
    const rec = (peer: string, layers: [number, number], moving?: [number, number]): Capability =>
      ({ peer, layers, shardBounds: layers, modelLayers: 4, ...(moving !== undefined ? { moving } : {}) }) as unknown as Capability
    const a = rec('a', [0, 2])
    expect(rebalanceMove(manifest, [0, 2], plannedCoverage([rec('b', [0, 2])], 4), 2)?.to).toEqual([manifest.shards[1]])
    const aMoving = rec('a', [0, 2], [2, 4])
    expect(plannedCoverage([aMoving], 4)).toEqual([0, 0, 1, 1])
    // b, deciding while a loads: counted where it goes, a leaves [0,2) to b alone, and b stays.
    expect(rebalanceMove(manifest, [0, 2], plannedCoverage([aMoving], 4), 2)).toBeUndefined()
    // Counting only where a is now, b would have followed it.
    expect(rebalanceMove(manifest, [0, 2], coverage([a], 4), 2)?.to).toEqual([manifest.shards[1]])
    // A joiner's block selection counts moves the same way: a is about to leave [0,2) bare.
    expect(chooseShards(manifest, [aMoving], 2)).toEqual([manifest.shards[0]])
    expect(chooseShards(manifest, [a], 2)).toEqual([manifest.shards[1]])
  })

  it("accepts a record's `moving` only as a run of layers", async () => {
    const key = await generateKeyPair('Ed25519')
    const base: Capability = {
      peer: peerIdFromPrivateKey(key).toString(),
      addrs: [],
      device: 'cpu',
      memory: 1,
      msPerLayer: 1,
      model: 'm',
      root: 'r',
      modelLayers: 4,
      layers: [0, 2],
      shardBounds: [0, 2],
      kvRoom: 1,
      sessions: 0,
      version: VERSION,
      issued: Date.now(),
      expires: Date.now() + 10_000
    }
    expect((await verifyCapability(await signCapability({ ...base, moving: [2, 4] }, key))).moving).toEqual([2, 4])
    for (const moving of [[4, 2], [1], [0, 1.5], 'all'])
      await expect(verifyCapability(await signCapability({ ...base, moving } as unknown as Capability, key))).rejects.toThrow(/record lacks required fields/)
  })
})

describe('the peer service', () => {
  let service: PeerService
  beforeAll(async () => {
    const key = await generateKeyPair('Ed25519')
    service = await startPeerService({
      libp2p: await createPeer({ privateKey: key }),
      key,
      relay: relayAddr,
      manifest,
      shards: [manifest.shards[0]],
      load: async (shards) => await Promise.all(shards.map(async (s) => await loadShard(dir, manifest, s.index, { device: 'cpu' }))),
      memory: { bytes: budgetFor(10) },
      // This test's one client may use the whole cache (as the relay may), not a share of it.
      limits: { sessionsPerPeer: 64 }
    })
  })
  afterAll(async () => {
    await service?.stop()
  })

  it("announces a record with this build's version and the kvRoom its handler enforces", async () => {
    const listed = (await relayDirectory(client, relayAddr, 0).list()).find((p) => p.peer === service.capability().peer)
    expect(listed?.version).toBe(VERSION)
    expect(listed?.layers).toEqual(service.layers)
    expect(service.capability().kvRoom).toBe(10)

    const peer = service.capability()
    const dialer = libp2pDialer(client)
    const T = { openMs: 5000, stepMs: 5000, minStepMs: 5000, minFirstStepMs: 5000, lateMs: 5000, slack: 20 }
    const a = await openRemoteHop(dialer, peer, service.layers, manifest.root, 'a', T)
    await a.forward({ tokens: [1, 2, 3, 4, 5, 6, 7, 8] }, 0)
    expect(service.capability().kvRoom).toBe(2)
    const b = await openRemoteHop(dialer, peer, service.layers, manifest.root, 'b', T)
    const err = await b.forward({ tokens: [1, 2, 3, 4] }, 0).catch((e: unknown) => e)
    expect((err as HopError).code).toBe('BUSY')
    a.close()
  })

  it('withdraws its record on stop', async () => {
    const peer = service.capability().peer
    await service.stop()
    expect((await relayDirectory(client, relayAddr, 0).list()).map((p) => p.peer)).not.toContain(peer)
  })
})

describe('announce', () => {
  it('a record the relay refuses throws ANNOUNCE_REFUSED at once', async () => {
    const node = await createPeer({ listen: [] })
    try {
      // Signed by another key than the peer it names: the registry refuses it.
      const cap = {
        peer: node.peerId.toString(),
        addrs: [],
        layers: [0, 2],
        shardBounds: [0, 2],
        root: manifest.root,
        msPerLayer: 1,
        expires: Date.now() + 30_000
      }
      const err = await announce(node, relayAddr, cap as unknown as Capability, await generateKeyPair('Ed25519'), { attempts: 3 }).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(TesseraError)
      expect((err as TesseraError).code).toBe('ANNOUNCE_REFUSED')
    } finally {
      await node.stop()
    }
  })

  it('a relay that is not there is UNREACHABLE after the last try', async () => {
    const node = await createPeer({ listen: [] })
    const gone = await createPeer()
    const addr = gone.getMultiaddrs()[0].toString()
    await gone.stop()
    try {
      const cap = { peer: node.peerId.toString() } as unknown as Capability
      const err = await announce(node, addr, cap, await generateKeyPair('Ed25519'), { attempts: 2, backoffMs: 10, timeoutMs: 2000 }).catch((e: unknown) => e)
      expect((err as TesseraError).code).toMatch(/^(UNREACHABLE|TIMEOUT)$/)
    } finally {
      await node.stop()
    }
  })
})

describe('a session stream', () => {
  it('ends quietly when the client leaves between frames, and calls a frame cut short MALFORMED', async () => {
    const server = await createPeer()
    const seen: unknown[] = []
    let done!: () => void
    const finished = new Promise<void>((resolve) => {
      done = resolve
    })
    await server.handle(`${INFER_PROTOCOL}-frames`, async (stream: Stream) => {
      const frames = frameStream(stream, 1000)
      for (;;) {
        const r = await frames.read().catch((e: unknown) => e)
        seen.push(r instanceof Uint8Array ? [...r] : r)
        if (!(r instanceof Uint8Array)) break
      }
      done()
    })
    const open = async (): Promise<Stream> => await client.dialProtocol(multiaddr(server.getMultiaddrs()[0]), `${INFER_PROTOCOL}-frames`)
    try {
      // Two whole frames, then a clean close.
      let s = await open()
      s.send(Uint8Array.of(2, 7, 8))
      s.send(Uint8Array.of(1, 9))
      await s.close()
      await finished
      expect(seen).toEqual([[7, 8], [9], undefined])

      // A prefix promising 5 bytes, 2 of them, then a close.
      seen.length = 0
      const again = new Promise<void>((resolve) => {
        done = resolve
      })
      s = await open()
      s.send(Uint8Array.of(5, 1, 2))
      await s.close()
      await again
      expect(seen).toHaveLength(1)
      expect((seen[0] as TesseraError).code).toBe('MALFORMED')
      expect((seen[0] as TesseraError).message).toMatch(/truncated message: 3 bytes of a frame arrived/)
    } finally {
      await server.stop()
    }
  })
})
