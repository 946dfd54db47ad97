/**
 * Optimistic verification: one peer per hop, tokens at once (pending), watchers audit each hop
 * in one prefill within the claim's window. The drills run on the in-process network
 * (test/helpers/memory-net.ts: real handlers, onnxruntime, receipts signed by each peer's own
 * key) with the client and claim board wired as the relay wires its own: the SQLite ledger
 * re-checking the evidence, blacklisted peers left out of listings. stories260K in two shards;
 * [0,2) is served by two honest peers and a faulty one, [2,5) by two honest peers. What needs the
 * relay itself (its HTTP API, its claims file across a restart) is test/optimistic-http.test.ts.
 * Three honest peers on [0,2): two watch each claim, and the third is an independent referee
 * (a watcher that vouched for the accused may not referee: test/core/board.test.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Client } from '../shared/client/client.js'
import type { GenerationRequest, GenerationResult, Settlement } from '../shared/client/types.js'
import { reference } from './helpers/reference.js'
import { waitFor } from './helpers/network.js'
import { buildStories, modelRunners, type ModelRunners } from './helpers/memory-model.js'
import type { MemoryPeer } from './helpers/memory-net.js'
import { drillNetwork, type Drill } from './helpers/memory-drill.js'

let model: ModelRunners

async function run(client: Client, req: GenerationRequest): Promise<{ result: GenerationResult; statuses: Array<string | undefined> }> {
  const gen = client.generate(req)
  const statuses: Array<string | undefined> = []
  for (let r = await gen.next(); ; r = await gen.next()) {
    if (r.done === true) return { result: r.value, statuses }
    statuses.push(r.value.status)
  }
}

/** Five honest peers; client and board share one seeded draw and fast bans, as the relay's do. */
async function network(seed: number): Promise<Drill> {
  const d = await drillNetwork(model, {
    honest: [
      [0, 2],
      [0, 2],
      [0, 2],
      [2, 5],
      [2, 5]
    ],
    seed
  })
  await waitFor(async () => (await d.client.network()).peers.length === 5)
  return d
}

/** A faulty peer on [0,2), listed. */
async function addFaulty(d: Drill, fault: string): Promise<MemoryPeer> {
  const p = await d.add({ layers: [0, 2], fault })
  await waitFor(async () => (await d.client.network()).peers.some((x) => x.peer === p.id), 10_000)
  return p
}

beforeAll(async () => {
  model = await modelRunners(await buildStories([2]))
})
afterAll(async () => {
  await model?.dispose()
})

describe('optimistic: every fault kind is overturned within the window in 50 of 50 trials', () => {
  // copy-receipt never reaches a claim: the client refuses the result on arrival (test/faults.test.ts).
  // Where bisection over the per-layer commitments must end: the faulty block, or (when only the
  // output was swapped) the head, 2: every block of [0, 2) agrees.
  const kinds: Array<[string, number]> = [
    ['wrong-weights', 0],
    ['perturb=0.05', 0],
    ['skip-layer=1', 1],
    ['random-output', 2],
    ['replay', 2]
  ]
  for (const [i, [spec, faultyLayer]] of kinds.entries()) {
    it(`--fault ${spec}`, async () => {
      const net = await network(200 + i)
      const window = 5000
      const cases = reference()
      let faulty = await net.add({ layers: [0, 2], fault: spec })
      const background: Array<Promise<Settlement>> = []
      let trials = 0
      let overturned = 0
      try {
        await waitFor(async () => (await net.client.network()).peers.length === 6)
        for (let g = 0; trials < 50 && g < 400; g++) {
          if ((await net.ledger.standing(faulty.id)).blacklisted) {
            // Blacklisted (slashed as the accused or as a frivolous watcher): back under a new identity.
            await waitFor(async () => !(await net.client.network()).peers.some((p) => p.peer === faulty.id), 5_000)
            faulty.kill({ withdraw: true }) // stopped, as a node withdraws its record
            faulty = await addFaulty(net, spec)
          }
          const c = cases[g % cases.length]
          const n = Math.min(4, c.decisive_prefix)
          const { result, statuses } = await run(net.client, { prompt: c.prompt, maxTokens: n, verification: { mode: 'optimistic', window } })
          expect(statuses.every((s) => s === 'pending')).toBe(true)
          expect(result.verification).toMatchObject({ mode: 'optimistic', window, status: 'pending' })
          const served = result.verification.hops.find((h) => h.layers[0] === 0)!.ranBy.includes(faulty.id)
          if (!served) {
            background.push(result.settlement!)
            continue
          }
          trials++
          const s = await result.settlement!
          expect(s.status, `generation ${g}`).toBe('overturned')
          expect(s.afterMs).toBeLessThan(window)
          const ch = s.challenges.find((x) => x.outcome === 'overturned')!
          expect(ch).toMatchObject({ layers: [0, 2], accused: faulty.id, slashed: { peer: faulty.id } })
          expect(ch.challenger).not.toBe(ch.referee)
          expect(ch.located?.layer, ch.located?.note).toBe(faultyLayer)
          if (faultyLayer === 2) expect(ch.located?.note).toMatch(/every block's commitment agrees/)
          expect(ch.located!.reveals).toBeLessThanOrEqual(2 * (1 + Math.ceil(Math.log2(2))))
          // The referee re-executed from the hop's input up to that block (or the head), nothing a party handed it.
          expect(ch.reexecuted, ch.located?.note).toEqual({
            layers: Math.min(faultyLayer, 1) + 1,
            of: 2,
            what: faultyLayer === 2 ? 'head' : `block ${faultyLayer}`
          })
          // The corrected tokens are the reference.
          expect(s.tokens).toEqual(c.greedy.slice(0, n))
          overturned++
        }
        const rest = await Promise.all(background)
        const frivolous = rest.flatMap((s) => s.challenges).filter((c) => c.outcome === 'frivolous')
        // When the faulty node was the watcher, its challenge of an honest peer cost it stake.
        // (A lazy watcher whose own signed replay of the step agrees with the accused made a void challenge: nothing to slash.)
        for (const f of frivolous) if (!/the challenge is void/.test(f.reason)) expect(f.slashed?.amount, f.reason).toBeGreaterThan(0)
        // …settled, like the others, by the blocks up to the one bisection found, unless the faulty watcher
        // was gone by then (this test stops it once blacklisted) and the referee replayed the whole hop.
        for (const f of frivolous)
          expect(f.reexecuted?.what !== 'the whole hop' || /the watcher did not answer a reveal/.test(f.located?.note ?? ''), f.located?.note).toBe(true)
        expect(rest.every((s) => s.status === 'final')).toBe(true)
        const lost = `${frivolous.length} frivolous challenges by the faulty node lost its stake`
        console.log(`optimistic --fault ${spec}: overturned ${overturned} of ${trials} trials; ${lost}; ${rest.length} honest claims final`)
        expect(trials).toBe(50)
        expect(overturned).toBe(50)
        for (const h of net.honest) expect(await net.ledger.standing(h.id)).toMatchObject({ slashed: 0, stake: 100 })
        expect(await net.ledger.verifyAudit()).toEqual({ ok: true, badSeq: null })
      } finally {
        await Promise.allSettled(background)
        await net.stop()
      }
    }, 300_000)
  }
})

describe('optimistic: a dispute party that stops answering', () => {
  it('loses the bisection by time-out, and the referee still settles the claim', async () => {
    const net = await network(77)
    let faulty = await net.add({ layers: [0, 2], fault: 'skip-layer=1+mute' })
    const background: Array<Promise<Settlement>> = []
    try {
      await waitFor(async () => (await net.client.network()).peers.length === 6)
      let trials = 0
      for (let g = 0; trials < 3 && g < 100; g++) {
        if ((await net.ledger.standing(faulty.id)).blacklisted) {
          faulty.kill({ withdraw: true })
          faulty = await addFaulty(net, 'skip-layer=1+mute')
        }
        const c = reference()[g % 3]
        const { result } = await run(net.client, { prompt: c.prompt, maxTokens: 3, verification: { mode: 'optimistic', window: 15_000 } })
        if (!result.verification.hops[0].ranBy.includes(faulty.id)) {
          background.push(result.settlement!)
          continue
        }
        trials++
        const s = await result.settlement!
        expect(s.status).toBe('overturned')
        const ch = s.challenges[0]
        expect(ch.located).toMatchObject({ timedOut: faulty.id })
        expect(ch.located!.note).toMatch(/the accused did not answer a reveal/)
        // No block could be singled out: the referee replayed the whole hop.
        expect(ch.reexecuted).toEqual({ layers: 2, of: 2, what: 'the whole hop' })
        expect(ch.slashed?.peer).toBe(faulty.id)
        expect(s.tokens).toEqual(c.greedy.slice(0, 3))
      }
      expect(trials).toBe(3)
    } finally {
      await Promise.allSettled(background)
      await net.stop()
    }
  }, 180_000)
})

describe('optimistic with honest peers', () => {
  let net: Awaited<ReturnType<typeof network>>
  beforeAll(async () => {
    net = await network(9)
  })
  afterAll(async () => {
    await net?.stop()
  })

  it('nothing is overturned over 1000+ audited hop-steps, and claims are final when their window closes', async () => {
    const window = 400
    let audited = 0
    const settlements: Array<Promise<Settlement>> = []
    for (const c of [...reference(), ...reference()]) {
      const { result } = await run(net.client, { prompt: c.prompt, maxTokens: c.decisive_prefix, verification: { mode: 'optimistic', window } })
      expect(result.tokens).toEqual(c.greedy.slice(0, c.decisive_prefix))
      settlements.push(result.settlement!)
      audited += c.decisive_prefix * 2
    }
    const all = await Promise.all(settlements)
    for (const s of all) {
      expect(s.status).toBe('final')
      expect(s.challenges).toEqual([])
      expect(s.afterMs).toBeGreaterThanOrEqual(window)
      expect(
        s.audits.filter((a) => !a.ok || a.watcher === undefined).map((a) => a.note),
        'every hop audited by a watcher, and matching'
      ).toEqual([])
    }
    const mean = (all.reduce((t, s) => t + s.afterMs, 0) / all.length).toFixed(0)
    console.log(`optimistic, honest peers: ${all.length} claims, ${audited} hop-steps audited, 0 overturned; ${mean} ms mean to final (${window} ms window)`)
    expect(audited).toBeGreaterThanOrEqual(1000)
  }, 300_000)
})
