/**
 * A step that starts before the end of a session's cache (what a speculative client sends after
 * its check rejected some drafts): the node drops the rows from there on, so the session computes
 * exactly what a session that never saw them computes, the receipts' input chain rewinds with the
 * rows, the node's KV accounting gives the dropped rows back, and a step that skips ahead is still
 * refused. On stories260K's real shard [2,5), in process.
 */
import { afterAll, beforeAll, expect, it } from 'vitest'
import { buildStories, modelRunners, type ModelRunners } from '../helpers/memory-model.js'
import { memoryNet, type MemoryNet } from '../helpers/memory-net.js'
import { TEST_TIMEOUTS } from '../helpers/memory-client.js'
import { openRemoteHop } from '../../shared/client/remote-hop.js'
import { chainRows, EMPTY_CHAIN, openReceipt } from '../../shared/verify/receipt.js'
import { mulberry32 } from '../../shared/rng.js'
import type { HopError } from '../../shared/errors.js'

let model: ModelRunners
let net: MemoryNet

beforeAll(async () => {
  model = await modelRunners(await buildStories([2]))
  net = memoryNet(model)
})
afterAll(async () => {
  net?.stop()
  await model?.dispose()
})

const rows = (n: number, seed: number): Float32Array => {
  const r = mulberry32(seed)
  return Float32Array.from({ length: n * model.manifest.config.dim }, () => r() * 2 - 1)
}
const bytes = (x: Float32Array): Uint8Array => new Uint8Array(x.buffer, x.byteOffset, x.byteLength)

it('rewinds a session to the step’s start: the same output as a session that never had the dropped rows, a receipt chained over the rows kept', async () => {
  const p = await net.add({ layers: [2, 5], msPerLayer: 1 })
  const root = model.manifest.root
  const dim = model.manifest.config.dim
  const drafts = rows(4, 1) // four rows, of which the check keeps two
  const next = rows(2, 2)

  const spec = await openRemoteHop(net.dialer, p.capability(), p.layers, root, 'speculative', TEST_TIMEOUTS)
  await spec.forward({ hidden: drafts, seq: 4 }, 0)
  expect(p.handler.stats.cachedTokens).toBe(4)
  const rewound = await spec.forward({ hidden: next, seq: 2 }, 2)
  expect(p.handler.stats.cachedTokens).toBe(4) // 4 − 2 dropped + 2 new

  const plain = await openRemoteHop(net.dialer, p.capability(), p.layers, root, 'plain', TEST_TIMEOUTS)
  await plain.forward({ hidden: drafts.subarray(0, 2 * dim), seq: 2 }, 0)
  const straight = await plain.forward({ hidden: next, seq: 2 }, 2)
  expect(rewound.data).toEqual(straight.data)

  // The receipt states the chain over the rows the session holds now: the two kept, then the two new.
  const kept = chainRows(chainRows(EMPTY_CHAIN, bytes(drafts.subarray(0, 2 * dim)), 2), bytes(next), 2)
  expect((await openReceipt(rewound.receipt)).input).toEqual(kept)

  // Rewinding further, to the start, and stepping on still agrees; skipping ahead is refused.
  const again = await spec.forward({ hidden: next.subarray(0, dim), seq: 1 }, 0)
  const fresh = await openRemoteHop(net.dialer, p.capability(), p.layers, root, 'fresh', TEST_TIMEOUTS)
  expect(again.data).toEqual((await fresh.forward({ hidden: next.subarray(0, dim), seq: 1 }, 0)).data)
  await expect(spec.forward({ hidden: next.subarray(0, dim), seq: 1 }, 3)).rejects.toMatchObject({ code: 'BAD_STEP' } satisfies Partial<HopError>)
  for (const h of [spec, plain, fresh]) h.close()
})
