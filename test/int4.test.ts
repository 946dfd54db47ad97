/**
 * int4 shards (MatMulNBits): they compute exactly the model their dequantized weights describe,
 * and stay within the README's stated tolerance of fp32.
 */
import { describe, expect, it } from 'vitest'
import { buildModel } from '../host/model-store.js'
import { loadModel } from '../native-node/store.js'
import { preset } from '../shared/model/config.js'
import { fromFloat16, toFloat16 } from '../shared/model/dtype.js'
import { randomWeights } from '../shared/model/random.js'
import { tensorShape, type TensorName, type WeightSource } from '../shared/model/weights.js'
import { Pipeline, lastRow } from '../shared/pipeline.js'
import { argmax } from '../shared/sampler.js'
import { dequantizeInt4, quantizeInt4 } from '../shared/shard/quant.js'
import type { WeightDType } from '../shared/shard/build.js'
import { maxAbsDiff } from './helpers/reference.js'
import { tempDir } from './helpers/paths.js'

/** The weights an int4 shard really holds: RTN-quantized matrices, fp16 embedding and classifier. */
function asInt4Sees(w: WeightSource): WeightSource {
  return {
    config: w.config,
    async tensor(name: TensorName) {
      const t = await w.tensor(name)
      const shape = tensorShape(w.config, name)
      if (shape.length === 1) return t
      if (name === 'tok_embeddings' || name === 'output') return fromFloat16(toFloat16(t))
      return dequantizeInt4(quantizeInt4(t, shape[0], shape[1]))
    }
  }
}

async function open(w: WeightSource, dtype: WeightDType, int4Accuracy?: number): Promise<Pipeline> {
  const dir = tempDir(`int4-${dtype}`)
  await buildModel(w, dir, { source: 'test', dtype, int4Accuracy, shards: 2 })
  const { runners } = await loadModel(dir, { device: 'cpu' })
  return new Pipeline(runners.map((r) => r.open()))
}

const PROMPT = [1, 17, 33, 48, 92, 200, 7, 301]

describe('int4 shards', () => {
  it('compute what their dequantized weights describe (accuracy level 0, within 1e-4)', async () => {
    const w = randomWeights(preset('tiny'), 11)
    const int4 = await open(w, 'int4', 0)
    const ref = await open(asInt4Sees(w), 'fp32')
    let a = await int4.step(PROMPT)
    let b = await ref.step(PROMPT)
    for (let s = 0; s < 16; s++) {
      expect(maxAbsDiff(a.data, b.data)).toBeLessThan(1e-4)
      const next = argmax(lastRow(b))
      a = await int4.step([next])
      b = await ref.step([next])
    }
  })

  it('stay within the stated tolerance of fp32 (tiny preset, default accuracy level)', async () => {
    // README "int4": on every teacher-forced step the logits' relative RMS error is at most
    // 0.35, and fp32's top-1 token is among int4's top 5 on at least 90% of steps.
    const w = randomWeights(preset('tiny'), 3)
    const int4 = await open(w, 'int4')
    const fp32 = await open(w, 'fp32')
    let a = lastRow(await int4.step(PROMPT))
    let b = lastRow(await fp32.step(PROMPT))
    let inTop5 = 0
    const steps = 32
    for (let s = 0; s < steps; s++) {
      let err = 0
      let norm = 0
      for (let i = 0; i < b.length; i++) {
        err += (a[i] - b[i]) ** 2
        norm += b[i] ** 2
      }
      expect(Math.sqrt(err / norm), `step ${s}`).toBeLessThan(0.35)
      const next = argmax(b)
      if (topK(a, 5).includes(next)) inTop5++
      a = lastRow(await int4.step([next]))
      b = lastRow(await fp32.step([next]))
    }
    expect(inTop5 / steps).toBeGreaterThanOrEqual(0.9)
  })
})

function topK(v: Float32Array, k: number): number[] {
  return Array.from(v.keys())
    .sort((x, y) => v[y] - v[x])
    .slice(0, k)
}
