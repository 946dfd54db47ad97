/**
 * Routing on hand-made capability records: which chain of peers findRoute picks, what a hop
 * costs, who may serve a range, and which model a request gets. No network, no model.
 */
import { describe, expect, it } from 'vitest'
import { coverage, DEFAULT_COSTS, findRoute, hopCost, serversOf, type RouteCosts } from '../../shared/route/route.js'
import { chooseModel, type ModelView } from '../../shared/route/model.js'
import { InputError, NoRouteError } from '../../shared/errors.js'
import type { Capability } from '../../shared/protocol/capability.js'
import { mulberry32 } from '../../shared/rng.js'

/** A record serving `layers` with shard boundaries `bounds` (default: one shard). */
function cap(peer: string, layers: [number, number], o: { ms?: number; bounds?: number[]; kvRoom?: number; root?: string } = {}): Capability {
  return {
    peer,
    addrs: [],
    device: 'cpu',
    memory: 1 << 30,
    msPerLayer: o.ms ?? 1,
    model: 'm',
    root: o.root ?? 'r',
    modelLayers: 5,
    layers,
    shardBounds: o.bounds ?? layers,
    kvRoom: o.kvRoom ?? 1000,
    sessions: 0,
    version: '0',
    issued: 0,
    expires: Infinity
  }
}

const costs = (o: Partial<RouteCosts> = {}): RouteCosts => ({ ...DEFAULT_COSTS, ...o })
const shape = (route: Array<{ peer: Capability; layers: [number, number] }>): string[] => route.map((h) => `${h.peer.peer}@${h.layers.join('-')}`)

describe('hopCost', () => {
  it('is the round trip plus the compute for the layers, plus the penalty when the KV cache is too full', () => {
    const p = cap('a', [0, 5], { ms: 3, kvRoom: 50 })
    expect(hopCost(p, [0, 2], costs())).toBe(DEFAULT_COSTS.defaultRttMs + 2 * 3)
    expect(hopCost(p, [0, 2], costs({ rttMs: (id) => (id === 'a' ? 7 : undefined) }))).toBe(7 + 6)
    expect(hopCost(p, [0, 2], costs({ tokensNeeded: 50 }))).toBe(hopCost(p, [0, 2], costs()))
    expect(hopCost(p, [0, 2], costs({ tokensNeeded: 51 })) - hopCost(p, [0, 2], costs())).toBe(DEFAULT_COSTS.fullPenaltyMs)
  })
})

describe('serversOf', () => {
  it('lists the peers with shard boundaries at both ends of the range, cheapest first', () => {
    const peers = [cap('slow', [0, 5], { ms: 9, bounds: [0, 2, 5] }), cap('fast', [0, 2], { ms: 1 }), cap('whole', [0, 5]), cap('late', [2, 5])]
    expect(serversOf(peers, [0, 2]).map((p) => p.peer)).toEqual(['fast', 'slow'])
    expect(serversOf(peers, [2, 5]).map((p) => p.peer)).toEqual(['late', 'slow'])
    expect(serversOf(peers, [0, 5]).map((p) => p.peer)).toEqual(['whole', 'slow'])
    expect(serversOf(peers, [1, 2])).toEqual([])
  })
})

describe('findRoute', () => {
  it('takes the cheapest chain: one slow peer or two fast ones, whichever costs less', () => {
    const whole = cap('whole', [0, 5], { ms: 10, bounds: [0, 2, 5] })
    const split = [cap('first', [0, 2], { ms: 1 }), cap('second', [2, 5], { ms: 1 })]
    // 20 + 50 for the whole peer against 20 + 2 + 20 + 3 for the pair.
    expect(shape(findRoute([whole, ...split], 0, 5))).toEqual(['first@0-2', 'second@2-5'])
    // Ten times slower, the pair costs 20 + 20 + 20 + 30 = 90 > 70: the whole peer.
    const slowSplit = split.map((p) => ({ ...p, msPerLayer: 10 }))
    expect(shape(findRoute([whole, ...slowSplit], 0, 5))).toEqual(['whole@0-5'])
    // Round trips count: a far whole peer loses to the slow pair.
    expect(shape(findRoute([whole, ...slowSplit], 0, 5, costs({ rttMs: (p) => (p === 'whole' ? 200 : 5) })))).toEqual(['first@0-2', 'second@2-5'])
  })

  it("starts and ends every hop on one of its peer's shard boundaries, for the whole model or a sub-range", () => {
    // `big` holds [0, 5) as one shard: the fastest peer, yet of no use for a range that starts at 2.
    const big = cap('big', [0, 5], { ms: 0 })
    const a = cap('a', [0, 2], { ms: 5 })
    const b = cap('b', [2, 5], { ms: 5 })
    const c = cap('c', [0, 5], { ms: 1, bounds: [0, 1, 5] })
    expect(shape(findRoute([big, a, b], 0, 5))).toEqual(['big@0-5'])
    expect(shape(findRoute([big, a, b], 2, 5))).toEqual(['b@2-5'])
    expect(() => findRoute([big], 2, 5)).toThrow(/no live peer serves layers from 2 on/)
    // `c` may stop at 1, but nobody goes on from there to 2.
    expect(() => findRoute([big, c], 0, 2)).toThrow(/from 1 on/)
    expect(shape(findRoute([big, a, b, c], 1, 5))).toEqual(['c@1-5'])
    expect(shape(findRoute([a, b, c], 0, 5))).toEqual(['c@0-5'])
    expect(shape(findRoute([a, b, { ...c, msPerLayer: 20 }], 0, 5))).toEqual(['a@0-2', 'b@2-5'])
  })

  it('for redundant execution needs k distinct servers per hop, and a hop costs its k-th cheapest', () => {
    // One fast whole peer beside a slow one, or two decent pairs.
    const peers = [
      cap('w1', [0, 5], { ms: 2 }),
      cap('w2', [0, 5], { ms: 20 }),
      cap('p1', [0, 2], { ms: 3 }),
      cap('p2', [0, 2], { ms: 3 }),
      cap('q1', [2, 5], { ms: 3 }),
      cap('q2', [2, 5], { ms: 4 })
    ]
    expect(shape(findRoute(peers, 0, 5, DEFAULT_COSTS, 1))).toEqual(['w1@0-5'])
    // k = 2: the whole hop waits for w2 (20 + 100) while the pairs cost (20 + 6) + (20 + 12).
    const route = findRoute(peers, 0, 5, DEFAULT_COSTS, 2)
    expect(route.map((h) => h.layers)).toEqual([
      [0, 2],
      [2, 5]
    ])
    expect(route[1].peer.peer, 'a hop names its cheapest server').toBe('q1')
    for (const h of route) expect(serversOf(peers, h.layers).length).toBeGreaterThanOrEqual(2)
    // Slow w2 down less and the whole peers win again: 20 + 5 × 7 = 55 < 58.
    const faster = peers.map((p) => (p.peer === 'w2' ? { ...p, msPerLayer: 7 } : p))
    expect(shape(findRoute(faster, 0, 5, DEFAULT_COSTS, 2))).toEqual(['w1@0-5'])
    expect(() => findRoute(peers, 0, 5, DEFAULT_COSTS, 3)).toThrow(/no 3 distinct live peers serve layers from 0 on/)
  })

  it('finds the cheapest route an exhaustive search finds, k = 1 to 3, over random directories', () => {
    // Every route over [0, 12): all ways to cut it at boundaries; a hop costs its k-th cheapest exact server.
    const rand = mulberry32(7)
    const routes = (from: number, to: number): Array<Array<[number, number]>> =>
      from === to
        ? [[]]
        : Array.from({ length: to - from }, (_, i) => from + i + 1).flatMap((e) => routes(e, to).map((r) => [[from, e] as [number, number], ...r]))
    const all = routes(0, 12)
    for (let trial = 0; trial < 60; trial++) {
      const peers = Array.from({ length: 3 + Math.floor(rand() * 20) }, (_, i) => {
        const a = Math.floor(rand() * 11)
        const b = a + 1 + Math.floor(rand() * (12 - a))
        const inner = Array.from({ length: b - a - 1 }, (_, j) => a + 1 + j).filter(() => rand() < 0.4)
        return cap(`p${i}`, [a, b], { ms: 1 + Math.floor(rand() * 30), bounds: [a, ...inner, b], kvRoom: rand() < 0.1 ? 0 : 1000 })
      })
      const c = costs({ tokensNeeded: 10, rttMs: (p) => (Number(p.slice(1)) * 7) % 40 })
      for (const k of [1, 2, 3]) {
        const hop = (h: [number, number]): number => {
          const s = serversOf(peers, h, c)
          return s.length < k ? Infinity : hopCost(s[k - 1], h, c)
        }
        const best = Math.min(...all.map((r) => r.reduce((t, h) => t + hop(h), 0)))
        if (best === Infinity) {
          expect(() => findRoute(peers, 0, 12, c, k)).toThrow(NoRouteError)
          continue
        }
        const route = findRoute(peers, 0, 12, c, k)
        expect(route.reduce((t, h) => t + hop(h.layers), 0)).toBe(best)
        for (const h of route) expect(h.peer, 'a hop names the first of its cheapest servers').toBe(serversOf(peers, h.layers, c)[0])
      }
    }
  })

  it('counts a record that lists its boundaries twice as one server: one peer cannot pass for the k distinct ones', () => {
    const twice = cap('twice', [0, 5], { bounds: [0, 0, 5, 5] })
    expect(serversOf([twice], [0, 5])).toHaveLength(1)
    expect(shape(findRoute([twice], 0, 5))).toEqual(['twice@0-5'])
    expect(() => findRoute([twice], 0, 5, DEFAULT_COSTS, 2)).toThrow(/no 2 distinct live peers serve layers from 0 on/)
    expect(findRoute([twice, cap('other', [0, 5])], 0, 5, DEFAULT_COSTS, 2)).toHaveLength(1)
  })

  it('routes around a peer whose KV cache is too full, and to it when nothing else serves', () => {
    const full = cap('full', [0, 5], { ms: 1, kvRoom: 10 })
    const roomy = cap('roomy', [0, 5], { ms: 50, kvRoom: 10_000 })
    expect(shape(findRoute([full, roomy], 0, 5, costs({ tokensNeeded: 0 })))).toEqual(['full@0-5'])
    expect(shape(findRoute([full, roomy], 0, 5, costs({ tokensNeeded: 100 })))).toEqual(['roomy@0-5'])
    expect(shape(findRoute([full], 0, 5, costs({ tokensNeeded: 100 })))).toEqual(['full@0-5'])
  })

  it('throws NoRouteError naming where coverage stops, what was needed and how many peers it knew', () => {
    const peers = [cap('a', [0, 2]), cap('b', [3, 5])]
    const err = (() => {
      try {
        findRoute(peers, 0, 5)
      } catch (e) {
        return e
      }
    })()
    expect(err).toBeInstanceOf(NoRouteError)
    expect((err as NoRouteError).code).toBe('NO_ROUTE')
    expect((err as Error).message).toMatch(/no live peer serves layers from 2 on \(needed \[0, 5\)\); 2 peer\(s\) known/)
    expect(() => findRoute([], 0, 5)).toThrow(/from 0 on .*0 peer\(s\) known/)
  })
})

describe('coverage', () => {
  it('counts the peers serving each layer, whatever their shard boundaries', () => {
    const peers = [cap('a', [0, 2]), cap('b', [0, 5], { bounds: [0, 2, 5] }), cap('c', [4, 5]), cap('d', [3, 7])]
    expect(coverage(peers, 5)).toEqual([2, 2, 1, 2, 3])
    expect(coverage([], 3)).toEqual([0, 0, 0])
  })
})

describe('chooseModel', () => {
  const m = (name: string, root: string, cov: number[]): ModelView => ({ name, root, layers: cov.length, coverage: cov })
  const models = [m('partial', 'aaaa', [1, 0, 1]), m('full', 'bbbb', [1, 2, 1]), m('also', 'cccc', [3, 3, 3])]

  it('gives the first fully covered model unless one is named, by name or by root', () => {
    expect(chooseModel(models).name).toBe('full')
    expect(chooseModel(models, 'partial').root).toBe('aaaa')
    expect(chooseModel(models, 'cccc').name).toBe('also')
  })

  it("refuses an unknown model as the caller's mistake, and a network covering none as no route", () => {
    expect(() => chooseModel(models, 'nope')).toThrow(InputError)
    expect(() => chooseModel(models, 'nope')).toThrow(/unknown model "nope"; models on the network: partial \(aaaa…\), full/)
    expect(() => chooseModel([models[0]])).toThrow(NoRouteError)
    expect(() => chooseModel([])).toThrow(/no model is fully served by the network; models seen: none/)
  })
})
