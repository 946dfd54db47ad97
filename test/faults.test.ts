/**
 * Fault drills: honest peers and one faulty peer (each `--fault` kind in turn) on the in-process
 * network (test/helpers/memory-net.ts: real handlers, onnxruntime, receipts signed by each peer's
 * own key), the client wired as the relay wires its own: the SQLite ledger re-checking the
 * evidence, a cached link to it, blacklisted peers left out of listings. No sockets, so a new
 * incarnation of the faulty peer costs a key, not a node start, and hundreds of generations stay cheap.
 *
 * stories260K in two shards: [0,2) is served by two honest nodes and the faulty one, [2,5) by
 * two honest nodes. A trial is a generation in which the faulty peer ran or checked a hop (lanes
 * are drawn at random, as a cheater cannot know who checks it). Each time the faulty identity
 * is blacklisted it comes back under a new one, as a real cheater would.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { startRelay } from '../relay/relay.js'
import { startNode } from '../native-node/node.js'
import { parseFault } from '../shared/node/fault.js'
import type { GenerationRequest, GenerationResult } from '../shared/client/types.js'
import type { Client, ClientConfig } from '../shared/client/client.js'
import { CircuitBreaker } from '../shared/client/breaker.js'
import { CircuitOpenError, VerificationError } from '../shared/errors.js'
import { reference } from './helpers/reference.js'
import { tempDir } from './helpers/paths.js'
import { waitFor } from './helpers/network.js'
import { buildStories, modelRunners, type ModelRunners } from './helpers/memory-model.js'
import type { MemoryPeer } from './helpers/memory-net.js'
import { drillNetwork as drill, type Drill } from './helpers/memory-drill.js'

let model: ModelRunners

async function run(client: Client, req: GenerationRequest): Promise<GenerationResult> {
  const gen = client.generate(req)
  for (let r = await gen.next(); ; r = await gen.next()) if (r.done === true) return r.value
}

/** Honest peers on these layers and a client as the relay's (helpers/memory-drill.ts). */
const drillNetwork = async (honest: Array<[number, number]>, seed: number | undefined, client: Partial<ClientConfig> = {}): Promise<Drill> =>
  await drill(model, { honest, seed, client })

async function listed(client: Client, peer: string): Promise<void> {
  await waitFor(async () => (await client.network()).peers.some((p) => p.peer === peer), 10_000)
}

/** Blacklisted: the directory no longer lists it, so no route can use it. Then it goes, as a stopped node withdraws. */
async function retire(d: Drill, p: MemoryPeer): Promise<void> {
  await waitFor(async () => !(await d.client.network()).peers.some((x) => x.peer === p.id), 5_000)
  p.kill({ withdraw: true })
}

beforeAll(async () => {
  model = await modelRunners(await buildStories([2]))
})
afterAll(async () => {
  await model?.dispose()
})

describe('--fault', () => {
  it('parses every kind and says what a bad one needs', () => {
    expect(parseFault('wrong-weights')).toEqual({ kind: 'wrong-weights', seed: 1 })
    expect(parseFault('wrong-weights=7')).toEqual({ kind: 'wrong-weights', seed: 7 })
    expect(parseFault('perturb=0.05')).toEqual({ kind: 'perturb', eps: 0.05 })
    expect(parseFault('skip-layer=3')).toEqual({ kind: 'skip-layer', layer: 3 })
    expect(parseFault('slow=8000')).toEqual({ kind: 'slow', ms: 8000 })
    expect(() => parseFault('slow=0')).toThrow(/slow needs a delay in ms, e\.g\. slow=8000/)
    for (const k of ['random-output', 'replay', 'copy-receipt']) expect(parseFault(k)).toEqual({ kind: k })
    expect(() => parseFault('perturb')).toThrow(/perturb needs a positive noise scale, e\.g\. perturb=0\.05/)
    expect(() => parseFault('perturb=-1')).toThrow(/positive noise scale/)
    expect(() => parseFault('skip-layer=x')).toThrow(/needs a layer number/)
    expect(() => parseFault('replay=2')).toThrow(/takes no value/)
    expect(() => parseFault('lie')).toThrow(/unknown fault "lie"; one of: wrong-weights, perturb, skip-layer, random-output, replay, copy-receipt, slow/)
  })

  // native-node/node.ts's own check, so a real relay and node.
  it('a node refuses to skip a layer it does not serve', async () => {
    const relay = await startRelay({ httpPort: 0, p2pPort: 0, models: [model.dir], ledger: join(tempDir('skip-ledger'), 'ledger.sqlite') })
    try {
      const node = startNode({ relay: relay.addr, model: model.dir, layers: [2, 5], fault: parseFault('skip-layer=1') })
      await expect(node).rejects.toThrow(/skip-layer=1, but this node serves layers \[2,5\)/)
    } finally {
      await relay.stop()
    }
  })
})

describe('redundant k=2 + referee: every fault kind is caught in 50 of 50 trials', () => {
  const kinds = ['wrong-weights', 'perturb=0.05', 'skip-layer=1', 'random-output', 'replay', 'copy-receipt']
  for (const [i, spec] of kinds.entries()) {
    it(`--fault ${spec}`, async () => {
      const net = await drillNetwork(
        [
          [0, 2],
          [0, 2],
          [2, 5],
          [2, 5]
        ],
        100 + i
      )
      const cases = reference()
      const identities: string[] = []
      const incarnate = async (): Promise<MemoryPeer> => {
        const n = await net.add({ layers: [0, 2], fault: spec })
        identities.push(n.id)
        await listed(net.client, n.id)
        return n
      }
      let faulty = await incarnate()
      let trials = 0
      let detected = 0
      try {
        for (let g = 0; trials < 50 && g < 300; g++) {
          const c = cases[g % cases.length]
          // Short generations keep 50 trials cheap; every tenth runs the whole decisive prefix.
          const n = g % 10 === 0 ? c.decisive_prefix : Math.min(4, c.decisive_prefix)
          const r = await run(net.client, { prompt: c.prompt, maxTokens: n, verification: { mode: 'redundant', k: 2 } })
          // The network still answers right, whoever cheated.
          expect(r.tokens, `generation ${g}`).toEqual(c.greedy.slice(0, n))
          const v = r.verification
          const caught = v.faults.filter((f) => f.accused === faulty.id)
          const involved = caught.length > 0 || v.hops.some((h) => h.ranBy.includes(faulty.id) || h.checkedBy.includes(faulty.id))
          expect(
            v.faults.every((f) => f.accused === faulty.id),
            'only the faulty peer is ever accused'
          ).toBe(true)
          if (!involved) continue
          trials++
          if (caught.length > 0) detected++
          for (const f of caught) {
            if (spec === 'copy-receipt') {
              // Another identity's signature proves nothing about the sender to a third party:
              // the result is refused and the sender's reputation drops, but no slash.
              expect(f.reason).toMatch(/receipt rejected: signed for/)
              expect(f.slashed).toBe(false)
            } else {
              expect(f.slashed, f.reason).toBe(true)
              expect(f.witnesses).toHaveLength(2)
              // The drill's ledger re-executes the hop (as the relay does): its own run convicts, not a count of witnesses.
              expect(f.reason).toMatch(/the relay re-ran layers \[0,2\)/)
            }
          }
          if ((await net.ledger.standing(faulty.id)).blacklisted) {
            // Blacklisted: the directory no longer lists it, so no route can use it. A new identity.
            await retire(net, faulty)
            faulty = await incarnate()
          }
        }
        console.log(`--fault ${spec}: detected ${detected} of ${trials} trials; ${identities.length} identities used`)
        expect(trials).toBe(50)
        expect(detected).toBe(50)

        const ledger = net.ledger
        for (const id of identities.slice(0, -1)) {
          const s = await ledger.standing(id)
          expect(s.blacklisted, `retired identity ${id}`).toBe(true)
          if (spec === 'copy-receipt') expect(s.reputation).toBeLessThan(0.3)
          else {
            expect(s.slashed).toBe(3)
            expect(s.stake).toBeCloseTo(100 / 8)
          }
        }
        for (const h of net.honest) expect(await ledger.standing(h.id)).toMatchObject({ slashed: 0, blacklisted: false, stake: 100 })
        expect(await ledger.verifyAudit()).toEqual({ ok: true, badSeq: null })
      } finally {
        await net.stop()
      }
    }, 300_000)
  }
})

describe('spot checks with p = 0.2', () => {
  it('catch a faulty peer at about the rate 1 − (1 − p)^steps predicts', async () => {
    const net = await drillNetwork(
      [
        [0, 2],
        [0, 2],
        [2, 5],
        [2, 5]
      ],
      7
    )
    const p = 0.2
    const steps = 8
    let faulty = await net.add({ layers: [0, 2], fault: 'random-output' })
    await listed(net.client, faulty.id)
    const cases = reference()
    let trials = 0
    let detected = 0
    try {
      for (let g = 0; trials < 60 && g < 1500; g++) {
        const c = cases[g % cases.length]
        const slashed = (await net.ledger.standing(faulty.id)).slashed
        const r = await run(net.client, { prompt: c.prompt, maxTokens: steps, verification: { mode: 'spot', p } }).catch((e: unknown) => e)
        if (r instanceof VerificationError) {
          // Caught after its output had gone on: none of the tokens since are returned, the generation is refused.
          expect(r.message).toMatch(new RegExp(`peer ${faulty.id.slice(-8)} was caught on layers \\[0,2\\).*tokens from step 0 on were computed through it`))
          expect((await net.ledger.standing(faulty.id)).slashed).toBe(slashed + 1)
          trials++
          detected++
        } else {
          const v = (r as GenerationResult).verification
          // A trial: the faulty peer computed the hop from the first step (it was drawn as the primary).
          const primaryAtStart = v.hops.find((h) => h.layers[0] === 0)?.ranBy[0] === faulty.id
          if (primaryAtStart) {
            trials++
            // Caught at the very first step: the checker's output went on, no token came from the cheater.
            if (v.faults.some((f) => f.accused === faulty.id && f.slashed)) detected++
          }
        }
        // (caught as a checker too: a checker's work is checked in turn)
        if ((await net.ledger.standing(faulty.id)).blacklisted) {
          await retire(net, faulty)
          faulty = await net.add({ layers: [0, 2], fault: 'random-output' })
          await listed(net.client, faulty.id)
        }
      }
      const expected = 1 - (1 - p) ** steps
      const rate = detected / trials
      const sd = Math.sqrt((expected * (1 - expected)) / trials)
      const seen = `detected in ${detected} of ${trials} generations (${rate.toFixed(3)})`
      console.log(`spot p=${p}, ${steps} steps: ${seen}; expected ${expected.toFixed(3)} ± ${sd.toFixed(3)}`)
      expect(trials).toBe(60)
      // Four standard deviations: a miss here means sampling is not doing what p says.
      expect(Math.abs(rate - expected)).toBeLessThan(4 * sd)
    } finally {
      await net.stop()
    }
  }, 300_000)
})

describe('circuit breaker', () => {
  it('opens after repeated unverifiable generations, refuses with a clear error, and closes once a health check and a probe pass', async () => {
    let t = 0
    const b = new CircuitBreaker({ windowMs: 1000, minFailures: 3, maxFailureRate: 0.5, cooldownMs: 500 }, () => t)
    const healthy = async (): Promise<{ ok: boolean; reason: string }> => ({ ok: true, reason: '' })
    for (const ok of [true, true, false, true, false]) b.record(ok)
    expect(b.state).toBe('closed') // 2 of 5
    b.record(false)
    expect(b.state).toBe('open') // 3 of 6
    await expect(b.admit(healthy)).rejects.toThrow(/3 of the last 6 generations could not be verified.*health check runs in 1 s/)
    t = 600
    await expect(b.admit(async () => ({ ok: false, reason: 'layers 0-2 uncovered' }))).rejects.toThrow(/health check failed \(layers 0-2 uncovered\)/)
    t = 1200
    await b.admit(healthy)
    expect(b.state).toBe('half-open')
    b.record(false) // the probe failed: open again
    expect(b.state).toBe('open')
    t = 1800
    await b.admit(healthy)
    b.record(true)
    expect(b.state).toBe('closed')
    // Old failures leave the window.
    b.record(false)
    b.record(false)
    t = 3000
    b.record(false)
    expect(b.state).toBe('closed')
  })

  it('on the network: two disagreeing cheaters pause requests until honest peers join', async () => {
    // No seed: the relay drew with Math.random here.
    // Two cheaters that disagree with each other and with the relay's own re-execution: nobody is right.
    const d = await drillNetwork([], undefined, { breaker: { minFailures: 3, cooldownMs: 1000 } })
    const cheats = [await d.add({ layers: [0, 2], fault: 'random-output' }), await d.add({ layers: [0, 2], fault: 'skip-layer=1' })]
    for (let i = 0; i < 2; i++) await d.add({ layers: [2, 5] })
    const c = reference()[0]
    const req: GenerationRequest = { prompt: c.prompt, maxTokens: 3, verification: { mode: 'redundant', k: 2 } }
    try {
      await waitFor(async () => (await d.client.network()).peers.length === 4)
      for (let i = 0; i < 3; i++)
        await expect(run(d.client, req)).rejects.toThrow(/no peer computed layers \[0,2\) at step 0 as the relay's re-execution does: no result is returned/)
      expect(d.client.breaker.state).toBe('open')
      const paused = await run(d.client, req).catch((e: unknown) => e)
      expect(paused).toBeInstanceOf(CircuitOpenError)
      expect((paused as Error).message).toMatch(/requests are paused: 3 of the last 3 generations could not be verified/)
      // Each failure convicted both cheaters on the re-execution's word: three slashes blacklisted them.
      for (const p of cheats) expect((await d.ledger.standing(p.id)).blacklisted).toBe(true)
      // Two honest peers join: after the cool-down the health check passes, the probe verifies, and requests flow again.
      for (let i = 0; i < 2; i++) await listed(d.client, (await d.add({ layers: [0, 2] })).id)
      await new Promise((resolve) => setTimeout(resolve, 1100))
      const r = await run(d.client, req)
      expect(r.tokens).toEqual(c.greedy.slice(0, 3))
      expect(d.client.breaker.state).toBe('closed')
    } finally {
      await d.stop()
    }
  }, 120_000)
})
