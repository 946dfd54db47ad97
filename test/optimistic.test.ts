/**
 * Optimistic verification: one peer per hop, tokens at once (pending), watchers audit each hop
 * in one prefill within the claim's window. Relay (claim board, SQLite ledger) and nodes in one
 * process, real libp2p on loopback. stories260K in two shards; [0,2) is served by two honest
 * nodes and a faulty one, [2,5) by two honest nodes.
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
import type { GenerationRequest, GenerationResult, Settlement } from '../shared/client/types.js'
import { reference, stories } from './helpers/reference.js'
import { tempDir } from './helpers/paths.js'
import { api, waitFor } from './helpers/network.js'
import { createPeer } from '../host/libp2p.js'
import { createClient } from '../shared/client/client.js'
import { libp2pDialer, relayDirectory } from '../shared/route/directory.js'
import { claimToJson, httpClaimSink } from '../shared/optimistic/claim-sink.js'
import type { Claim } from '../shared/optimistic/board.js'

let model: string

async function run (relay: RunningRelay, req: GenerationRequest): Promise<{ result: GenerationResult, statuses: Array<string | undefined> }> {
  const gen = relay.client.generate(req)
  const statuses: Array<string | undefined> = []
  for (let r = await gen.next(); ; r = await gen.next()) {
    if (r.done === true) return { result: r.value, statuses }
    statuses.push(r.value.status)
  }
}

async function network (seed: number): Promise<{ relay: RunningRelay, honest: RunningNode[], stop: () => Promise<void> }> {
  const relay = await startRelay({ httpPort: 0, p2pPort: 0, models: [model], ledger: join(tempDir('opt-ledger'), 'ledger.sqlite'), client: { banMs: 1, random: mulberry32(seed) } })
  const honest: RunningNode[] = []
  for (const layers of [[0, 2], [0, 2], [2, 5], [2, 5]] as Array<[number, number]>) honest.push(await startNode({ relay: relay.addr, model, layers }))
  await waitFor(async () => (await relay.client.network()).peers.length === 4)
  return { relay, honest, stop: async () => { for (const n of honest) await n.stop(); await relay.stop() } }
}

/** A loopback server that resolves `received` with the first JSON body POSTed to it. */
async function webhook (): Promise<{ url: string, received: Promise<any>, close: () => void }> {
  let resolve!: (v: any) => void
  const received = new Promise<any>((r) => { resolve = r })
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (d: Buffer) => { body += d.toString() })
    req.on('end', () => { res.end('ok'); resolve(JSON.parse(body)) })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/settled`, received, close: () => server.close() }
}

beforeAll(async () => {
  model = tempDir('opt-model')
  await buildModel(await stories(), model, { source: 'stories260K.bin', cuts: [2] })
})

describe('optimistic: every fault kind is overturned within the window in 50 of 50 trials', () => {
  // copy-receipt never reaches a claim: the client refuses the result on arrival (test/faults.test.ts).
  // Where bisection over the per-layer commitments must end: the faulty block, or (when only the
  // output was swapped) the head, 2: every block of [0, 2) agrees.
  const kinds: Array<[string, number]> = [['wrong-weights', 0], ['perturb=0.05', 0], ['skip-layer=1', 1], ['random-output', 2], ['replay', 2]]
  for (const [i, [spec, faultyLayer]] of kinds.entries()) {
    it(`--fault ${spec}`, async () => {
      const net = await network(200 + i)
      const window = 5000
      const cases = reference()
      let faulty = await startNode({ relay: net.relay.addr, model, layers: [0, 2], fault: parseFault(spec) })
      const background: Array<Promise<Settlement>> = []
      let trials = 0
      let overturned = 0
      try {
        await waitFor(async () => (await net.relay.client.network()).peers.length === 5)
        for (let g = 0; trials < 50 && g < 400; g++) {
          if ((await net.relay.ledger.standing(faulty.peerId)).blacklisted) {
            // Blacklisted (slashed as the accused or as a frivolous watcher): back under a new identity.
            await waitFor(async () => !(await net.relay.client.network()).peers.some((p) => p.peer === faulty.peerId), 5_000)
            await faulty.stop()
            faulty = await startNode({ relay: net.relay.addr, model, layers: [0, 2], fault: parseFault(spec) })
            await waitFor(async () => (await net.relay.client.network()).peers.some((p) => p.peer === faulty.peerId), 10_000)
          }
          const c = cases[g % cases.length]
          const n = Math.min(4, c.decisive_prefix)
          const { result, statuses } = await run(net.relay, { prompt: c.prompt, maxTokens: n, verification: { mode: 'optimistic', window } })
          expect(statuses.every((s) => s === 'pending')).toBe(true)
          expect(result.verification).toMatchObject({ mode: 'optimistic', window, status: 'pending' })
          const served = result.verification.hops.find((h) => h.layers[0] === 0)!.ranBy.includes(faulty.peerId)
          if (!served) { background.push(result.settlement!); continue }
          trials++
          const s = await result.settlement!
          expect(s.status, `generation ${g}`).toBe('overturned')
          expect(s.afterMs).toBeLessThan(window)
          const ch = s.challenges.find((x) => x.outcome === 'overturned')!
          expect(ch).toMatchObject({ layers: [0, 2], accused: faulty.peerId, slashed: { peer: faulty.peerId } })
          expect(ch.challenger).not.toBe(ch.referee)
          expect(ch.located?.layer, ch.located?.note).toBe(faultyLayer)
          if (faultyLayer === 2) expect(ch.located?.note).toMatch(/every block's commitment agrees/)
          expect(ch.located!.reveals).toBeLessThanOrEqual(2 * (1 + Math.ceil(Math.log2(2))))
          // The referee re-executed that one block (or the head), not the hop's two.
          expect(ch.reexecuted, ch.located?.note).toEqual({ layers: 1, of: 2, what: faultyLayer === 2 ? 'head' : `block ${faultyLayer}` })
          // The corrected tokens are the reference.
          expect(s.tokens).toEqual(c.greedy.slice(0, n))
          overturned++
        }
        const rest = await Promise.all(background)
        const frivolous = rest.flatMap((s) => s.challenges).filter((c) => c.outcome === 'frivolous')
        // When the faulty node was the watcher, its challenge of an honest peer cost it stake.
        for (const f of frivolous) expect(f.slashed?.amount).toBeGreaterThan(0)
        // …settled, like the others, by one block re-executed, unless the faulty watcher was gone by
        // then (this test stops it once blacklisted) and the referee replayed the whole hop.
        for (const f of frivolous) expect(f.reexecuted?.layers === 1 || /could not be handed over/.test(f.located?.note ?? ''), f.located?.note).toBe(true)
        expect(rest.every((s) => s.status === 'final')).toBe(true)
        console.log(`optimistic --fault ${spec}: overturned ${overturned} of ${trials} trials; ${frivolous.length} frivolous challenges by the faulty node lost its stake; ${rest.length} honest claims final`)
        expect(trials).toBe(50)
        expect(overturned).toBe(50)
        for (const h of net.honest) expect(await net.relay.ledger.standing(h.peerId)).toMatchObject({ slashed: 0, stake: 100 })
        expect(await net.relay.ledger.verifyAudit()).toEqual({ ok: true, badSeq: null })
      } finally {
        await Promise.allSettled(background)
        await faulty.stop()
        await net.stop()
      }
    }, 300_000)
  }
})

describe('optimistic: a relay restart', () => {
  it('loses no pending claim: the next run resumes its audit, overturns it and sends the webhook', async () => {
    const hook = await webhook()
    const ledger = join(tempDir('opt-restart'), 'ledger.sqlite')
    const nodes: RunningNode[] = []
    let relay = await startRelay({ httpPort: 0, p2pPort: 0, models: [model], ledger })
    try {
      // Only the faulty node serves [0, 2): no watcher, so its claim waits out the window unaudited…
      const faulty = await startNode({ relay: relay.addr, model, layers: [0, 2], fault: parseFault('wrong-weights') })
      nodes.push(faulty, await startNode({ relay: relay.addr, model, layers: [2, 5] }))
      await waitFor(async () => (await relay.client.network()).peers.length === 2)
      const c = reference()[0]
      const r = await api(relay.httpUrl, '/v1/completions', { prompt: c.prompt, max_tokens: 3, verification: { mode: 'optimistic', window: 60_000 }, tessera_webhook: hook.url })
      const id = r.tessera.verification.claim as string
      expect((await api(relay.httpUrl, `/api/claims/${id}`)).status).toBe('pending')
      // …when the relay goes down, and its peers with it.
      for (const n of nodes.splice(0)) await n.stop()
      await relay.stop()

      relay = await startRelay({ httpPort: 0, p2pPort: 0, models: [model], ledger })
      expect((await api(relay.httpUrl, `/api/claims/${id}`)).status).toBe('pending')
      for (const layers of [[0, 2], [0, 2], [2, 5]] as Array<[number, number]>) nodes.push(await startNode({ relay: relay.addr, model, layers }))
      const s = await hook.received
      expect(s).toMatchObject({ claim: id, status: 'overturned' })
      // The accused is gone: it cannot answer the bisection, so the referee replays the whole hop.
      expect(s.challenges[0]).toMatchObject({ accused: faulty.peerId, outcome: 'overturned', slashed: { peer: faulty.peerId }, located: { timedOut: faulty.peerId } })
      expect(await api(relay.httpUrl, `/api/claims/${id}`)).toMatchObject({ status: 'overturned', settlement: { status: 'overturned' } })
      expect(await relay.ledger.standing(faulty.peerId)).toMatchObject({ slashed: 1, stake: 50 })
    } finally {
      for (const n of nodes) await n.stop()
      await relay.stop()
      hook.close()
    }
  }, 120_000)
})

describe('optimistic: a dispute party that stops answering', () => {
  it('loses the bisection by time-out, and the referee still settles the claim', async () => {
    const net = await network(77)
    let faulty = await startNode({ relay: net.relay.addr, model, layers: [0, 2], fault: parseFault('skip-layer=1+mute') })
    const background: Array<Promise<Settlement>> = []
    try {
      await waitFor(async () => (await net.relay.client.network()).peers.length === 5)
      let trials = 0
      for (let g = 0; trials < 3 && g < 100; g++) {
        if ((await net.relay.ledger.standing(faulty.peerId)).blacklisted) {
          await faulty.stop()
          faulty = await startNode({ relay: net.relay.addr, model, layers: [0, 2], fault: parseFault('skip-layer=1+mute') })
          await waitFor(async () => (await net.relay.client.network()).peers.some((p) => p.peer === faulty.peerId), 10_000)
        }
        const c = reference()[g % 3]
        const { result } = await run(net.relay, { prompt: c.prompt, maxTokens: 3, verification: { mode: 'optimistic', window: 15_000 } })
        if (!result.verification.hops[0].ranBy.includes(faulty.peerId)) { background.push(result.settlement!); continue }
        trials++
        const s = await result.settlement!
        expect(s.status).toBe('overturned')
        const ch = s.challenges[0]
        expect(ch.located).toMatchObject({ timedOut: faulty.peerId })
        expect(ch.located!.note).toMatch(/the accused did not answer a reveal/)
        // No block could be singled out: the referee replayed the whole hop.
        expect(ch.reexecuted).toEqual({ layers: 2, of: 2, what: 'the whole hop' })
        expect(ch.slashed?.peer).toBe(faulty.peerId)
        expect(s.tokens).toEqual(c.greedy.slice(0, 3))
      }
      expect(trials).toBe(3)
    } finally {
      await Promise.allSettled(background)
      await faulty.stop()
      await net.stop()
    }
  }, 180_000)
})

describe('optimistic with honest peers', () => {
  let net: Awaited<ReturnType<typeof network>>
  beforeAll(async () => { net = await network(9) })
  afterAll(async () => { await net?.stop() })

  it('nothing is overturned over 1000+ audited hop-steps, and claims are final when their window closes', async () => {
    const window = 400
    let audited = 0
    const settlements: Array<Promise<Settlement>> = []
    for (const c of [...reference(), ...reference()]) {
      const { result } = await run(net.relay, { prompt: c.prompt, maxTokens: c.decisive_prefix, verification: { mode: 'optimistic', window } })
      expect(result.tokens).toEqual(c.greedy.slice(0, c.decisive_prefix))
      settlements.push(result.settlement!)
      audited += c.decisive_prefix * 2
    }
    const all = await Promise.all(settlements)
    for (const s of all) {
      expect(s.status).toBe('final')
      expect(s.challenges).toEqual([])
      expect(s.afterMs).toBeGreaterThanOrEqual(window)
      expect(s.audits.filter((a) => !a.ok || a.watcher === undefined).map((a) => a.note), 'every hop audited by a watcher, and matching').toEqual([])
    }
    console.log(`optimistic, honest peers: ${all.length} claims, ${audited} hop-steps audited, 0 overturned; mean time to final ${(all.reduce((t, s) => t + s.afterMs, 0) / all.length).toFixed(0)} ms for a ${window} ms window`)
    expect(audited).toBeGreaterThanOrEqual(1000)
  }, 300_000)

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
    const bad = await fetch(`${net.relay.httpUrl}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: [1], verification: { mode: 'optimistic', window: 5 } }) })
    expect(bad.status).toBe(400)
    expect((await bad.json()).error.message).toMatch(/window must be whole ms from 100/)
  })

  it('over HTTP with a webhook: the relay POSTs the settlement to it', async () => {
    const hook = await webhook()
    try {
      const c = reference()[1]
      const r = await api(net.relay.httpUrl, '/v1/completions', { prompt: c.prompt, max_tokens: 3, verification: { mode: 'optimistic', window: 200 }, tessera_webhook: hook.url })
      const s = await hook.received
      expect(s).toMatchObject({ claim: r.tessera.verification.claim, status: 'final' })
      const bad = await fetch(`${net.relay.httpUrl}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: [1], tessera_webhook: 'ftp://x' }) })
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
        board: { submit: async (claim, rerun) => { posted = claim; return await sink.submit(claim, rerun) } }
      })
      const c = reference()[2]
      const gen = client.generate({ prompt: c.prompt, maxTokens: 5, verification: { mode: 'optimistic', window: 300 } })
      let r = await gen.next()
      while (r.done !== true) r = await gen.next()
      expect(r.value.tokens).toEqual(c.greedy.slice(0, 5))
      const s = await r.value.settlement!
      expect(s).toMatchObject({ claim: posted!.id, status: 'final', challenges: [] })
      expect(s.audits.filter((a) => !a.ok || a.watcher === undefined).map((a) => a.note), 'every hop audited by a watcher, and matching').toEqual([])

      // The same receipts with other inputs: the board refuses to audit against them.
      const before = await api(net.relay.httpUrl, '/api/ledger')
      const forged = claimToJson({ ...posted!, id: `${posted!.id}-forged`, hops: posted!.hops.map((h, i) => i === 0 ? { ...h, inputs: { tokens: Array.from((h.inputs as { tokens: number[] }).tokens, (t) => (t + 1) % 512) } } : h) })
      const res = await fetch(`${net.relay.httpUrl}/api/claims`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(forged) })
      expect(res.status).toBe(202)
      const text = await (await fetch(`${net.relay.httpUrl}/api/claims/${forged.id}/events`)).text()
      const settled = JSON.parse(text.split('\n').find((l) => l.startsWith('data:'))!.slice(5))
      expect(settled.status).toBe('final')
      expect(settled.challenges).toEqual([])
      expect(settled.audits[0].note).toMatch(/the inputs do not match/)
      expect((await api(net.relay.httpUrl, '/api/ledger')).standings).toEqual(before.standings)
      const junk = await fetch(`${net.relay.httpUrl}/api/claims`, { method: 'POST', body: '{"id": 5}' })
      expect(junk.status).toBe(400)
      expect((await junk.json()).error.message).toMatch(/claim: id must be/)
    } finally {
      await node.stop()
    }
  })
})
