/**
 * Continuous batching (shared/batch.ts, shared/kv-pool.ts): eight sessions of stories260K with
 * different prompts and lengths, run at once through shards that batch their one-token steps,
 * each return llama2.c's reference ids, the same ids as one at a time, on onnxruntime-node and
 * onnxruntime-web WASM; batched rows' fingerprints pass the calibrated thresholds against an
 * unbatched peer's; a session rewound inside a busy pool continues as a fresh one would; a peer
 * cycling sessions through every cache size leaves the pools no bigger than its live sessions need.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildModel } from '../host/model-store.js'
import { loadModel } from '../native-node/store.js'
import { loadWasmRunners } from './helpers/wasm.js'
import { batchLimits } from '../shared/batch.js'
import type { ShardRunner } from '../shared/runner.js'
import { kvCapacity } from '../shared/kv-pool.js'
import { headDim } from '../shared/model/config.js'
import type { Manifest } from '../shared/manifest.js'
import { Pipeline, lastRow } from '../shared/pipeline.js'
import { argmax } from '../shared/sampler.js'
import { compareFingerprints, fingerprint, THRESHOLDS } from '../shared/verify/fingerprint.js'
import { maxAbsDiff, reference, stories, TOLERANCE } from './helpers/reference.js'
import { tempDir } from './helpers/paths.js'

// Cut in two so hidden states are batched too; a 16-token chunk makes the 41-token prompt a
// chunked prefill that other sessions' decode steps run between.
const BATCHED = batchLimits({ maxRows: 8, prefillChunk: 16 })
const ALONE = batchLimits({ maxRows: 1 })

/** Eight sessions: the six reference cases, and two of them again, shorter. */
const sessions = (): Array<{ prompt: number[]; expect: number[] }> => {
  const cases = reference()
  const all = cases.map((c) => ({ prompt: c.prompt, expect: c.greedy.slice(0, c.decisive_prefix) }))
  all.push({ prompt: cases[0].prompt, expect: cases[0].greedy.slice(0, 30) })
  all.push({ prompt: cases[2].prompt, expect: cases[2].greedy.slice(0, 57) })
  return all
}

/** Greedy decoding of `n` tokens; every step's outputs per shard are kept for fingerprints. */
async function greedy(
  runners: ShardRunner[],
  prompt: number[],
  n: number
): Promise<{ ids: number[]; outs: Array<Array<{ data: Float32Array; seq: number; width: number }>> }> {
  const hops = runners.map((r) => r.open())
  const outs: Array<Array<{ data: Float32Array; seq: number; width: number }>> = runners.map(() => [])
  const ids: number[] = []
  try {
    let feed = prompt
    while (ids.length < n) {
      let out = await hops[0].forward({ tokens: feed })
      outs[0].push(out)
      for (const [i, h] of hops.slice(1).entries()) {
        out = await h.forward({ hidden: out.data, seq: out.seq })
        outs[i + 1].push(out)
      }
      const id = argmax(lastRow(out))
      ids.push(id)
      feed = [id]
    }
  } finally {
    for (const h of hops) h.close()
  }
  return { ids, outs }
}

const runAll = async (runners: ShardRunner[]): Promise<Array<Awaited<ReturnType<typeof greedy>>>> =>
  await Promise.all(sessions().map(async (s) => await greedy(runners, s.prompt, s.expect.length)))

describe('continuous batching, stories260K in 2 shards', () => {
  const runtimes: Record<string, { batched: ShardRunner[]; alone: ShardRunner[] }> = {}
  let dir = ''
  let manifest: Manifest
  beforeAll(async () => {
    dir = tempDir('batch')
    manifest = await buildModel(await stories(), dir, { source: 'stories260K.bin', cuts: [3] })
    runtimes['onnxruntime-node'] = {
      batched: (await loadModel(dir, { device: 'cpu', batch: BATCHED })).runners,
      alone: (await loadModel(dir, { device: 'cpu', batch: ALONE })).runners
    }
    runtimes['onnxruntime-web wasm'] = { batched: await loadWasmRunners(dir, manifest, BATCHED), alone: await loadWasmRunners(dir, manifest, ALONE) }
  })
  afterAll(async () => {
    for (const rt of Object.values(runtimes)) for (const r of [...rt.batched, ...rt.alone]) await r.dispose()
  })

  for (const runtime of ['onnxruntime-node', 'onnxruntime-web wasm']) {
    it(`${runtime}: 8 concurrent sessions each return their reference ids, token-identical with one at a time`, async () => {
      const { batched, alone } = runtimes[runtime]
      const together = await runAll(batched)
      // Batches really formed, on both shards.
      for (const r of batched) {
        const b = r.batching!
        expect(b.widest, `shard ${r.shard.index}`).toBeGreaterThanOrEqual(4)
        expect(b.rows / b.runs, `shard ${r.shard.index}: rows per run`).toBeGreaterThan(2)
      }
      const expected = sessions()
      for (const [i, got] of together.entries()) expect(got.ids, `session ${i}`).toEqual(expected[i].expect)
      // One at a time, unbatched: the same tokens, and the same outputs within the reference tolerance.
      for (const [i, s] of expected.entries()) {
        const one = await greedy(alone, s.prompt, s.expect.length)
        expect(one.ids, `session ${i} alone`).toEqual(together[i].ids)
        for (const [h, steps] of one.outs.entries()) {
          for (const [t, o] of steps.entries())
            expect(maxAbsDiff(o.data, together[i].outs[h][t].data), `session ${i} shard ${h} step ${t}`).toBeLessThan(TOLERANCE)
        }
      }
      for (const r of alone) expect(r.batching!.widest).toBe(1)
    })
  }

  it("a batched peer's fingerprints pass the calibrated thresholds against an unbatched peer's, every step, both shards", async () => {
    const batched = await runAll(runtimes['onnxruntime-node'].batched)
    const wasm = runtimes['onnxruntime-web wasm'].alone
    let compared = 0
    for (const [i, s] of sessions().entries()) {
      const one = await greedy(wasm, s.prompt, s.expect.length)
      for (const [h, steps] of one.outs.entries()) {
        for (const [t, o] of steps.entries()) {
          const b = batched[i].outs[h][t]
          const c = compareFingerprints(fingerprint(b.data, b.seq, b.width), fingerprint(o.data, o.seq, o.width))
          expect(c.verdict, `session ${i} shard ${h} step ${t}`).toBe('match')
          expect(c.minOverlap).toBeGreaterThanOrEqual(THRESHOLDS.minOverlap)
          expect(c.maxRelErr).toBeLessThanOrEqual(THRESHOLDS.maxRelErr)
          compared++
        }
      }
    }
    expect(compared).toBeGreaterThan(800)
  })

  it('a session rewound to an earlier length inside a busy pool continues as a fresh session fed the same tokens', async () => {
    const runners = runtimes['onnxruntime-node'].batched
    const [c] = reference()
    const tokens = [...c.prompt, ...c.greedy.slice(0, 40)]
    // Others decode in the same pool meanwhile, so rows move and batches mix.
    const others = sessions()
      .slice(1, 5)
      .map(async (s) => await greedy(runners, s.prompt, 20))
    const p = new Pipeline(runners.map((r) => r.open()))
    for (const t of tokens) await p.step([t])
    for (const h of (p as unknown as { hops: Array<{ truncate: (n: number) => void }> }).hops) h.truncate(20)
    const rewound = [lastRow(await p.step(tokens.slice(20, 24))), lastRow(await p.step([7]))]
    p.close()
    await Promise.all(others)
    const fresh = new Pipeline(runners.map((r) => r.open()))
    await fresh.step(tokens.slice(0, 20))
    const again = [lastRow(await fresh.step(tokens.slice(20, 24))), lastRow(await fresh.step([7]))]
    fresh.close()
    for (const [i, r] of rewound.entries()) expect(maxAbsDiff(r, again[i])).toBeLessThan(TOLERANCE)
  })

  it('an attacker cycling waves of sessions through every cache size leaves the pools sized to what stays open, not to the peak', async () => {
    const [first] = runtimes['onnxruntime-node'].batched
    const c = manifest.config
    const [a, b] = first.shard.layers
    const rowBytes = (b - a) * 2 * c.nKvHeads * headDim(c) * 4 // keys and values, every layer of the shard
    const kept: Array<ReturnType<ShardRunner['open']>> = []
    let peak = 0
    // A wave per capacity class (64, 128, 256, 512 rows): 8 sessions that fill it past half, then 7 closed.
    for (let rows = 64; rows <= c.maxSeqLen; rows *= 2) {
      const wave = Array.from({ length: 8 }, () => first.open())
      const fill = rows === 64 ? 32 : rows / 2 + 1 // the fewest tokens that need this class
      await Promise.all(wave.map(async (s, i) => await s.forward({ tokens: Array.from({ length: fill }, (_, j) => 1 + ((i + j) % 300)) })))
      peak = Math.max(peak, first.kvBytes!)
      for (const s of wave.slice(1)) s.close()
      kept.push(wave[0])
    }
    const live = kept.reduce((sum, s) => sum + kvCapacity(s.length, c.maxSeqLen), 0) * rowBytes
    // Each pool at most 4 × its live slots (it halves a quarter full); the peak held 8 per pool.
    expect(first.kvBytes!).toBeLessThanOrEqual(4 * live)
    expect(first.kvBytes!).toBeLessThan(peak / 2)
    for (const s of kept) s.close()
    expect(first.kvBytes!).toBeLessThanOrEqual(64 * rowBytes) // emptied, one 64-row slot at most
  })
})
