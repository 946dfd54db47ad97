/**
 * Failover through the in-process network: the real client, protocol handlers and
 * onnxruntime shards of stories260K, cut [0,1) [1,2) [2,3) [3,5). A peer killed while it
 * computes a step (before it answers) is replaced, the replacement is fed the slot's history,
 * and the generation still returns llama2.c's greedy ids.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildStories, modelRunners, type ModelRunners } from '../helpers/memory-model.js'
import { memoryNet, type MemoryNet, type MemoryPeer, type PeerSpec } from '../helpers/memory-net.js'
import { generateAll, memoryClient, TEST_TIMEOUTS } from '../helpers/memory-client.js'
import { reference } from '../helpers/reference.js'
import { InputError, NoRouteError } from '../../shared/errors.js'

/** The step (counted from 0, the prompt's prefill) during which the victim dies. */
const KILL_AT = 3

let model: ModelRunners
let net: MemoryNet
const c = reference()[0]
const n = c.decisive_prefix
const req = { prompt: c.prompt, maxTokens: n }

beforeAll(async () => {
  model = await modelRunners(await buildStories([1, 2, 3]))
})
afterAll(async () => {
  await model?.dispose()
})

/** A fresh network per test, so no test sees another's dead peers. */
const fresh = (): MemoryNet => {
  net?.stop()
  net = memoryNet(model)
  return net
}
const add = async (layers: [number, number], msPerLayer: number, o: Partial<PeerSpec> = {}): Promise<MemoryPeer> => await net.add({ layers, msPerLayer, ...o })
/**
 * The first of `peers` to start computing its step `step` dies then, before it answers; returns
 * who it was. (Lanes are drawn at random among the cheaper peers, so which one serves is not
 * fixed; for a peer there from the start, its own step count is the generation's.)
 */
function firstToReach(
  peers: MemoryPeer[],
  step = KILL_AT,
  kill = (p: MemoryPeer) => {
    p.kill()
  }
): () => MemoryPeer | undefined {
  let victim: MemoryPeer | undefined
  for (const p of peers)
    p.onStep = (served) => {
      if (served === step && victim === undefined) {
        victim = p
        kill(p)
      }
    }
  return () => victim
}
const rejection = async (p: Promise<unknown>): Promise<unknown> =>
  await p.then(
    () => undefined,
    (e: unknown) => e
  )
const opened = (peers: MemoryPeer[]): MemoryPeer[] => peers.filter((p) => p.handler.stats.opened > 0)

describe('failover (mode none)', () => {
  // The first hop replays token ids, the others hidden states.
  for (const [label, slot] of [
    ['the first hop', 0],
    ['a middle hop', 1],
    ['the last hop', 2]
  ] as const) {
    it(`kill -9 of ${label} mid-step: the other peer takes over with the history, same ids, the switch names both`, async () => {
      fresh()
      const ranges: Array<[number, number]> = [
        [0, 1],
        [1, 3],
        [3, 5]
      ]
      const pairs = await Promise.all(ranges.map(async (l) => [await add(l, 1), await add(l, 2)]))
      const victim = firstToReach(pairs[slot])
      const r = await generateAll(memoryClient(net), req)
      const dead = victim()!
      const spare = pairs[slot].find((p) => p !== dead)!
      expect(dead.alive).toBe(false)
      expect(r.tokens).toEqual(c.greedy.slice(0, n))
      expect(r.yielded).toEqual(r.tokens)
      expect(r.route.switches).toHaveLength(1)
      const sw = r.route.switches[0]
      expect(sw).toMatchObject({ step: KILL_AT, failed: dead.id, layers: ranges[slot] })
      expect(sw.reason, 'noticed by the reset, not a time-out').toMatch(/stream has been reset/)
      expect(sw.replacement.map((h) => [h.peer, h.layers])).toEqual([[spare.id, ranges[slot]]])
      expect(r.route.hops.map((h) => h.layers)).toEqual(ranges)
      expect(r.route.hops[slot].peer).toBe(spare.id)
      // The victim finished steps 0..KILL_AT-1; the spare got those and step KILL_AT in one prefill, then the rest one by one.
      expect(dead.handler.stats.steps).toBe(KILL_AT)
      expect(spare.handler.stats).toMatchObject({ opened: 1, steps: n - KILL_AT, tokens: c.prompt.length + n - 1 })
      // The other slots kept their one peer throughout.
      for (const [i, pair] of pairs.entries())
        if (i !== slot)
          expect(
            opened(pair).map((p) => p.id),
            `slot ${i}`
          ).toEqual([r.route.hops[i].peer])
    })
  }

  it('a replacement may split the slot over several peers when that is the cheapest way to cover it', async () => {
    fresh()
    const [a, b, cc] = [await add([0, 1], 1), await add([1, 3], 1), await add([3, 5], 1)]
    // No other peer serves [1, 3) whole; two serve its halves.
    const halves = [await add([1, 2], 1), await add([2, 3], 1)]
    firstToReach([b])
    const r = await generateAll(memoryClient(net), req)
    expect(r.tokens).toEqual(c.greedy.slice(0, n))
    expect(r.route.switches.map((s) => [s.failed, s.layers, s.replacement.map((h) => [h.peer, h.layers])])).toEqual([
      [
        b.id,
        [1, 3],
        [
          [halves[0].id, [1, 2]],
          [halves[1].id, [2, 3]]
        ]
      ]
    ])
    expect(r.route.hops.map((h) => h.peer)).toEqual([a.id, halves[0].id, halves[1].id, cc.id])
  })

  it('does not fail over a peer that blames the request (MALFORMED): the caller hears of it, nobody else is asked', async () => {
    fresh()
    const first = [await add([0, 1], 1), await add([0, 1], 1)]
    await add([1, 3], 1)
    await add([3, 5], 1)
    const client = memoryClient(net)
    const err = await rejection(generateAll(client, { prompt: [...c.prompt, 9999], maxTokens: 2 }))
    expect(err).toBeInstanceOf(InputError)
    expect((err as Error).message).toMatch(/token id 9999 is outside the vocabulary/)
    const asked = opened(first)
    expect(asked, 'one peer of [0, 1) was asked, and no other after it').toHaveLength(1)
    expect(asked[0].handler.stats).toMatchObject({ opened: 1, errors: 1, steps: 0 })
    // The client goes on serving good requests.
    expect((await generateAll(client, req)).tokens).toEqual(c.greedy.slice(0, n))
  })

  it('with no live peer for some layers: NoRouteError naming them, before the start or mid-generation', async () => {
    fresh()
    await add([0, 1], 1)
    await add([1, 3], 1)
    const last = [await add([3, 5], 1), await add([3, 5], 2)]
    // Mid-generation: the last hop's peers leave (their records withdrawn) while one computes step KILL_AT.
    const victim = firstToReach(last, KILL_AT, () => {
      for (const p of last) p.kill({ withdraw: true })
    })
    const mid = await rejection(generateAll(memoryClient(net), req))
    expect(victim()).toBeDefined()
    expect(mid).toBeInstanceOf(NoRouteError)
    expect((mid as Error).message).toMatch(/no live peer serves layers from 3 on \(needed \[3, 5\)\)/)
    const before = await rejection(generateAll(memoryClient(net), req))
    expect(before).toBeInstanceOf(NoRouteError)
    expect((before as Error).message).toMatch(/no model is fully served by the network; models seen: stories260K\.bin/)
  })

  it('with only dead peers still listed for some layers (killed, records not yet expired): fails, naming one it could not reach', async () => {
    fresh()
    await add([0, 1], 1)
    await add([1, 3], 1)
    const dead = [await add([3, 5], 1), await add([3, 5], 2)]
    for (const p of dead) p.kill()
    const err = await rejection(generateAll(memoryClient(net), req))
    expect(err).toBeInstanceOf(NoRouteError)
    const named = dead.filter((p) => (err as Error).message.includes(`peer ${p.id.slice(-8)}: dial failed twice`))
    expect(named, (err as Error).message).toHaveLength(1)
  })
})

describe('failover (redundant, k = 2)', () => {
  it("a lane killed mid-step is replaced by a peer serving exactly the slot's layers, not a cheaper split", async () => {
    fresh()
    const ends = [await add([0, 1], 1), await add([0, 1], 1), await add([3, 5], 1), await add([3, 5], 1)]
    // Two lanes and a slow spare serve [1, 3) whole; two fast peers only its halves. The spare
    // (20 + 2 × 30 ms) is too slow to be drawn as a lane and costs more than the halves together
    // (2 × (20 + 0.25)): only a replacement that must serve the slot's exact layers picks it.
    const whole = [await add([1, 3], 1), await add([1, 3], 1), await add([1, 3], 30)]
    const halves = [await add([1, 2], 0.25), await add([2, 3], 0.25)]
    const killed = firstToReach(whole)
    const r = await generateAll(memoryClient(net), { ...req, verification: { mode: 'redundant', k: 2 } })
    const victim = killed()
    expect(whole.slice(0, 2)).toContain(victim)
    expect(r.tokens).toEqual(c.greedy.slice(0, n))
    expect(r.route.switches).toHaveLength(1)
    const sw = r.route.switches[0]
    expect(sw).toMatchObject({ step: KILL_AT, failed: victim!.id, layers: [1, 3] })
    expect(sw.replacement.map((h) => [h.peer, h.layers])).toEqual([[whole[2].id, [1, 3]]])
    expect(
      net.dials.filter((d) => halves.some((h) => h.id === d.peer)),
      'the halves were never asked'
    ).toEqual([])
    // Every step of every slot was run twice and agreed; [1, 3) was run by all three whole peers.
    expect(r.verification).toMatchObject({ mode: 'redundant', k: 2, checks: 3 * n, mismatches: 0, faults: [] })
    const mid = r.verification.hops.find((h) => h.layers.join() === '1,3')!
    expect(new Set([...mid.ranBy, ...mid.checkedBy])).toEqual(new Set(whole.map((p) => p.id)))
    expect(mid.verdicts.agreed).toBe(n)
    for (const p of ends) expect(p.handler.stats.steps).toBe(n)
  })
})

describe('step deadlines from measured speed', () => {
  it('a peer late twice in a row where its speed predicts far less is failed over; one late step is forgiven', async () => {
    fresh()
    const [first, stall, spare, last] = [await add([0, 1], 1), await add([1, 3], 0.1), await add([1, 3], 5), await add([3, 5], 1)]
    // Late (over lateMs, under the deadline) on steps 2 and 4 only: never twice in a row, no failover.
    stall.onStep = async (served) => {
      if (served === 2 || served === 4) await new Promise((resolve) => setTimeout(resolve, 300))
    }
    const timeouts = { ...TEST_TIMEOUTS, minStepMs: 5_000, lateMs: 200 }
    const once = await generateAll(memoryClient(net, { timeouts }), req)
    expect(once.tokens).toEqual(c.greedy.slice(0, n))
    expect(once.route.switches).toEqual([])
    // Late on every decode step: failed over on the second, the spare takes the history.
    stall.onStep = async (served) => {
      if (served > 0) await new Promise((resolve) => setTimeout(resolve, 300))
    }
    const r = await generateAll(memoryClient(net, { timeouts }), req)
    expect(r.tokens).toEqual(c.greedy.slice(0, n))
    expect(r.route.switches).toHaveLength(1)
    expect(r.route.switches[0]).toMatchObject({ step: 2, failed: stall.id, layers: [1, 3] })
    expect(r.route.switches[0].reason).toMatch(/two steps in a row late/)
    expect(r.route.hops.map((h) => h.peer)).toEqual([first.id, spare.id, last.id])
  })
})

describe('a flood of dead records', () => {
  it('does not use up the retries: twelve listed peers that cannot be dialled, one that can, the generation succeeds', async () => {
    fresh()
    const dead = await Promise.all(Array.from({ length: 12 }, async () => await add([1, 3], 0.1)))
    for (const d of dead) d.kill() // still listed: nobody withdrew them
    const [first, live, last] = [await add([0, 1], 1), await add([1, 3], 1), await add([3, 5], 1)]
    const r = await generateAll(memoryClient(net), req)
    expect(r.tokens).toEqual(c.greedy.slice(0, n))
    expect(r.route.hops.map((h) => h.peer)).toEqual([first.id, live.id, last.id])
  })
})
