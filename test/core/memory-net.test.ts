/**
 * The in-process network itself (test/helpers/memory-net.ts), so the tests built on it rest on
 * checked ground: a peer answers the real protocol with the reference's numbers and receipts
 * its own key signed, a killed peer is gone the way a killed process is, and each kind of
 * fault changes what it should.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildStories, modelRunners, type ModelRunners } from '../helpers/memory-model.js'
import { memoryNet, type MemoryNet, type MemoryPeer } from '../helpers/memory-net.js'
import { TEST_TIMEOUTS } from '../helpers/memory-client.js'
import { maxAbsDiff, reference, TOLERANCE } from '../helpers/reference.js'
import { openRemoteHop, type RemoteHop } from '../../shared/client/remote-hop.js'
import type { HopError } from '../../shared/errors.js'
import { lastRow } from '../../shared/pipeline.js'

let model: ModelRunners
let net: MemoryNet
const c = reference()[0]

beforeAll(async () => {
  model = await modelRunners(await buildStories([2]))
  net = memoryNet(model)
})
afterAll(async () => {
  net?.stop()
  await model?.dispose()
})

let sessions = 0
const open = async (p: MemoryPeer): Promise<RemoteHop> =>
  await openRemoteHop(net.dialer, p.capability(), p.layers, model.manifest.root, `t${sessions++}`, TEST_TIMEOUTS)
const failure = async (p: Promise<unknown>): Promise<HopError> =>
  await p.then(
    () => {
      throw new Error('expected a HopError')
    },
    (e: HopError) => e
  )

describe('memory net', () => {
  it("serves the real protocol: the reference logits, under a receipt the peer's own key signed, and a record shaped like a node's", async () => {
    const p = await net.add({ layers: [0, 5], msPerLayer: 4 })
    const hop = await open(p)
    const out = await hop.forward({ tokens: c.prompt }, 0) // openRemoteHop has checked the receipt against p's id
    expect(out.kind).toBe('logits')
    expect(maxAbsDiff(lastRow(out), c.last_prompt_logits)).toBeLessThan(TOLERANCE)
    expect(p.capability()).toMatchObject({
      peer: p.id,
      layers: [0, 5],
      shardBounds: [0, 2, 5],
      msPerLayer: 4,
      root: model.manifest.root,
      modelLayers: 5,
      sessions: 1
    })
    // Its advertised KV room shrinks by what its sessions hold.
    const room = p.capability().kvRoom
    await hop.forward({ tokens: [c.greedy[0]] }, c.prompt.length)
    expect(p.capability().kvRoom).toBe(room - 1)
    hop.close()
  })

  it('kills like kill -9: an open session is reset mid-step, and dials fail from then on', async () => {
    const p = await net.add({ layers: [0, 2] })
    const seen: number[] = []
    p.onStep = (served) => {
      seen.push(served)
      if (served === 1) p.kill()
    }
    const hop = await open(p)
    await hop.forward({ tokens: c.prompt }, 0)
    const err = await failure(hop.forward({ tokens: [c.greedy[0]] }, c.prompt.length))
    expect(err.peer).toBe(p.id)
    expect(err.message).toMatch(/stream has been reset/)
    expect(seen).toEqual([0, 1])
    expect(p.handler.stats.steps, 'the step it died in was never finished').toBe(1)
    expect((await failure(open(p))).code).toBe('UNREACHABLE')
    expect(
      (await net.directory.list()).some((r) => r.peer === p.id),
      'its record lingers: nobody withdrew it'
    ).toBe(true)
  })

  it('commits each fault: random-output and skip-layer answer other numbers under valid receipts; copy-receipt is refused', async () => {
    const honest = await (await open(await net.add({ layers: [0, 2] }))).forward({ tokens: c.prompt }, 0)
    for (const fault of ['random-output', 'skip-layer=1', 'wrong-weights']) {
      const out = await (await open(await net.add({ layers: [0, 2], fault }))).forward({ tokens: c.prompt }, 0)
      expect(out.kind).toBe('hidden')
      expect(maxAbsDiff(out.data, honest.data), fault).toBeGreaterThan(1e-2)
    }
    const copier = await net.add({ layers: [0, 2], fault: 'copy-receipt' })
    expect((await failure((await open(copier)).forward({ tokens: c.prompt }, 0))).code).toBe('BAD_RECEIPT')
    await expect(net.add({ layers: [2, 5], fault: 'skip-layer=1' })).rejects.toThrow(/skip-layer=1 on a peer of layers \[2,5\)/)
  })
})
