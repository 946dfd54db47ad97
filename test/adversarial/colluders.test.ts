/**
 * A colluding pair on the real relay and nodes: two `tessera node --fault wrong-weights=7`
 * processes (the same wrong weights, so their outputs agree with each other) beside three honest
 * nodes on one slot, all staked. Lanes get unlinkable session ids, so the pair cannot tell when
 * its partner runs beside it; the relay re-executes every disputed hop before anyone is slashed.
 * Under `redundant` (k = 2 with audits, k = 3), `spot` and `optimistic`, every generation returns
 * the reference tokens or a clear VERIFICATION_FAILED, an optimistic claim never settles `final`
 * on wrong tokens, and no honest node is ever slashed. A pair once blacklisted comes back under
 * new keys, as real cheaters would.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildModel } from '../../host/model-store.js'
import { reference, stories } from '../helpers/reference.js'
import { tempDir } from '../helpers/paths.js'
import { api, startNetwork, waitFor, type Proc, type TestNetwork } from '../helpers/network.js'

let net: TestNetwork
let honest: string[]
let pair: Proc[] = []

interface Standing {
  peer: string
  slashed: number
  blacklisted: boolean
}
const standings = async (): Promise<Standing[]> => (await api(net.http, '/api/ledger')).standings

/** A new pair of colluders on the slot (fresh keys, staked on joining): the last one is caught and banned by now. */
async function freshPair(): Promise<void> {
  for (const p of pair) p.proc.kill('SIGKILL')
  pair = [await net.addNode('0-5', ['--fault', 'wrong-weights=7']), await net.addNode('0-5', ['--fault', 'wrong-weights=7'])]
  await waitFor(async () => (await api(net.http, '/api/network')).peers.length === 5)
}

beforeAll(async () => {
  const model = tempDir('colluders-model')
  await buildModel(await stories(), model, { source: 'stories260K.bin', cuts: [2] })
  net = await startNetwork(model, ['0-5', '0-5', '0-5'])
  honest = net.nodes.map((n) => n.ready.peer)
}, 120_000)
afterAll(async () => {
  await net?.stop()
})

async function complete(body: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${net.http}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  return { status: res.status, json: await res.json() }
}

/** How a claim settled, once it has (the events stream ends with the settlement). */
async function settled(claim: string): Promise<any> {
  const text = await (await fetch(`${net.http}/api/claims/${claim}/events`)).text()
  const events = text
    .split('\n')
    .filter((l) => l.startsWith('data:'))
    .map((l) => JSON.parse(l.slice(5)))
  return await api(net.http, `/api/claims/${claim}`).then((c) => ({ ...c, events }))
}

describe('a colluding pair with the same wrong weights on one slot, on the real relay', () => {
  for (const [label, verification] of [
    ['redundant k = 2, audit 1', { mode: 'redundant', k: 2, audit: 1 }],
    ['redundant k = 3', { mode: 'redundant', k: 3 }],
    ['spot p = 1', { mode: 'spot', p: 1 }],
    ['optimistic', { mode: 'optimistic', window: 2000 }]
  ] as const) {
    it(`${label}: reference tokens or VERIFICATION_FAILED, never wrong tokens as ok; no honest node slashed`, async () => {
      await freshPair()
      const cases = reference()
      const tally = { right: 0, refused: 0, overturned: 0, unverified: 0, involved: 0 }
      const involved = (...seen: unknown[]): boolean => pair.some((p) => seen.some((x) => JSON.stringify(x).includes(p.ready.peer)))
      for (let g = 0; g < 4; g++) {
        const c = cases[g % cases.length]
        const n = Math.min(6, c.decisive_prefix)
        const want = c.greedy.slice(0, n)
        const r = await complete({ prompt: c.prompt, max_tokens: n, verification })
        if (r.status !== 200) {
          // Refused: caught, or the circuit breaker pausing after repeated catches.
          expect(r.json.error?.code, JSON.stringify(r.json)).toMatch(/^(VERIFICATION_FAILED|CIRCUIT_OPEN)$/)
          tally.refused++
          tally.involved++ // only a colluder's output can be refused
        } else if (verification.mode === 'optimistic') {
          // Tokens come at once, marked pending; only the settlement may call them final.
          expect(r.json.tessera.verification.status).toBe('pending')
          const s = await settled(r.json.tessera.verification.claim)
          expect(s.status).toBe(s.settlement.status)
          if (involved(r.json, s)) tally.involved++
          if (s.status === 'final') {
            expect(r.json.tessera.tokens, `generation ${g} settled final`).toEqual(want)
            tally.right++
          } else if (s.status === 'overturned') {
            expect(s.settlement.tokens, `generation ${g} corrected`).toEqual(want)
            tally.overturned++
          } else {
            expect(s.status).toBe('unverified')
            tally.unverified++
          }
        } else {
          expect(r.json.tessera.tokens, `generation ${g}: ${JSON.stringify(r.json.tessera.verification)}`).toEqual(want)
          tally.right++
          if (involved(r.json)) tally.involved++
        }
        for (const s of await standings()) if (honest.includes(s.peer)) expect(s, 'an honest node').toMatchObject({ slashed: 0, blacklisted: false })
      }
      const caught = (await standings()).filter((s) => s.slashed > 0 && !honest.includes(s.peer)).length
      console.log(`${label}: ${JSON.stringify(tally)} of 4; colluder identities slashed so far ${caught}`)
      // Drawn at random, weighted by reputation: a colluder ran or checked in at least one of the 4 (all but certain).
      expect(tally.involved).toBeGreaterThan(0)
    }, 180_000)
  }
})
