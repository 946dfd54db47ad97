/**
 * The KV cache layouts (shared/shard/build.ts `kv`, shared/runner.ts): append (plain ops over a
 * buffer the runner owns, only new rows returned), GroupQueryAttention over such a buffer (updated
 * in place on onnxruntime-node, fed back on onnxruntime-web) and plain-ops concat compute the same thing; a cache grown past its first capacity keeps its rows;
 * truncating a session to an earlier length and feeding it gives what a fresh session fed the same
 * tokens gives, on both runtimes and both layouts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { onnx } from '../shared/shard/graph.js'
import { buildModel } from '../host/model-store.js'
import { loadModel } from '../native-node/store.js'
import { randomWeights } from '../shared/model/random.js'
import { preset } from '../shared/model/config.js'
import { Pipeline, lastRow } from '../shared/pipeline.js'
import { InputError } from '../shared/errors.js'
import type { ShardRunner } from '../shared/runner.js'
import type { KvLayout } from '../shared/shard/build.js'
import { loadWasmRunners } from './helpers/wasm.js'
import { maxAbsDiff, TOLERANCE } from './helpers/reference.js'
import { tempDir } from './helpers/paths.js'

// `tiny`: head size 16, 4 layers, cut in two so hidden states cross a shard boundary too.
const config = preset('tiny')
const LAYOUTS: KvLayout[] = ['append', 'gqa', 'concat']
const runtimes: Record<string, ShardRunner[]> = {}
const dirs: Record<string, string> = {}
const ids = (n: number, from = 1): number[] => Array.from({ length: n }, (_, i) => (from + i * 37) % config.vocabSize)

/** Logits of each step when feeding `steps` chunks into a fresh pipeline. */
async function run(runners: ShardRunner[], steps: number[][]): Promise<Float32Array[]> {
  const p = new Pipeline(runners.map((r) => r.open()))
  const out: Float32Array[] = []
  for (const s of steps) out.push(lastRow(await p.step(s)))
  p.close()
  return out
}

beforeAll(async () => {
  const weights = randomWeights(config, 5)
  for (const kv of LAYOUTS) {
    dirs[kv] = tempDir(`kv-${kv}`)
    const manifest = await buildModel(weights, dirs[kv], { source: 'random:tiny:5', cuts: [2], kv })
    runtimes[`${kv} onnxruntime-node`] = (await loadModel(dirs[kv], { device: 'cpu' })).runners
    runtimes[`${kv} onnxruntime-web wasm`] = await loadWasmRunners(dirs[kv], manifest)
  }
})
afterAll(async () => {
  for (const rs of Object.values(runtimes)) for (const r of rs) await r.dispose()
})

describe('KV cache layouts', () => {
  it('a gqa shard runs GroupQueryAttention on a buffer it reads and writes; an append shard returns only the new rows', async () => {
    for (const kv of LAYOUTS) {
      const model = onnx.ModelProto.decode(await readFile(join(dirs[kv], 'shard-0.onnx')))
      const gqa = (model.graph?.node ?? []).filter((n) => n.opType === 'GroupQueryAttention')
      expect(gqa.length).toBe(kv === 'gqa' ? 2 : 0)
      // The op writes the graph's cache outputs itself: no Identity in between, or nothing is updated in place.
      for (const n of gqa) expect(n.output?.slice(1)).toEqual([expect.stringMatching(/^present_key\./), expect.stringMatching(/^present_value\./)])
      const outputs = (model.graph?.output ?? []).map((o) => o.name)
      expect(outputs.some((o) => o?.startsWith('present_'))).toBe(kv !== 'append')
      expect(outputs.filter((o) => o?.startsWith('new_'))).toHaveLength(kv === 'append' ? 4 : 0)
    }
  })

  it('both layouts, on both runtimes, give the same logits through a prefill, a chunk and decode steps past the first capacity', async () => {
    // 70 + 9 + 1-token steps: the in-place buffer starts at 64 rows and has to grow (twice).
    const steps = [ids(70), ids(9, 5), ...Array.from({ length: 60 }, (_, i) => [(i * 11) % config.vocabSize])]
    const base = await run(runtimes['concat onnxruntime-node'], steps)
    for (const [name, runners] of Object.entries(runtimes)) {
      const got = await run(runners, steps)
      const worst = Math.max(...got.map((g, i) => maxAbsDiff(g, base[i])))
      expect(worst, name).toBeLessThan(TOLERANCE)
    }
  })

  for (const name of LAYOUTS.flatMap((kv) => [`${kv} onnxruntime-node`, `${kv} onnxruntime-web wasm`])) {
    it(`${name}: a session truncated to an earlier length and fed again equals a fresh one fed the same tokens`, async () => {
      const runners = runtimes[name]
      const prompt = ids(80)
      const later = [ids(3, 9), [17], [23]]
      const fresh = await run(runners, [prompt.slice(0, 50), ...later])

      const sessions = runners.map((r) => r.open())
      const p = new Pipeline(sessions)
      await p.step(prompt)
      for (const t of [5, 6, 7]) await p.step([t])
      expect(sessions.map((s) => s.length)).toEqual([83, 83])
      for (const s of sessions) s.truncate(50)
      const rewound: Float32Array[] = []
      for (const s of later) rewound.push(lastRow(await p.step(s)))
      expect(sessions.map((s) => s.length)).toEqual([55, 55])
      // Within the reference tolerance: a truncated buffer keeps its larger capacity, so the
      // masked rows change the reductions' blocking (seen: 1.1e-5 on WASM); stale rows that
      // leaked into attention would move the logits by orders of magnitude more.
      for (const [i, r] of rewound.entries()) expect(maxAbsDiff(r, fresh[i + 1]), `step ${i}`).toBeLessThan(TOLERANCE)

      expect(() => sessions[0].truncate(56)).toThrow(InputError)
      expect(() => sessions[0].truncate(-1)).toThrow(InputError)
      p.close()
    })
  }
})
