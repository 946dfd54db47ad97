/**
 * Hop marks (shared/hop-marks.ts), which the network bench's anatomy of a hop in place rests on: every
 * step marks each stage once, on both ends, in the order the stages run, and nothing is marked
 * without a sink.
 */
import { afterAll, beforeAll, expect, it } from 'vitest'
import { buildStories, modelRunners, type ModelRunners } from '../helpers/memory-model.js'
import { memoryNet, type MemoryNet } from '../helpers/memory-net.js'
import { TEST_TIMEOUTS } from '../helpers/memory-client.js'
import { reference } from '../helpers/reference.js'
import { openRemoteHop } from '../../shared/client/remote-hop.js'
import { useHopMarks, type HopMark } from '../../shared/hop-marks.js'

let model: ModelRunners
let net: MemoryNet
const c = reference()[0]

beforeAll(async () => {
  model = await modelRunners(await buildStories([2]))
  net = memoryNet(model)
})
afterAll(async () => {
  useHopMarks(undefined)
  net?.stop()
  await model?.dispose()
})

const ORDER: HopMark[] = ['client:send', 'node:read', 'node:start', 'node:computed', 'node:signed', 'client:reply', 'node:sent']

it('marks each stage of each step once, on both ends, in the order they run, and nothing without a sink', async () => {
  const p = await net.add({ layers: [2, 5], msPerLayer: 4 })
  const hop = await openRemoteHop(net.dialer, p.capability(), p.layers, model.manifest.root, 'traced', TEST_TIMEOUTS)
  const marks: Array<{ mark: HopMark; session: string; hop: number; step: number; at: number }> = []
  let tick = 0 // a counter for a clock: the order is what is checked
  useHopMarks((mark, session, h, step) => marks.push({ mark, session, hop: h, step, at: tick++ }))
  const hidden = new Float32Array(model.manifest.config.dim * c.prompt.length).fill(0.5)
  await hop.forward({ hidden, seq: c.prompt.length }, 0)
  await hop.forward({ hidden: hidden.subarray(0, model.manifest.config.dim), seq: 1 }, c.prompt.length)
  useHopMarks(undefined)
  await hop.forward({ hidden: hidden.subarray(0, model.manifest.config.dim), seq: 1 }, c.prompt.length + 1)
  hop.close()

  expect(marks.every((m) => m.session === 'traced' && m.hop === 2)).toBe(true)
  for (const step of [0, 1]) {
    const mine = marks.filter((m) => m.step === step)
    expect(new Set(mine.map((m) => m.mark)).size).toBe(mine.length) // each once
    const at = (mark: HopMark): number => mine.find((m) => m.mark === mark)?.at ?? Number.NaN
    // client:reply and node:sent race in one process (the client may read before the write resolves): both after the receipt.
    for (const [a, b] of ORDER.slice(0, 5).map((m, i) => [m, ORDER[i + 1]])) expect(at(a), `${a} before ${b}`).toBeLessThan(at(b))
    expect(at('node:signed')).toBeLessThan(at('node:sent'))
  }
  expect(marks.some((m) => m.step === 2)).toBe(false)
})
