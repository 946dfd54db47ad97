/**
 * The simulator (sim/): the shipped client over model peers and simulated links, on a virtual
 * clock. A small scenario runs in well under a second of real time and must keep the network's
 * invariants: every completed generation is token-identical to a fault-free run of the same
 * prompt, failover after a kill -9 and a cheater's replacement leave the tokens alone, no honest
 * peer is accused, and a token costs what the links and the hardware say it must.
 */
import { describe, expect, it } from 'vitest'
import { simulate } from '../../sim/run.js'
import { simulateSwarm, swarmDefaults } from '../../sim/swarm.js'
import { GPUS } from '../../sim/hardware.js'
import { tokensPerPass } from '../../sim/whatif.js'
import { simDraft } from '../../sim/draft.js'
import { simNetwork, type SimNetwork, type SimPeerSpec } from '../../sim/network.js'
import { createClient } from '../../shared/client/client.js'
import type { GenerationRequest, GenerationResult } from '../../shared/client/types.js'
import type { ClientConfig } from '../../shared/client/client.js'
import { mulberry32 } from '../../shared/rng.js'

const MODEL = { name: 'sim-80', width: 32, vocab: 64, layers: 80 }
const COST = { msPerLayer: 0.5, msPerPrefillRowLayer: 0.02 }
const THIRDS: Array<[number, number]> = [
  [0, 27],
  [27, 54],
  [54, 80]
]
const peer = (layers: [number, number], o: Partial<SimPeerSpec> = {}): SimPeerSpec => ({
  layers,
  cost: COST,
  device: 'cuda',
  uplinkMbps: 100,
  rttMs: 100,
  ...o
})
const REQ: GenerationRequest = { prompt: [1, 2, 3, 4], maxTokens: 24 }

async function generate(net: SimNetwork, req: GenerationRequest, cfg: Partial<ClientConfig> = {}): Promise<GenerationResult> {
  const client = createClient({ dialer: net.dialer, directory: net.directory, random: mulberry32(7), ...cfg })
  const gen = client.generate(req)
  for (;;) {
    const r = await gen.next()
    if (r.done === true) return r.value
  }
}

describe('simulator', () => {
  it('costs a token what the route says: 3 hops × the round trip plus the compute, in virtual time', async () => {
    const started = performance.now()
    const { value: r } = await simulate(async () => {
      const net = simNetwork(MODEL)
      for (const l of THIRDS) await net.add(peer(l))
      return await generate(net, REQ)
    })
    expect(performance.now() - started).toBeLessThan(5_000) // virtual seconds in real milliseconds
    expect(r.tokens).toHaveLength(24)
    const decode = r.timings.totalMs - r.timings.firstTokenMs // 23 decode steps
    // Each: 3 round trips of 100 ms, 80 layers × 0.5 ms, and 3 × 2 messages of a few hundred bytes at 100 Mbit/s;
    // timers tick in whole ms (fractions carried), so the sum may be short by a ms per hop.
    const floor = 3 * 100 + 80 * 0.5
    expect(decode).toBeGreaterThanOrEqual(23 * floor - 3)
    expect(decode / 23).toBeLessThan(floor * 1.05)
  })

  it('forwards node to node for real: a token then costs 2 round trips of 100 ms instead of 3, with the same tokens', async () => {
    const run = async (forward: boolean): Promise<GenerationResult> =>
      (
        await simulate(async () => {
          const net = simNetwork(MODEL)
          for (const l of THIRDS) await net.add(peer(l))
          return await generate(net, { ...REQ, forward })
        })
      ).value
    const plain = await run(false)
    const fwd = await run(true)
    expect(fwd.tokens).toEqual(plain.tokens)
    expect(fwd.forwarded).toEqual({ steps: 24, dropped: 0 })
    const perToken = (r: GenerationResult): number => (r.timings.totalMs - r.timings.firstTokenMs) / 23
    const floor = 2 * 100 + 80 * 0.5 // (3 + 1) / 2 round trips and the compute
    expect(perToken(fwd)).toBeGreaterThanOrEqual(floor - 3)
    expect(perToken(fwd)).toBeLessThan(floor * 1.05)
    expect(perToken(plain) - perToken(fwd)).toBeGreaterThan(95) // the round trip saved
  })

  it('speculates through the client with a simulated draft of a given acceptance rate: all kept at α = 1, none at α = 0, the same tokens', async () => {
    const run = async (acceptance: number): Promise<GenerationResult> =>
      (
        await simulate(async () => {
          const net = simNetwork(MODEL)
          for (const l of THIRDS) await net.add(peer(l))
          const draft = simDraft(MODEL, [0, 27, 54, 80], { name: 'test', msPerToken: 1, acceptance, source: 'a test' })
          return await generate(net, { ...REQ, speculate: { gamma: 4, adapt: false } }, { draft })
        })
      ).value
    const perfect = await run(1)
    const useless = await run(0)
    expect(perfect.tokens).toEqual(useless.tokens)
    expect(perfect.speculation).toMatchObject({ passes: 5, kept: perfect.speculation?.drafted }) // 5 tokens a pass: 24 in 5 passes
    expect(useless.speculation?.kept).toBe(0)
  })

  it("batches the steps of sessions that run at once through the node's continuous batcher: 8 sessions in far less than 8 × one's compute, each with its tokens alone", async () => {
    // One node, compute-bound: 400 ms a decode step of the whole model against a 10 ms round trip.
    const HEAVY = { msPerLayer: 5, msPerPrefillRowLayer: 0.5 }
    const whole = (maxRows = 16): SimPeerSpec => peer([0, 80], { cost: HEAVY, rttMs: 10, batch: { maxRows, waitMs: 0, prefillChunk: 128 } })
    const reqs = Array.from({ length: 8 }, (_, k): GenerationRequest => ({ prompt: [1 + k, 2, 3], maxTokens: 8 }))
    const run = async (maxRows: number): Promise<{ ms: number; tokens: number[][] }> => {
      const { value, virtualMs } = await simulate(async () => {
        const net = simNetwork(MODEL)
        await net.add(whole(maxRows))
        return await Promise.all(reqs.map(async (req) => (await generate(net, req)).tokens))
      })
      return { ms: virtualMs, tokens: value }
    }
    const alone = await simulate(async () => {
      const net = simNetwork(MODEL)
      await net.add(whole())
      const out = []
      for (const req of reqs) out.push((await generate(net, req)).tokens)
      return out
    })
    const [batched, serial] = [await run(16), await run(1)]
    for (const r of [batched, serial]) expect(r.tokens).toEqual(alone.value)
    // One at a time: 8 sessions × 8 steps × 400 ms at least. Batched, a decode step of 8 rows costs 680 ms
    // instead of 8 × 400; the prefills still run one at a time, with the early sessions' first decode steps between them.
    expect(serial.ms).toBeGreaterThanOrEqual(8 * 8 * 400)
    expect(batched.ms).toBeLessThan(serial.ms / 2)
  })

  it('keeps the tokens of a fault-free run through a kill -9 mid-generation and through a cheater under redundant checking, and accuses no honest peer', async () => {
    const { value } = await simulate(async () => {
      const clean = simNetwork(MODEL)
      for (const l of THIRDS) await clean.add(peer(l))
      const expected = (await generate(clean, REQ)).tokens

      // Two peers per third; the middle one that serves first dies at its 10th step.
      const churn = simNetwork(MODEL)
      for (const l of THIRDS) for (const rtt of [100, 120]) await churn.add(peer(l, { rttMs: rtt }))
      const victim = churn.peers[2]
      const steps = setInterval(() => {
        if (victim.handler.stats.steps >= 10) victim.kill()
      }, 5)
      const failed = await generate(churn, REQ)
      clearInterval(steps)

      // A cheater on the first third beside two honest peers, every hop checked by two.
      const cheat = simNetwork(MODEL)
      const liar = await cheat.add(peer([0, 27], { fault: 'random-output' }))
      for (const l of THIRDS) for (const rtt of [100, 120]) await cheat.add(peer(l, { rttMs: rtt }))
      const checked = await generate(cheat, { ...REQ, verification: { mode: 'redundant', k: 2 } })
      return { expected, failed, victim: victim.id, checked, liar: liar.id, honest: cheat.peers.filter((p) => p.id !== liar.id).map((p) => p.id) }
    })
    expect(value.failed.tokens).toEqual(value.expected)
    expect(value.failed.route.switches.some((s) => s.failed === value.victim)).toBe(true)
    expect(value.checked.tokens).toEqual(value.expected)
    const accused = value.checked.verification.faults.map((f) => f.accused)
    expect(accused).toContain(value.liar)
    expect(accused.filter((a) => value.honest.includes(a))).toEqual([])
  })

  it('lets a peer move its layers (rebalancing): the directory lists the new ones, and generations route through it with the same tokens', async () => {
    const { value } = await simulate(async () => {
      const net = simNetwork(MODEL)
      for (const l of THIRDS) await net.add(peer(l))
      const expected = (await generate(net, REQ)).tokens
      const spare = await net.add(peer([0, 27]))
      spare.move([27, 54], [27, 54])
      net.peers[1].kill({ withdraw: true }) // the middle third's only other server
      await new Promise((r) => setTimeout(r, 1000)) // the clients' cache of the directory
      const moved = await generate(net, REQ)
      return { expected, moved, spare: spare.id, record: spare.capability() }
    })
    expect(value.record.layers).toEqual([27, 54])
    expect(value.record.shardBounds).toEqual([27, 54])
    expect(value.moved.tokens).toEqual(value.expected)
    expect(value.moved.route.hops.find((h) => h.layers[0] === 27)?.peer).toBe(value.spare)
  })

  it('runs a churning swarm with cheaters and an outage under redundant checking: generations complete, none with wrong tokens, no honest peer accused, every layer stays covered', async () => {
    const r = await simulateSwarm({
      ...swarmDefaults(40),
      gpuMix: [[GPUS.rtx3090, 1]], // 45 of 80 layers each: routes of two hops or more
      tabStayMs: 60_000, // churn fast enough to see in three minutes
      sessions: 3,
      tokens: 16,
      faultyShare: 0.1,
      verification: { mode: 'redundant', k: 2 },
      outage: { atMs: 60_000, share: 0.3 },
      durationMs: 180_000, // three minutes: a client's first stream to each peer pays for the connection too
      sampleMs: 10_000,
      seed: 3
    })
    expect(r.completed).toBeGreaterThan(10)
    expect(r.left).toBeGreaterThan(5) // churn and the outage happened
    expect(r.wrongTokens).toBe(0)
    expect(r.honestAccused).toBe(0)
    expect(r.coverage.samples.length).toBeGreaterThanOrEqual(12)
    expect(r.coverage.min).toBeGreaterThanOrEqual(1)
  })

  it('projects speculative decoding with the expected tokens a pass that drafting and checking actually yield', () => {
    // γ drafts, each kept with chance α until the first miss, then the target's own token: simulated draw by draw.
    const rand = mulberry32(3)
    for (const [alpha, gamma] of [
      [0.5, 2],
      [0.7, 4],
      [0.9, 8]
    ]) {
      let total = 0
      const passes = 100_000
      for (let i = 0; i < passes; i++) {
        let kept = 0
        while (kept < gamma && rand() < alpha) kept++
        total += kept + 1
      }
      expect(total / passes).toBeCloseTo(tokensPerPass(alpha, gamma), 1)
    }
    expect(tokensPerPass(1, 4)).toBe(5)
  })
})
