/**
 * The node's protocol handler over real libp2p streams (two peers in this process): the KV
 * memory cap, the session limit and the idle TTL.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { buildModel } from '../host/model-store.js'
import { loadModel } from '../native-node/store.js'
import { createPeer } from '../host/libp2p.js'
import { preset } from '../shared/model/config.js'
import { randomWeights } from '../shared/model/random.js'
import { createInferHandler } from '../shared/node/serve.js'
import { INFER_PROTOCOL } from '../shared/protocol/infer.js'
import { openRemoteHop } from '../shared/client/remote-hop.js'
import { libp2pDialer } from '../shared/route/directory.js'
import type { Capability } from '../shared/protocol/capability.js'
import type { ShardRunner } from '../shared/runner.js'
import { HopError } from '../shared/errors.js'
import { tempDir } from './helpers/paths.js'

let server: Libp2p
let key: PrivateKey
let client: Libp2p
let runners: ShardRunner[]
let root: string
const protocols: string[] = []

beforeAll(async () => {
  const dir = tempDir('serve')
  root = (await buildModel(randomWeights(preset('tiny'), 9), dir, { source: 'x', shards: 2 })).root
  runners = (await loadModel(dir, { device: 'cpu' })).runners
  key = await generateKeyPair('Ed25519')
  server = await createPeer({ privateKey: key })
  client = await createPeer({ listen: [] })
})
afterAll(async () => {
  await client?.stop()
  await server?.stop()
})

/** Serves the handler under a fresh protocol id so each test has its own limits. */
async function serve(limits: Partial<Parameters<typeof createInferHandler>[0]>): Promise<{ peer: Capability; protocol: string }> {
  const opts = { root, runners, peer: server.peerId.toString(), sign: async (b: Uint8Array) => await key.sign(b), ...limits }
  const protocol = `${INFER_PROTOCOL}-test${protocols.length}`
  protocols.push(protocol)
  await server.handle(protocol, createInferHandler(opts).handle)
  const peer = { peer: server.peerId.toString(), addrs: server.getMultiaddrs().map(String), msPerLayer: 1 } as unknown as Capability
  return { peer, protocol }
}

const dialerFor = (protocol: string) => {
  const d = libp2pDialer(client)
  return { dial: async (p: Capability, _proto: string, signal: AbortSignal) => await d.dial(p, protocol, signal) }
}
const T = { openMs: 5000, stepMs: 5000, minStepMs: 5000, minFirstStepMs: 5000, lateMs: 5000, slack: 20 }

describe('serve limits', () => {
  it('refuses a step that would overflow the KV cache cap, and frees room when a session ends', async () => {
    // One client that may hold every session (as the relay may), so the whole cache is its share.
    const { peer, protocol } = await serve({ maxCacheTokens: 10, sessionsPerPeer: 64 })
    const a = await openRemoteHop(dialerFor(protocol), peer, [0, 4], root, 'a', T)
    await a.forward({ tokens: [1, 2, 3, 4, 5, 6, 7, 8] }, 0)
    const b = await openRemoteHop(dialerFor(protocol), peer, [0, 4], root, 'b', T)
    const err = await b.forward({ tokens: [1, 2, 3, 4] }, 0).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(HopError)
    expect((err as HopError).code).toBe('BUSY')
    expect((err as Error).message).toMatch(/KV cache full: 8 of 10/)
    a.close()
    await new Promise((resolve) => setTimeout(resolve, 200))
    const c = await openRemoteHop(dialerFor(protocol), peer, [0, 4], root, 'c', T)
    expect((await c.forward({ tokens: [1, 2, 3, 4] }, 0)).kind).toBe('logits')
    c.close()
  })

  it('holds each peer to its share of the KV cache (its share of the sessions), whatever else it does; other peers still get room', async () => {
    // 8 sessions at most, 2 per peer: a peer may hold a quarter of the 64 tokens.
    const { peer, protocol } = await serve({ maxCacheTokens: 64, maxSessions: 8, sessionsPerPeer: 2 })
    const hogs = [await openRemoteHop(dialerFor(protocol), peer, [0, 4], root, 'h0', T), await openRemoteHop(dialerFor(protocol), peer, [0, 4], root, 'h1', T)]
    await hogs[0].forward({ tokens: Array.from({ length: 10 }, (_, i) => i + 1) }, 0)
    const err = await hogs[1].forward({ tokens: Array.from({ length: 10 }, (_, i) => i + 1) }, 0).catch((e: unknown) => e)
    expect((err as HopError).code).toBe('BUSY')
    expect((err as Error).message).toMatch(/your peer's sessions hold 10 of this node's 64 KV cache tokens; its share is 16/)
    // Another peer is not held to the hog's use.
    const other = await createPeer({ listen: [] })
    try {
      const d = libp2pDialer(other)
      const o = await openRemoteHop({ dial: async (p, _proto, signal) => await d.dial(p, protocol, signal) }, peer, [0, 4], root, 'o', T)
      expect((await o.forward({ tokens: Array.from({ length: 16 }, (_, i) => i + 1) }, 0)).seq).toBe(16)
      o.close()
    } finally {
      await other.stop()
    }
    // Its share comes back as its sessions end.
    hogs[0].close()
    await new Promise((resolve) => setTimeout(resolve, 200))
    const again = await openRemoteHop(dialerFor(protocol), peer, [0, 4], root, 'h2', T)
    expect((await again.forward({ tokens: Array.from({ length: 16 }, (_, i) => i + 1) }, 0)).seq).toBe(16)
    again.close()
  })

  it('refuses sessions past the limit with BUSY', async () => {
    const { peer, protocol } = await serve({ maxSessions: 1 })
    const a = await openRemoteHop(dialerFor(protocol), peer, [0, 2], root, 'a', T)
    const err = await openRemoteHop(dialerFor(protocol), peer, [0, 2], root, 'b', T).catch((e: unknown) => e)
    expect((err as HopError).code).toBe('BUSY')
    a.close()
  })

  it('drops an idle session after its TTL with EXPIRED', async () => {
    const { peer, protocol } = await serve({ sessionTtlMs: 300 })
    const a = await openRemoteHop(dialerFor(protocol), peer, [0, 2], root, 'a', T)
    await new Promise((resolve) => setTimeout(resolve, 600))
    const err = await a.forward({ tokens: [1] }, 0).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(HopError)
    expect((err as HopError).code).toBe('EXPIRED')
  })

  it('refuses non-finite hidden states with MALFORMED rather than signing NaN', async () => {
    const { peer, protocol } = await serve({})
    const dim = preset('tiny').dim
    // The second shard takes hidden states: one row with a NaN in it, one with an Infinity.
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY]) {
      const hidden = new Float32Array(dim).fill(0.1)
      hidden[3] = bad
      const hop = await openRemoteHop(dialerFor(protocol), peer, runners[1].shard.layers, root, `nan-${bad}`, T)
      const err = await hop.forward({ hidden, seq: 1 }, 0).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(HopError)
      expect((err as HopError).code).toBe('MALFORMED')
      expect((err as HopError).message).toMatch(new RegExp(`hidden states must be finite: value 3 is ${bad}`))
    }
    // A finite row on a fresh session is served as ever.
    const ok = await openRemoteHop(dialerFor(protocol), peer, runners[1].shard.layers, root, 'finite', T)
    const out = await ok.forward({ hidden: new Float32Array(dim).fill(0.1), seq: 1 }, 0)
    expect(out.seq).toBe(1)
    ok.close()
  })
})
