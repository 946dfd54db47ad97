/**
 * Slow links on loopback (host/slow-link.ts): real libp2p peers whose connections are slowed in
 * user space. A ping takes the round trip asked for, a stream's bytes arrive in order at the
 * bandwidth asked for, and a peer without a shape stays as fast as loopback.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { Libp2p, MultiaddrConnection } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { createPeer } from '../host/libp2p.js'
import { linkFromEnv, slowConnection, type LinkShape } from '../host/slow-link.js'
import { ConfigError } from '../shared/errors.js'

const peers: Libp2p[] = []
afterEach(async () => {
  await Promise.all(peers.splice(0).map((p) => p.stop()))
})

async function pair(link?: LinkShape): Promise<[Libp2p, Libp2p]> {
  const [a, b] = await Promise.all([createPeer({ listen: ['/ip4/127.0.0.1/tcp/0'], link }), createPeer({ listen: ['/ip4/127.0.0.1/tcp/0'], link })])
  peers.push(a, b)
  return [a, b]
}

/** Median of `n` pings from a to b, ms (the first dial is made before). */
async function pingMs(a: Libp2p, b: Libp2p, n = 7): Promise<number> {
  const ping = (a.services as { ping: { ping(addrs: unknown): Promise<number> } }).ping
  await ping.ping(b.getMultiaddrs())
  const times: number[] = []
  for (let i = 0; i < n; i++) times.push(await ping.ping(b.getMultiaddrs()))
  return times.sort((x, y) => x - y)[Math.floor(n / 2)]
}

describe('slow links on loopback', () => {
  it('delays every connection by the round trip asked for, and only where asked', async () => {
    const [fastA, fastB] = await pair()
    const [slowA, slowB] = await pair({ oneWayMs: 40 })
    const [fast, slow] = [await pingMs(fastA, fastB), await pingMs(slowA, slowB)]
    expect(fast).toBeLessThan(20)
    // Each end receives 40 ms late: 80 ms a round trip, and timers fire late by a ms or so on a loaded machine.
    expect(slow).toBeGreaterThanOrEqual(79)
    expect(slow).toBeLessThan(80 + 30)
  })

  it("carries a stream's bytes in order at the bandwidth asked for", async () => {
    const [a, b] = await pair({ oneWayMs: 5, mbps: 8 }) // 1 MB/s into each peer
    const bytes = 256 * 1024
    b.handle('/test/sink/1.0.0', async (stream) => {
      const lp = lpStream(stream)
      const got = (await lp.read()).subarray()
      await lp.write(Uint8Array.of(got.length % 251, got[0], got[got.length - 1]))
      await stream.close()
    })
    const stream = await a.dialProtocol(b.getMultiaddrs(), '/test/sink/1.0.0')
    const lp = lpStream(stream, { maxDataLength: bytes + 16 })
    const data = Uint8Array.from({ length: bytes }, (_, i) => i % 251)
    const t = performance.now()
    await lp.write(data)
    const reply = (await lp.read()).subarray()
    const ms = performance.now() - t
    expect([...reply]).toEqual([bytes % 251, 0, (bytes - 1) % 251])
    // 256 KiB at 1 MB/s is 262 ms on the way in (the reply's few bytes and the 10 ms round trip beside it).
    expect(ms).toBeGreaterThanOrEqual(262)
    expect(ms).toBeLessThan(262 + 200)
    await stream.close()
  })

  it('delivers every chunk in the order it came, however busy the event loop (a reordered byte breaks the encryption)', async () => {
    const got: number[] = []
    const conn = { status: 'open', onData: (d: Uint8Array) => got.push(d[0] | (d[1] << 8)), onTransportClosed: () => {} }
    const slow = slowConnection(conn as unknown as MultiaddrConnection, { oneWayMs: 10 })
    const busy = (ms: number): void => {
      const t = performance.now()
      while (performance.now() - t < ms) {}
    }
    // Chunks in bursts from timers of their own, the loop kept busy a fraction of a ms between them:
    // per-chunk timers, filed by the loop's whole-ms clock, delivered about one in 10,000 out of order.
    const n = 10_000
    let sent = 0
    await new Promise<void>((resolve) => {
      for (let round = 0; round < n / 5; round++)
        setTimeout(() => {
          for (let k = 0; k < 5; k++) {
            const i = sent++
            ;(slow as unknown as { onData(d: Uint8Array): void }).onData(new Uint8Array([i & 255, i >> 8]))
            busy(Math.random() * 0.7)
          }
          if (sent === n) resolve()
        }, Math.random() * 3)
    })
    // Everything is due 10 ms after it was sent; a loaded machine's timers may run late, so wait for them (up to 5 s), not a fixed 100 ms.
    for (const until = Date.now() + 5000; got.length < n && Date.now() < until; ) await new Promise((r) => setTimeout(r, 20))
    expect(got).toHaveLength(n)
    expect(got.filter((x, i) => i > 0 && x < got[i - 1])).toEqual([])
  }, 30_000)

  it('reads the shape from the environment of a spawned process, and refuses a malformed one', () => {
    expect(linkFromEnv({})).toBeUndefined()
    expect(linkFromEnv({ TESSERA_LINK_RTT_MS: '100' })).toEqual({ oneWayMs: 50 })
    expect(linkFromEnv({ TESSERA_LINK_RTT_MS: '20', TESSERA_LINK_MBPS: '100' })).toEqual({ oneWayMs: 10, mbps: 100 })
    expect(() => linkFromEnv({ TESSERA_LINK_RTT_MS: 'fast' })).toThrow(ConfigError)
    expect(() => linkFromEnv({ TESSERA_LINK_MBPS: '0' })).toThrow(/TESSERA_LINK_MBPS=0: give a number of Mbit\/s, more than 0/)
  })
})
