/**
 * Optimistic verification through the relay itself: its HTTP API (the claim named in the
 * response, GET /api/claims/:id and its SSE events, webhooks, claims POSTed by a client outside
 * the relay) and its claims file, which outlives a restart. Relay and nodes in one process, real
 * libp2p on loopback; stories260K in two shards. The drills (every fault kind, bisection,
 * time-outs, 1000+ honest hop-steps) run on the in-process network: test/optimistic.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { buildModel } from '../host/model-store.js'
import { startRelay, type RunningRelay } from '../relay/relay.js'
import { startNode, type RunningNode } from '../native-node/node.js'
import { parseFault } from '../shared/node/fault.js'
import { mulberry32 } from '../shared/rng.js'
import { reference, stories } from './helpers/reference.js'
import { tempDir } from './helpers/paths.js'
import { api, waitFor } from './helpers/network.js'
import { createPeer } from '../host/libp2p.js'
import { createClient } from '../shared/client/client.js'
import { libp2pDialer, relayDirectory } from '../shared/route/directory.js'
import { claimToJson, httpClaimSink } from '../shared/optimistic/claim-sink.js'
import type { Claim } from '../shared/optimistic/board.js'

let model: string

async function network(seed: number): Promise<{ relay: RunningRelay; honest: RunningNode[]; stop: () => Promise<void> }> {
  const ledger = join(tempDir('opt-ledger'), 'ledger.sqlite')
  const relay = await startRelay({ httpPort: 0, p2pPort: 0, models: [model], ledger, joinStake: 100, client: { banMs: 1, random: mulberry32(seed) } })
  const honest: RunningNode[] = []
  for (const layers of [
    [0, 2],
    [0, 2],
    [2, 5],
    [2, 5]
  ] as Array<[number, number]>)
    honest.push(await startNode({ relay: relay.addr, model, layers }))
  await waitFor(async () => (await relay.client.network()).peers.length === 4)
  return {
    relay,
    honest,
    stop: async () => {
      for (const n of honest) await n.stop()
      await relay.stop()
    }
  }
}

/** POSTs a JSON body and returns the response, whatever its status. */
async function post(url: string, body: unknown): Promise<Response> {
  return await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
}

/** A loopback server that resolves `received` with the first JSON body POSTed to it. */
async function webhook(): Promise<{ url: string; received: Promise<any>; close: () => void }> {
  let resolve!: (v: any) => void
  const received = new Promise<any>((r) => {
    resolve = r
  })
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (d: Buffer) => {
      body += d.toString()
    })
    req.on('end', () => {
      res.end('ok')
      resolve(JSON.parse(body))
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/settled`, received, close: () => server.close() }
}

beforeAll(async () => {
  model = tempDir('opt-model')
  await buildModel(await stories(), model, { source: 'stories260K.bin', cuts: [2] })
})

describe('optimistic: a relay restart', () => {
  it('loses no pending claim: the next run resumes its audit, overturns it and sends the webhook', async () => {
    const hook = await webhook()
    const ledger = join(tempDir('opt-restart'), 'ledger.sqlite')
    const nodes: RunningNode[] = []
    let relay = await startRelay({ httpPort: 0, p2pPort: 0, models: [model], ledger, joinStake: 100 })
    try {
      // Only the faulty node serves [0, 2): no watcher, so its claim waits out the window unaudited…
      const faulty = await startNode({ relay: relay.addr, model, layers: [0, 2], fault: parseFault('wrong-weights') })
      nodes.push(faulty, await startNode({ relay: relay.addr, model, layers: [2, 5] }))
      await waitFor(async () => (await relay.client.network()).peers.length === 2)
      const c = reference()[0]
      const verification = { mode: 'optimistic', window: 60_000 }
      const r = await api(relay.httpUrl, '/v1/completions', { prompt: c.prompt, max_tokens: 3, verification, tessera_webhook: hook.url })
      const id = r.tessera.verification.claim as string
      expect((await api(relay.httpUrl, `/api/claims/${id}`)).status).toBe('pending')
      // …when the relay goes down, and its peers with it.
      for (const n of nodes.splice(0)) await n.stop()
      await relay.stop()

      relay = await startRelay({ httpPort: 0, p2pPort: 0, models: [model], ledger, joinStake: 100 })
      expect((await api(relay.httpUrl, `/api/claims/${id}`)).status).toBe('pending')
      for (const layers of [
        [0, 2],
        [0, 2],
        [2, 5]
      ] as Array<[number, number]>)
        nodes.push(await startNode({ relay: relay.addr, model, layers }))
      const s = await hook.received
      expect(s).toMatchObject({ claim: id, status: 'overturned' })
      // The accused is gone: it cannot answer the bisection, so the referee replays the whole hop.
      const accused = faulty.peerId
      expect(s.challenges[0]).toMatchObject({ accused, outcome: 'overturned', slashed: { peer: accused }, located: { timedOut: accused } })
      expect(await api(relay.httpUrl, `/api/claims/${id}`)).toMatchObject({ status: 'overturned', settlement: { status: 'overturned' } })
      expect(await relay.ledger.standing(faulty.peerId)).toMatchObject({ slashed: 1, stake: 50 })
    } finally {
      for (const n of nodes) await n.stop()
      await relay.stop()
      hook.close()
    }
  }, 120_000)
})

describe("optimistic with honest peers, through the relay's HTTP API", () => {
  let net: Awaited<ReturnType<typeof network>>
  beforeAll(async () => {
    net = await network(9)
  })
  afterAll(async () => {
    await net?.stop()
  })

  it('over HTTP: the response names the claim; GET /api/claims/:id and its SSE events tell how it settled', async () => {
    const c = reference()[0]
    const r = await api(net.relay.httpUrl, '/v1/completions', { prompt: c.prompt, max_tokens: 4, verification: { mode: 'optimistic', window: 300 } })
    const v = r.tessera.verification
    expect(v).toMatchObject({ mode: 'optimistic', window: 300, status: 'pending' })
    expect((await api(net.relay.httpUrl, `/api/claims/${v.claim}`)).status).toMatch(/pending|final/)
    const events: any[] = []
    const res = await fetch(`${net.relay.httpUrl}/api/claims/${v.claim}/events`)
    const text = await res.text()
    for (const line of text.split('\n')) if (line.startsWith('data:')) events.push(JSON.parse(line.slice(5)))
    expect(events).toHaveLength(1)
    expect(events[0]).toMatchObject({ claim: v.claim, status: 'final' })
    expect(await api(net.relay.httpUrl, `/api/claims/${v.claim}`)).toMatchObject({ status: 'final', settlement: { status: 'final' } })
    expect((await fetch(`${net.relay.httpUrl}/api/claims/nope`)).status).toBe(404)
    const stats = await api(net.relay.httpUrl, '/api/claims')
    expect(stats.final).toBeGreaterThanOrEqual(1)
    const bad = await post(`${net.relay.httpUrl}/v1/completions`, { prompt: [1], verification: { mode: 'optimistic', window: 5 } })
    expect(bad.status).toBe(400)
    expect((await bad.json()).error.message).toMatch(/window must be whole ms from 100/)
  })

  it('over HTTP with a webhook: the relay POSTs the settlement to it', async () => {
    const hook = await webhook()
    try {
      const c = reference()[1]
      const verification = { mode: 'optimistic', window: 200 }
      const r = await api(net.relay.httpUrl, '/v1/completions', { prompt: c.prompt, max_tokens: 3, verification, tessera_webhook: hook.url })
      const s = await hook.received
      expect(s).toMatchObject({ claim: r.tessera.verification.claim, status: 'final' })
      const bad = await post(`${net.relay.httpUrl}/v1/completions`, { prompt: [1], tessera_webhook: 'ftp://x' })
      expect((await bad.json()).error.message).toMatch(/tessera_webhook must be an http\(s\) URL/)
    } finally {
      hook.close()
    }
  })

  it('a client outside the relay posts its claim over HTTP; a claim with made-up inputs frames nobody', async () => {
    const node = await createPeer({ listen: [] })
    try {
      let posted: Claim | undefined
      const sink = httpClaimSink(net.relay.httpUrl)
      const client = createClient({
        dialer: libp2pDialer(node),
        directory: relayDirectory(node, net.relay.addr),
        board: {
          submit: async (claim, rerun) => {
            posted = claim
            return await sink.submit(claim, rerun)
          }
        }
      })
      const c = reference()[2]
      const gen = client.generate({ prompt: c.prompt, maxTokens: 5, verification: { mode: 'optimistic', window: 300 } })
      let r = await gen.next()
      while (r.done !== true) r = await gen.next()
      expect(r.value.tokens).toEqual(c.greedy.slice(0, 5))
      const s = await r.value.settlement!
      expect(s).toMatchObject({ claim: posted!.id, status: 'final', challenges: [] })
      expect(
        s.audits.filter((a) => !a.ok || a.watcher === undefined).map((a) => a.note),
        'every hop audited by a watcher, and matching'
      ).toEqual([])

      // The same receipts with other inputs, or a receipt changed: refused at once (400), never audited, never settled.
      const before = await api(net.relay.httpUrl, '/api/ledger')
      type Hop = Claim['hops'][number]
      const shifted = (h: Hop): Hop => ({ ...h, inputs: { tokens: Array.from((h.inputs as { tokens: number[] }).tokens, (t) => (t + 1) % 512) } })
      const forged = claimToJson({ ...posted!, id: `${posted!.id}-forged`, hops: posted!.hops.map((h, i) => (i === 0 ? shifted(h) : h)) })
      const res = await post(`${net.relay.httpUrl}/api/claims`, forged)
      expect(res.status).toBe(400)
      expect((await res.json()).error.message).toMatch(/the inputs do not match/)
      expect((await fetch(`${net.relay.httpUrl}/api/claims/${forged.id}`)).status).toBe(404)
      const other = claimToJson({ ...posted!, id: `${posted!.id}-other` })
      other.hops[1].entries[0].peer = other.hops[0].entries[0].peer
      const named = await post(`${net.relay.httpUrl}/api/claims`, other)
      expect(named.status).toBe(400)
      expect((await named.json()).error.message).toMatch(/is signed by .*, not by/)
      expect((await api(net.relay.httpUrl, '/api/ledger')).standings).toEqual(before.standings)
      const junk = await fetch(`${net.relay.httpUrl}/api/claims`, { method: 'POST', body: '{"id": 5}' })
      expect(junk.status).toBe(400)
      expect((await junk.json()).error.message).toMatch(/claim: id must be/)
      // One address posts at most a burst of claims, then a few a minute: 429 with Retry-After.
      let limited: Response | undefined
      for (let i = 0; i < 30 && limited === undefined; i++) {
        const r = await fetch(`${net.relay.httpUrl}/api/claims`, { method: 'POST', body: '{"id": 5}' })
        if (r.status === 429) limited = r
        else expect(r.status).toBe(400)
      }
      expect(limited?.status).toBe(429)
      expect(Number(limited!.headers.get('retry-after'))).toBeGreaterThan(0)
    } finally {
      await node.stop()
    }
  })
})
