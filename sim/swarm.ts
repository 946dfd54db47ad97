/**
 * A swarm: native GPU nodes and browser tabs that join, choose their layers with the shipped
 * block selection (shared/node/select.ts), serve, and leave (tabs after minutes, natives after
 * hours; some crash, some withdraw), each leaver replaced by a newcomer; while client sessions
 * generate through the shipped client, one after another, under a verification mode. What
 * sessions got (tokens/s, first token, completions, failover), how well the layers stayed
 * covered, and what routing over the whole directory costs.
 */
import { findRoute, coverage, DEFAULT_COSTS } from '../shared/route/route.js'
import { chooseShards, plannedCoverage } from '../shared/node/select.js'
import { createClient } from '../shared/client/client.js'
import type { VerificationOptions } from '../shared/client/types.js'
import type { Manifest, ShardEntry } from '../shared/manifest.js'
import { mulberry32 } from '../shared/rng.js'
import { GPUS, gpuCost, layerBytes, layersThatFit, LLAMA2_70B_INT4, type Gpu, type ModelFacts } from './hardware.js'
import { rebalanceMove } from '../shared/node/rebalance.js'
import { PEER_DEFAULTS } from '../shared/node/config.js'
import { simNetwork, type SimPeer } from './network.js'
import { uplink } from './link.js'
import { simulate } from './run.js'
import type { ComputeCost } from './model.js'

export interface SwarmScenario {
  model: ModelFacts
  vocab: number
  /** Width of the rows the simulated peers compute; the wire carries exactly these (see README: simulation). */
  width: number
  /** Layers per shard of the model's manifest (what a peer loads, and where hops may start and end). */
  shardLayers: number
  natives: number
  tabs: number
  /** Share of natives by GPU (sums to 1). */
  gpuMix: Array<[Gpu, number]>
  /** A tab: its layers' cost, and how many it holds. */
  tab: { cost: ComputeCost; layers: number; uplinkMbps: number }
  nativeUplinkMbps: number
  /** Mean stay, exponential: tabs minutes, natives hours. */
  tabStayMs: number
  nativeStayMs: number
  /** Share of leavers that crash (kill -9; the relay drops the record when it notices, `detectMs` later) instead of withdrawing. */
  crashShare: number
  detectMs: number
  /** Client sessions generating at once, each one generation after another. */
  sessions: number
  promptTokens: number
  tokens: number
  verification: VerificationOptions
  /** Share of peers that answer wrong (random-output). */
  faultyShare: number
  /** How often a native checks whether moving its layers would raise the least-covered layer (shared/node/rebalance.ts; 0: never). Tabs stay too briefly to move. */
  rebalanceEveryMs: number
  /** How fast a native reads the shards it moves to (its disk), GB/s: it serves the old ones meanwhile. */
  loadGbPerS: number
  /** A region outage: this share of peers gone at once, at this time. */
  outage?: { atMs: number; share: number }
  durationMs: number
  /** How often coverage and routing are sampled. */
  sampleMs: number
  seed: number
}

export interface SwarmResult {
  generations: number
  completed: number
  failed: Record<string, number>
  tokensPerSecond: { p50: number; p95: number; p5: number }
  aggregateTokensPerSecond: number
  firstTokenMs: { p50: number; p95: number }
  /** Generations that switched peers mid-way, and how long the switch held the next token back (its gap less the generation's median gap). */
  failovers: { generations: number; p50Ms: number; p95Ms: number }
  /** The least-covered layer's peer count at each sample, and its minimum. */
  coverage: { min: number; samples: Array<{ atMs: number; min: number; peers: number }> }
  /** Real ms for one route over the whole directory, as the client computes it. */
  routeMs: { p50: number; max: number; peers: number }
  joined: number
  left: number
  /** Natives that moved their layers (rebalancing). */
  moves: number
  wrongTokens: number
  honestAccused: number
  virtualMs: number
  realMs: number
  events: number
}

/** Rounded quantile of `xs` (nearest rank). */
function q(xs: number[], p: number): number {
  if (xs.length === 0) return Number.NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]
}

/** Regions around the client, each a share of the peers and its range of round trips (ms): near, the same continent, across an ocean. */
const REGIONS: Array<[[number, number], number]> = [
  [[20, 40], 0.3],
  [[40, 100], 0.4],
  [[120, 250], 0.3]
]

/** The item whose share `x` (uniform in [0, 1)) falls in; the last if the shares fall short. */
function pick<T>(items: Array<[T, number]>, x: number): T {
  for (const [item, share] of items) {
    if (x < share) return item
    x -= share
  }
  return items[items.length - 1][0]
}

export async function simulateSwarm(s: SwarmScenario): Promise<SwarmResult> {
  const rand = mulberry32(s.seed)
  const exp = (mean: number): number => -Math.log(1 - rand()) * mean
  const rtt = (): number => {
    const [lo, hi] = pick(REGIONS, rand())
    return lo + rand() * (hi - lo)
  }
  const gpu = (): Gpu => pick(s.gpuMix, rand())
  // Block selection needs the model's shard list; a hop may start and end at any shard boundary a peer holds.
  const shards: ShardEntry[] = Array.from({ length: Math.ceil(s.model.layers / s.shardLayers) }, (_, i) => ({
    index: i,
    layers: [i * s.shardLayers, Math.min(s.model.layers, (i + 1) * s.shardLayers)],
    dtype: 'int4',
    files: [],
    sha256: '',
    bytes: 0
  }))
  const manifest = { shards, config: { nLayers: s.model.layers } } as unknown as Manifest

  const sim = await simulate(async () => {
    const net = simNetwork({ name: s.model.name, width: s.width, vocab: s.vocab, layers: s.model.layers })
    const live = new Set<SimPeer>()
    const faulty = new Set<string>()
    let joined = 0
    let moves = 0
    let left = 0
    let over = false
    const end = Date.now() + s.durationMs

    const join = async (kind: 'native' | 'tab'): Promise<void> => {
      const g = kind === 'native' ? gpu() : undefined
      const fit = g !== undefined ? Math.min(s.model.layers, layersThatFit(s.model, g)) : s.tab.layers
      const records = net.records()
      const run = chooseShards(manifest, records, fit)
      const layers: [number, number] = [run[0].layers[0], run[run.length - 1].layers[1]]
      const shardBounds = [layers[0], ...run.map((x) => x.layers[1])]
      const bad = rand() < s.faultyShare
      const p = await net.add({
        layers,
        shardBounds,
        cost: g !== undefined ? gpuCost(s.model, g) : s.tab.cost,
        device: g !== undefined ? 'cuda' : 'webgpu',
        uplinkMbps: g !== undefined ? s.nativeUplinkMbps : s.tab.uplinkMbps,
        rttMs: rtt(),
        ...(bad ? { fault: 'random-output' } : {})
      })
      if (bad) faulty.add(p.id)
      live.add(p)
      joined++
      if (kind === 'native' && s.rebalanceEveryMs > 0) setTimeout(() => void rebalance(p, fit), rand() * s.rebalanceEveryMs)
      const stay = exp(kind === 'native' ? s.nativeStayMs : s.tabStayMs)
      setTimeout(() => void leave(p, kind), stay)
    }
    // As a node's service does: never under a client's feet; it announces where it goes, loads the new layers (the old ones serving meanwhile), then switches.
    const rebalance = (p: SimPeer, fit: number): void => {
      if (over || !live.has(p)) return
      setTimeout(() => rebalance(p, fit), s.rebalanceEveryMs)
      if (p.handler.stats.sessions > 0) return
      const others = plannedCoverage(
        net.records().filter((r) => r.peer !== p.id),
        s.model.layers
      )
      const move = rebalanceMove(manifest, p.layers, others, fit)
      if (move === undefined) return
      const to: [number, number] = [move.to[0].layers[0], move.to[move.to.length - 1].layers[1]]
      const loadMs = ((to[1] - to[0]) * layerBytes(s.model)) / (s.loadGbPerS * 1e6)
      p.plan(to)
      setTimeout(() => {
        if (!live.has(p)) return
        p.move(to, [to[0], ...move.to.map((x) => x.layers[1])])
        moves++
      }, loadMs)
    }
    const leave = async (p: SimPeer, kind: 'native' | 'tab'): Promise<void> => {
      if (!live.delete(p)) return
      left++
      if (rand() < s.crashShare) {
        p.kill()
        setTimeout(() => p.kill({ withdraw: true }), s.detectMs)
      } else p.kill({ withdraw: true })
      if (!over) await join(kind) // a newcomer takes its place
    }

    for (let i = 0; i < s.natives; i++) await join('native')
    for (let i = 0; i < s.tabs; i++) await join('tab')
    if (s.outage !== undefined) {
      const { atMs, share } = s.outage
      setTimeout(() => {
        for (const p of [...live])
          if (rand() < share && live.delete(p)) {
            left++
            p.kill()
            setTimeout(() => p.kill({ withdraw: true }), s.detectMs)
          }
      }, atMs)
    }

    const samples: SwarmResult['coverage']['samples'] = []
    const routeMs: number[] = []
    let peersAtRoute = 0
    const sample = async (): Promise<void> => {
      const records = net.records()
      samples.push({ atMs: s.durationMs - (end - Date.now()), min: Math.min(...coverage(records, s.model.layers)), peers: records.length })
      const t = process.hrtime.bigint() // the real clock: Date and performance are virtual here
      findRoute(records, 0, s.model.layers, DEFAULT_COSTS)
      routeMs.push(Number(process.hrtime.bigint() - t) / 1e6)
      peersAtRoute = Math.max(peersAtRoute, records.length)
    }
    const sampler = setInterval(() => void sample().catch(() => {}), s.sampleMs)
    await sample()

    const gens: Array<{ tps?: number; firstMs?: number; error?: string; failoverMs?: number; wrong: boolean }> = []
    const accused = new Set<string>()
    let tokens = 0
    let expected: number[] | undefined // every honest answer is the same function of the prompt
    const session = async (i: number): Promise<void> => {
      const client = createClient({ dialer: net.dialerFrom(uplink(100)), directory: net.directory, random: mulberry32(s.seed * 1000 + i) })
      while (Date.now() < end) {
        const at: number[] = []
        const gen = client.generate({
          prompt: Array.from({ length: s.promptTokens }, (_, k) => 1 + (k % 60)),
          maxTokens: s.tokens,
          verification: s.verification
        })
        try {
          let r = await gen.next()
          for (; r.done !== true; r = await gen.next()) at.push(Date.now())
          const res = r.value
          tokens += res.tokens.length
          for (const f of res.verification.faults) accused.add(f.accused)
          const gaps = at.slice(1).map((t, k) => t - at[k])
          const decode = at[at.length - 1] - at[0]
          gens.push({
            tps: decode > 0 ? (res.tokens.length - 1) / (decode / 1000) : undefined,
            firstMs: res.timings.firstTokenMs,
            failoverMs: res.route.switches.length > 0 ? Math.max(...gaps) - q(gaps, 0.5) : undefined,
            wrong: expected !== undefined && res.tokens.join() !== expected.join()
          })
          if (expected === undefined && res.verification.faults.length === 0 && res.route.hops.every((h) => !faulty.has(h.peer))) expected = res.tokens
        } catch (err) {
          gens.push({ error: (err as { code?: string }).code ?? (err as Error).message, wrong: false })
          await new Promise((r) => setTimeout(r, 1000)) // a failed request is retried a second later, as a caller would
        }
      }
    }
    await Promise.all(Array.from({ length: s.sessions }, (_, i) => session(i)))
    over = true
    clearInterval(sampler)
    for (const p of live) p.kill({ withdraw: true })
    const done = gens.filter((g) => g.error === undefined)
    const failed: Record<string, number> = {}
    for (const g of gens) if (g.error !== undefined) failed[g.error] = (failed[g.error] ?? 0) + 1
    const tps = done.map((g) => g.tps).filter((x): x is number => x !== undefined)
    const fo = done.map((g) => g.failoverMs).filter((x): x is number => x !== undefined)
    return {
      generations: gens.length,
      completed: done.length,
      failed,
      tokensPerSecond: { p50: q(tps, 0.5), p95: q(tps, 0.95), p5: q(tps, 0.05) },
      aggregateTokensPerSecond: tokens / (s.durationMs / 1000),
      firstTokenMs: {
        p50: q(
          done.map((g) => g.firstMs!),
          0.5
        ),
        p95: q(
          done.map((g) => g.firstMs!),
          0.95
        )
      },
      failovers: { generations: fo.length, p50Ms: q(fo, 0.5), p95Ms: q(fo, 0.95) },
      coverage: { min: Math.min(...samples.map((x) => x.min)), samples },
      routeMs: { p50: q(routeMs, 0.5), max: Math.max(...routeMs), peers: peersAtRoute },
      joined,
      left,
      moves,
      wrongTokens: done.filter((g) => g.wrong).length,
      honestAccused: [...accused].filter((a) => !faulty.has(a)).length
    }
  })
  return { ...sim.value, virtualMs: sim.virtualMs, realMs: sim.realMs, events: sim.events }
}

/** The swarm scenarios' common ground: Llama-2-70B int4 over GPUs of every kind and WebGPU tabs. */
export function swarmDefaults(peers: number): SwarmScenario {
  const natives = Math.max(3, Math.round(peers * 0.3))
  return {
    model: LLAMA2_70B_INT4,
    vocab: 64,
    width: 32,
    natives,
    tabs: peers - natives,
    gpuMix: [
      [GPUS.rtx3090, 0.4],
      [GPUS.rtx4090, 0.3],
      [GPUS.a100, 0.2],
      [GPUS.h100, 0.1]
    ],
    shardLayers: 4,
    // A laptop's WebGPU over ~100 GB/s unified memory (Apple M2: 100 GB/s), at 50%: a 70B int4 layer in ~10 ms; one 4-layer shard in a 2 GB allowance.
    tab: { cost: { msPerLayer: 9.6, msPerPrefillRowLayer: 0.96 }, layers: 4, uplinkMbps: 20 },
    nativeUplinkMbps: 100,
    tabStayMs: 10 * 60_000,
    nativeStayMs: 4 * 3_600_000,
    crashShare: 0.5,
    detectMs: 5_000,
    rebalanceEveryMs: PEER_DEFAULTS.rebalanceEveryMs,
    // An NVMe SSD reads a few GB/s (PCIe 4.0 drives: ~7 GB/s sequential); 2 GB/s leaves room for a busy or older disk.
    loadGbPerS: 2,
    sessions: 8,
    promptTokens: 16,
    tokens: 32,
    verification: { mode: 'none' },
    faultyShare: 0,
    durationMs: 10 * 60_000,
    sampleMs: 30_000,
    seed: 1
  }
}
