/**
 * A peer that hogs a node's sessions, against the shared peer service (shared/node/service.ts)
 * on real libp2p peers in this process: it gets its share and no more, however it keeps them
 * alive, while other peers still open and forward; the relay the node announces to (whose client
 * carries every HTTP user) may hold more; sessions that never forward, and streams that never
 * open one, are dropped after the short idle time-out, and a dropped session's next frame is
 * answered EXPIRED without being computed; a client that never reads its reply loses the session
 * after the TTL too (that one on a stream pair, whose window can be made full outright).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Libp2p } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { lpStream, streamPair } from '@libp2p/utils'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { buildModel, readManifest } from '../../host/model-store.js'
import { loadModel, loadShard } from '../../native-node/store.js'
import { createPeer } from '../../host/libp2p.js'
import { createRegistry, handleRegistry } from '../../relay/registry.js'
import { preset } from '../../shared/model/config.js'
import { randomWeights } from '../../shared/model/random.js'
import type { Manifest } from '../../shared/manifest.js'
import { bytesOf, decodeNodeMsg, encodeMsg, INFER_PROTOCOL } from '../../shared/protocol/infer.js'
import { startPeerService, type PeerService } from '../../shared/node/service.js'
import { createInferHandler } from '../../shared/node/serve.js'
import { openRemoteHop, type RemoteHop } from '../../shared/client/remote-hop.js'
import { libp2pDialer } from '../../shared/route/directory.js'
import { HopError } from '../../shared/errors.js'
import { tempDir } from '../helpers/paths.js'

/** Small and short, so a test sees the limits in a second or two rather than in minutes. */
const LIMITS = { maxSessions: 6, sessionsPerPeer: 2, openIdleMs: 400, sessionTtlMs: 1500, lingerMs: 1000 }
const T = { openMs: 5000, stepMs: 5000, minStepMs: 5000, minFirstStepMs: 5000, lateMs: 5000, slack: 20 }
const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

let dir: string
let manifest: Manifest
let relay: Libp2p
let service: PeerService
const peers: Libp2p[] = []

beforeAll(async () => {
  dir = tempDir('session-hog')
  await buildModel(randomWeights(preset('tiny'), 9), dir, { source: 'x', shards: 2 })
  manifest = await readManifest(dir)
  relay = await createPeer()
  await handleRegistry(relay, createRegistry())
  const key = await generateKeyPair('Ed25519')
  service = await startPeerService({
    libp2p: await createPeer({ privateKey: key }),
    key,
    relay: relay.getMultiaddrs()[0].toString(),
    manifest,
    shards: manifest.shards,
    load: async (shards) => await Promise.all(shards.map(async (s) => await loadShard(dir, manifest, s.index, { device: 'cpu' }))),
    memory: { bytes: 1 << 30 },
    limits: LIMITS
  })
})
afterAll(async () => {
  await service?.stop()
  for (const p of peers) await p.stop()
  await relay?.stop()
})

/** A fresh libp2p peer: a new identity, dialling from its own connection. */
async function newPeer(): Promise<Libp2p> {
  const p = await createPeer({ listen: [] })
  peers.push(p)
  return p
}
const open = async (from: Libp2p, session: string): Promise<RemoteHop> =>
  await openRemoteHop(libp2pDialer(from), service.capability(), service.layers, manifest.root, session, T)
const refusal = async (p: Promise<unknown>): Promise<HopError> => {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e
  )
  expect(err).toBeInstanceOf(HopError)
  return err as HopError
}
/** Waits until the node holds `n` sessions (a closed hop frees its slot a moment later). */
async function settle(n: number): Promise<void> {
  for (let i = 0; i < 50 && service.stats.sessions !== n; i++) await sleep(20)
  expect(service.stats.sessions).toBe(n)
}

describe('a peer hogging sessions', () => {
  it('holds its share and no more however it keeps them alive, while other peers open and forward', async () => {
    const attacker = await newPeer()
    const hogs = [await open(attacker, 'hog0'), await open(attacker, 'hog1')]
    const fed = [0, 0]
    const feed = async (i: number): Promise<void> => {
      await hogs[i].forward({ tokens: [7] }, fed[i])
      fed[i]++
    }
    for (const i of [0, 1]) await feed(i)
    const over = await refusal(open(attacker, 'hog2'))
    expect(over.code).toBe('BUSY')
    expect(over.message).toMatch(/your peer holds 2 sessions on this node, its share/)

    // The hog pattern: one cheap token per session well inside the TTL, for two TTLs, asking for more all along.
    const honest = await Promise.all([newPeer(), newPeer(), newPeer()])
    const until = Date.now() + 2 * LIMITS.sessionTtlMs
    let round = 0
    while (Date.now() < until) {
      for (const i of [0, 1]) await feed(i)
      expect((await refusal(open(attacker, `more${round}`))).code).toBe('BUSY')
      // Other peers still get sessions and answers, one each per round, beside the hog's two.
      const h = await open(honest[round % honest.length], `honest${round}`)
      const out = await h.forward({ tokens: [1, 2, 3, 4] }, 0)
      expect(out.kind).toBe('logits')
      expect(out.seq).toBe(4)
      expect(service.stats.sessions).toBe(3)
      h.close()
      await settle(2)
      round++
      await sleep(LIMITS.sessionTtlMs / 4)
    }
    expect(round).toBeGreaterThanOrEqual(4)
    // Its two sessions are alive (it kept them so), and still only two.
    for (const i of [0, 1]) await feed(i)
    expect(service.stats.sessions).toBe(2)
    for (const h of hogs) h.close()
    await settle(0)
    // Its share comes back as it closes them.
    const again = await open(attacker, 'after')
    again.close()
    await settle(0)
  })

  it('lets the relay it announces to hold more than one peer its share, up to the node total', async () => {
    const mine = []
    for (let i = 0; i < LIMITS.maxSessions; i++) {
      const h = await openRemoteHop(libp2pDialer(relay), service.capability(), service.layers, manifest.root, `relay${i}`, T)
      await h.forward({ tokens: [3] }, 0)
      mine.push(h)
    }
    expect(service.stats.sessions).toBe(LIMITS.maxSessions)
    // The node's total still holds for the relay too.
    const full = await refusal(openRemoteHop(libp2pDialer(relay), service.capability(), service.layers, manifest.root, 'relay-over', T))
    expect(full.code).toBe('BUSY')
    expect(full.message).toMatch(/node is at its limit of 6 sessions/)
    for (const h of mine) h.close()
    await settle(0)
  })
})

describe('sessions that never forward', () => {
  it('are dropped after the short idle time-out, freeing the share; the next frame gets EXPIRED and is not computed', async () => {
    const attacker = await newPeer()
    const idle = [await open(attacker, 'idle0'), await open(attacker, 'idle1')]
    expect((await refusal(open(attacker, 'idle2'))).code).toBe('BUSY')
    await sleep(LIMITS.openIdleMs + 300) // well short of the 1.5 s TTL
    await settle(0)
    const steps = service.stats.steps
    const err = await refusal(idle[0].forward({ tokens: [1] }, 0))
    expect(err.code).toBe('EXPIRED')
    expect(err.message).toMatch(/session opened but no step sent in 400 ms; it was dropped/)
    expect(service.stats.steps).toBe(steps)
    // The share is free again at once.
    const fresh = [await open(attacker, 'fresh0'), await open(attacker, 'fresh1')]
    for (const h of fresh) expect((await h.forward({ tokens: [2] }, 0)).seq).toBe(1)
    for (const h of fresh) h.close()
    await settle(0)
  })

  it('a session that forwarded once then went quiet lasts the TTL, not the short time-out', async () => {
    const client = await newPeer()
    const h = await open(client, 'quiet')
    await h.forward({ tokens: [5] }, 0)
    await sleep(LIMITS.openIdleMs + 300)
    expect((await h.forward({ tokens: [6] }, 1)).seq).toBe(1)
    await sleep(LIMITS.sessionTtlMs + 300)
    await settle(0)
    const err = await refusal(h.forward({ tokens: [7] }, 2))
    expect(err.code).toBe('EXPIRED')
    expect(err.message).toMatch(/session idle for 1500 ms/)
  })

  it('a stream that never opens a session is answered EXPIRED and ended', async () => {
    const attacker = await newPeer()
    const stream = await attacker.dialProtocol(multiaddr(service.capability().addrs[0]), INFER_PROTOCOL)
    const lp = lpStream(stream)
    const started = Date.now()
    const reply = decodeNodeMsg((await lp.read({ signal: AbortSignal.timeout(5000) })).subarray())
    expect(reply).toMatchObject({ t: 'error', code: 'EXPIRED', message: expect.stringMatching(/no session opened in 400 ms/) })
    expect(Date.now() - started).toBeLessThan(LIMITS.sessionTtlMs)
    // Nothing more comes: the node ended its side.
    const next = await lp.read({ signal: AbortSignal.timeout(5000) }).then(
      () => 'a frame',
      (e: Error) => e.name
    )
    expect(next).toBe('UnexpectedEOFError')
    await stream.close()
  })
})

describe('a client that never reads its replies', () => {
  it('loses the session after the TTL though its reply never left, and the handler lets go of the stream', async () => {
    // A stream pair, whose window can be made full outright (libp2p's yamux window grows past any test-size reply).
    const { runners } = await loadModel(dir, { device: 'cpu' })
    const key = await generateKeyPair('Ed25519')
    const handler = createInferHandler({ root: manifest.root, runners, peer: 'node', sign: async (b) => await key.sign(b), sessionTtlMs: 500, lingerMs: 300 })
    const [client, inbound] = await streamPair({ protocol: INFER_PROTOCOL })
    let done = false
    void handler.handle(inbound, { remotePeer: peerIdFromPrivateKey(await generateKeyPair('Ed25519')) }).finally(() => {
      done = true
    })
    try {
      const lp = lpStream(client, { maxDataLength: 1 << 24 })
      await lp.write(encodeMsg({ t: 'open', root: manifest.root, layers: [0, 4], session: 'deaf' }))
      expect(decodeNodeMsg((await lp.read({ signal: AbortSignal.timeout(5000) })).subarray()).t).toBe('opened')
      // A full window from here on, as yamux reports one: the node's sends are refused (false) and no 'drain' ever comes.
      inbound.send = () => false
      const tokens = Array.from({ length: 200 }, (_, i) => i % 500)
      await lp.write(encodeMsg({ t: 'forward', step: 0, start: 0, seq: tokens.length, tokens: bytesOf(Int32Array.from(tokens)) }))
      for (let i = 0; i < 100 && handler.stats.steps === 0; i++) await sleep(20)
      expect(handler.stats.steps).toBe(1)
      expect(handler.stats.sessions).toBe(1) // computed; the reply waits on a client that takes nothing
      const started = Date.now()
      for (let i = 0; i < 100 && handler.stats.sessions > 0; i++) await sleep(20)
      expect(handler.stats.sessions).toBe(0)
      expect(handler.stats.cachedTokens).toBe(0)
      expect(Date.now() - started).toBeLessThan(1000)
      // The handler returns, and the stream, whose last reply the client never took, is aborted within the linger.
      for (let i = 0; i < 100 && !done; i++) await sleep(20)
      expect(done).toBe(true)
      for (let i = 0; i < 100 && inbound.status === 'open'; i++) await sleep(20)
      expect(inbound.status).toBe('aborted')
    } finally {
      client.abort(new Error('test over'))
      for (const r of runners) await r.dispose()
    }
  })
})
