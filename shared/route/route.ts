/**
 * Routing: the cheapest chain of peers that covers layers [from, to), as Petals does it —
 * Dijkstra over layer boundaries, where a peer serving [a, b) offers an edge between any two of
 * its shard boundaries, costing its round trip plus its measured compute for those layers.
 */
import type { Capability } from '../protocol/capability.js'
import { NoRouteError } from '../errors.js'

export interface RouteHop {
  peer: Capability
  layers: [number, number]
}

export interface RouteCosts {
  /** Round-trip estimate per peer in ms (unknown peers get `defaultRttMs`). */
  rttMs?: (peer: string) => number | undefined
  defaultRttMs: number
  /** Added when a peer has too little KV room for the session (routes there only if nothing else). */
  fullPenaltyMs: number
  /** Tokens the session will need on each hop. */
  tokensNeeded: number
}

export const DEFAULT_COSTS: RouteCosts = { defaultRttMs: 20, fullPenaltyMs: 10_000, tokensNeeded: 0 }

/** What serving [a, b) on `p` is expected to cost: its round trip plus its compute, and a penalty when its KV cache is too full. */
export function hopCost(p: Capability, [a, b]: [number, number], costs: RouteCosts): number {
  return (costs.rttMs?.(p.peer) ?? costs.defaultRttMs) + (b - a) * p.msPerLayer + (p.kvRoom < costs.tokensNeeded ? costs.fullPenaltyMs : 0)
}

/** Peers whose shards start at a and end at b, so they can serve exactly [a, b), cheapest first (ties in the order given). */
export function serversOf(peers: Capability[], layers: [number, number], costs: RouteCosts = DEFAULT_COSTS): Capability[] {
  // Each cost once, not once per comparison: at 10,000 peers routing spent most of its time here (npm run bench -- simulate).
  return peers
    .filter((p) => p.shardBounds.includes(layers[0]) && p.shardBounds.includes(layers[1]))
    .map((p) => ({ p, cost: hopCost(p, layers, costs) }))
    .sort((x, y) => x.cost - y.cost)
    .map((x) => x.p)
}

/**
 * Cheapest route over [from, to) among `peers` in which every hop is served by at least `k`
 * distinct peers (k > 1 for redundant execution; a hop then costs what its k-th cheapest
 * server costs, since the step waits for all k). Throws NoRouteError naming the uncovered layers.
 */
export function findRoute(peers: Capability[], from: number, to: number, costs: RouteCosts = DEFAULT_COSTS, k = 1): RouteHop[] {
  // The peers a hop may start with at each boundary, in the order given, found once: the search looks only at those.
  const startingAt = new Map<number, Array<{ p: Capability; bounds: number[] }>>()
  for (const p of peers) {
    // Each boundary once: a record that lists one twice is still one server (k distinct peers must be k peers).
    const bounds = [...new Set(p.shardBounds)].filter((b) => b >= from && b <= to)
    for (const b of bounds) {
      if (b === to) continue
      const here = startingAt.get(b)
      if (here === undefined) startingAt.set(b, [{ p, bounds }])
      else here.push({ p, bounds })
    }
  }
  const dist = new Map<number, number>([[from, 0]])
  const prev = new Map<number, RouteHop>()
  const done = new Set<number>()
  for (;;) {
    let at = -1
    let best = Infinity
    for (const [b, d] of dist)
      if (!done.has(b) && d < best) {
        best = d
        at = b
      }
    if (at < 0) break
    if (at === to) break
    done.add(at)
    // One pass over the peers starting here: for each end, the first of the cheapest (what
    // serversOf would put first) and the k cheapest costs. At 1,000 records the search spent
    // most of its time filtering and sorting the same peers once per end (npm run bench -- simulate).
    const offers = new Map<number, { first: Capability; firstCost: number; costs: number[] }>()
    for (const { p, bounds } of startingAt.get(at) ?? [])
      for (const end of bounds) {
        if (end <= at) continue
        const cost = hopCost(p, [at, end], costs)
        const o = offers.get(end)
        if (o === undefined) {
          offers.set(end, { first: p, firstCost: cost, costs: [cost] })
          continue
        }
        if (cost < o.firstCost) {
          o.first = p
          o.firstCost = cost
        }
        if (o.costs.length < k || cost < o.costs[o.costs.length - 1]) {
          let i = o.costs.length
          while (i > 0 && o.costs[i - 1] > cost) i--
          o.costs.splice(i, 0, cost)
          if (o.costs.length > k) o.costs.pop()
        }
      }
    for (const [end, o] of offers) {
      if (o.costs.length < k) continue
      const cost = o.costs[k - 1] // the step waits for all k
      if (best + cost < (dist.get(end) ?? Infinity)) {
        dist.set(end, best + cost)
        prev.set(end, { peer: o.first, layers: [at, end] })
      }
    }
  }
  if (!dist.has(to)) {
    const reached = Math.max(...[...dist.keys()])
    const who = k > 1 ? `no ${k} distinct live peers serve` : 'no live peer serves'
    // Redundancy the network cannot give is fixed by the operator (more nodes) or the caller (smaller k): say both.
    const hint = k > 1 ? `: start more nodes serving these layers (tessera node …), or ask for fewer (--k ${k - 1})` : ''
    throw new NoRouteError(`${who} layers from ${reached} on (needed [${from}, ${to})); ${peers.length} peer(s) known${hint}`)
  }
  const route: RouteHop[] = []
  for (let b = to; b !== from; ) {
    const hop = prev.get(b)!
    route.unshift(hop)
    b = hop.layers[0]
  }
  return route
}

/** How many live peers serve each layer (for the network view and block selection). */
export function coverage(peers: Capability[], nLayers: number): number[] {
  const c = new Array<number>(nLayers).fill(0)
  for (const p of peers) for (let l = p.layers[0]; l < Math.min(p.layers[1], nLayers); l++) c[l]++
  return c
}
