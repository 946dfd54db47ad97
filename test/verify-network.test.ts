/**
 * Verification as operators run it: `tessera relay` (with its SQLite ledger) and `tessera node`
 * processes, one of them started with `--fault random-output`; requests choose `verification`
 * through the OpenAI API. The faulty peer is caught and slashed, the answer is still the
 * reference, and the ledger outlives a relay restart with its audit chain intact.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { buildModel } from '../host/model-store.js'
import { reference, stories } from './helpers/reference.js'
import { tempDir } from './helpers/paths.js'
import { api, readSse, spawnTessera, startNetwork, type Proc, type TestNetwork } from './helpers/network.js'

let model: string
let ledger: string
let net: TestNetwork
let faulty: Proc
let restarted: Proc | undefined

const complete = async (http: string, body: object): Promise<Response> =>
  await fetch(`${http}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })

beforeAll(async () => {
  model = tempDir('verify-net-model')
  await buildModel(await stories(), model, { source: 'stories260K.bin', cuts: [2] })
  ledger = join(tempDir('verify-net-ledger'), 'ledger.sqlite')
  net = await startNetwork(model, ['0-2', '0-2', '2-5', '2-5'], { ledger })
  faulty = await net.addNode('0-2', ['--fault', 'random-output'])
}, 120_000)
afterAll(async () => {
  await net?.stop()
  restarted?.proc.kill('SIGKILL')
})

describe('verification over the HTTP API, with a faulty node in the network', () => {
  it('redundant: the answer is the reference, the faulty peer is caught, slashed and named in the response', async () => {
    const peer = faulty.ready.peer as string
    const cases = reference()
    let caught: any
    for (let i = 0; i < 20 && caught === undefined; i++) {
      const c = cases[i % cases.length]
      const n = Math.min(6, c.decisive_prefix)
      const r = await api(net.http, '/v1/completions', { prompt: c.prompt, max_tokens: n, verification: 'redundant' })
      const t = r.tessera
      expect(t.tokens).toEqual(c.greedy.slice(0, n))
      expect(t.verification).toMatchObject({ mode: 'redundant', k: 2 })
      expect(t.verification.checks).toBe(n * 2) // every step of both hops compared
      for (const h of t.verification.hops) {
        expect(h.ranBy.length + h.checkedBy.length).toBeGreaterThanOrEqual(2)
        expect(h.verdicts.unchecked).toBe(0)
      }
      // Agreeing peers stay well inside the thresholds.
      expect(t.verification.closest.minOverlap).toBeGreaterThanOrEqual(0.75)
      caught = t.verification.faults.find((f: { accused: string }) => f.accused === peer)
      if (caught !== undefined) {
        expect(caught).toMatchObject({ layers: [0, 2], slashed: true, amount: 50 })
        expect(caught.witnesses).toHaveLength(2)
        const hop = t.verification.hops.find((h: { layers: number[] }) => h.layers[0] === 0)
        expect(hop.verdicts.overruled).toBeGreaterThanOrEqual(1)
      }
    }
    expect(caught, 'the faulty peer was drawn into a lane within 20 generations').toBeDefined()

    const l = await api(net.http, '/api/ledger')
    expect(l.chainOk).toBe(true)
    expect(l.standings.find((s: { peer: string }) => s.peer === peer)).toMatchObject({ stake: 50, slashed: 1 })
    const slash = l.audit.find((e: { kind: string; peer: string }) => e.kind === 'slash' && e.peer === peer)
    expect(slash.data.reason).toMatch(/the relay re-ran layers \[0,2\)/)
    expect(slash.data.detail.witnesses).toEqual(caught.witnesses)
    for (const n of net.nodes.filter((x) => x !== faulty)) {
      expect(l.standings.find((s: { peer: string }) => s.peer === n.ready.peer)).toMatchObject({ stake: 100, slashed: 0, blacklisted: false })
    }
  })

  it('streams the verdict per hop, and spot mode reports what it sampled', async () => {
    const c = reference()[1]
    const res = await complete(net.http, { prompt: c.prompt, max_tokens: 4, stream: true, verification: { mode: 'redundant', k: 2 } })
    const chunks = await readSse(res, () => {})
    const hops = chunks.filter((ch) => ch.tessera?.token !== undefined).map((ch) => ch.tessera.hops)
    expect(hops).toHaveLength(4)
    for (const step of hops) {
      for (const h of step) {
        expect(['agreed', 'overruled']).toContain(h.verdict)
        expect(h.checkedBy.length).toBeGreaterThanOrEqual(1)
      }
    }
    const spot = await api(net.http, '/v1/completions', { prompt: c.prompt, max_tokens: 4, verification: { mode: 'spot', p: 1 } })
    expect(spot.tessera.verification).toMatchObject({ mode: 'spot', p: 1 })
    expect(spot.tessera.verification.checks).toBe(8) // p = 1: every step of both hops re-run
    const bad = await complete(net.http, { prompt: c.prompt, verification: { mode: 'redundant', k: 9 } })
    expect(bad.status).toBe(400)
    expect((await bad.json()).error.message).toMatch(/k must be an integer from 2 to 5/)
  })

  it('an accusation without valid evidence changes nothing but the log', async () => {
    const honest = net.nodes[0].ready.peer as string
    const before = await api(net.http, '/api/ledger')
    const r = await api(net.http, '/api/evidence', { kind: 'redundant', accused: honest, receipts: ['AAEC', 'AwQF', 'BgcI'], reporter: 'mallory' })
    expect(r.slashed).toBe(false)
    expect(r.reason).toMatch(/invalid evidence: receipt rejected/)
    const after = await api(net.http, '/api/ledger')
    expect(after.standings).toEqual(before.standings)
    expect(after.audit.at(-1)).toMatchObject({ kind: 'reject', peer: honest, data: { reporter: 'mallory' } })
    const malformed = await fetch(`${net.http}/api/evidence`, { method: 'POST', body: '{"receipts": 5}' })
    expect(malformed.status).toBe(400)
  })

  it('the ledger survives a relay restart and its audit chain verifies from genesis', async () => {
    const before = await api(net.http, '/api/ledger')
    net.relay.proc.kill('SIGKILL') // no clean shutdown: committed transactions must survive anyway
    await new Promise((resolve) => net.relay.proc.once('exit', resolve))
    restarted = await spawnTessera(['relay', '--port', '0', '--p2p-port', '0', '--model', model, '--ledger-file', ledger, '--join-stake', '100'])
    const http = restarted.ready.http as string
    const after = await api(http, '/api/ledger')
    expect(after.chainOk).toBe(true)
    expect(after.standings).toEqual(before.standings)
    expect(after.audit).toEqual(before.audit)
  })
})
