/**
 * A slot that one peer alone serves (a single tab lending layers [0, 1), say): when that peer
 * fails a step once and nobody else serves its layers, it is asked once more (fresh, fed the
 * slot's history) instead of the generation failing with NO_ROUTE; twice, and the generation
 * fails naming it. The in-process network: real client, handlers and onnxruntime shards of
 * stories260K, cut [0,1) [1,3) [3,5).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildStories, modelRunners, type ModelRunners } from '../helpers/memory-model.js'
import { memoryNet, type MemoryNet, type MemoryPeer, type PeerSpec } from '../helpers/memory-net.js'
import { generateAll, memoryClient } from '../helpers/memory-client.js'
import { reference } from '../helpers/reference.js'
import { NoRouteError } from '../../shared/errors.js'

let model: ModelRunners
let net: MemoryNet
const c = reference()[0]
const n = 4
const req = { prompt: c.prompt, maxTokens: n }

beforeAll(async () => {
  model = await modelRunners(await buildStories([1, 3]))
})
afterAll(async () => {
  net?.stop()
  await model?.dispose()
})

const fresh = (): MemoryNet => {
  net?.stop()
  net = memoryNet(model)
  return net
}
const add = async (layers: [number, number], o: Partial<PeerSpec> = {}): Promise<MemoryPeer> => await net.add({ layers, msPerLayer: 1, ...o })
const sleep = async (ms: number): Promise<void> => {
  await new Promise((resolve) => setTimeout(resolve, ms))
}
/** The peer's step `step` (counted over its sessions) fails once, with an error reply; the next try of it succeeds. */
const failOnce = (p: MemoryPeer, step: number): void => {
  let failed = false
  p.onStep = (served) => {
    if (served === step && !failed) {
      failed = true
      throw new Error('a one-off failure (a GPU hiccup)')
    }
  }
}

describe('a slot with one server', () => {
  for (const [label, slot] of [
    ['the first hop', 0],
    ['a middle hop', 1],
    ['the last hop', 2]
  ] as const) {
    for (const step of [0, 2]) {
      it(`${label}'s lone peer fails step ${step} once: it is asked again with the history, the generation completes`, async () => {
        fresh()
        const peers = [await add([0, 1]), await add([1, 3]), await add([3, 5])]
        failOnce(peers[slot], step)
        const r = await generateAll(memoryClient(net), req)
        expect(r.tokens).toEqual(c.greedy.slice(0, n))
        expect(r.route.switches).toHaveLength(1)
        expect(r.route.switches[0]).toMatchObject({ step, failed: peers[slot].id })
        expect(r.route.switches[0].replacement.map((h) => h.peer)).toEqual([peers[slot].id])
        expect(r.route.hops.map((h) => h.peer)).toEqual(peers.map((p) => p.id))
        // The failed session was dropped and a fresh one opened on the same peer.
        expect(peers[slot].handler.stats.opened).toBe(2)
      })
    }
  }

  it("a slow first hop's prefill outlasts the next hop's open-idle limit: the next hop is opened again, not NO_ROUTE", async () => {
    fresh()
    // A software-GPU tab taking its time over the prefill, and a node that drops a session opened but not used for 1 s.
    const first = await add([0, 1])
    first.onStep = async (served) => {
      if (served === 0) await sleep(2_000)
    }
    const mid = await add([1, 3], { serve: { sessionTtlMs: 1_000 } })
    await add([3, 5])
    const r = await generateAll(memoryClient(net), req)
    expect(r.tokens).toEqual(c.greedy.slice(0, n))
    expect(r.route.switches.map((s) => [s.step, s.failed])).toEqual([[0, mid.id]])
  })

  it('a lone peer that dies mid-step is asked once more, then the generation fails with NoRouteError naming it', async () => {
    fresh()
    await add([0, 1])
    const gone = await add([1, 3])
    gone.onStep = (served) => {
      if (served === 1) gone.kill()
    }
    await add([3, 5])
    const err = await generateAll(memoryClient(net), req).then(
      () => undefined,
      (e: unknown) => e
    )
    expect(err).toBeInstanceOf(NoRouteError)
    expect((err as Error).message).toMatch(/the last peer tried failed: peer .{8}: dial failed twice/)
    // One dial for the session it died in, two more when it was asked again (a dial is tried twice).
    expect(net.dials.filter((d) => d.peer === gone.id)).toHaveLength(3)
  })
})
