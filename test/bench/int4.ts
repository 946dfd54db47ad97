/**
 * int4 vs fp32 on the same weights: relative RMS error of the logits and top-1/top-5 agreement,
 * teacher-forced on fp32's greedy tokens. Measures only.
 */
import type { WeightSource } from '../../shared/model/weights.js'
import { Pipeline, lastRow } from '../../shared/pipeline.js'
import { argmax } from '../../shared/sampler.js'
import { buildModel } from '../../host/model-store.js'
import { loadModel } from '../../native-node/store.js'
import { tempDir } from '../helpers/paths.js'

export interface Int4Accuracy {
  model: string
  relRmsMax: number
  relRmsMean: number
  top1Agree: number
  fp32Top1InInt4Top5: number
  steps: number
}

async function pipeline(w: WeightSource, dtype: 'fp32' | 'int4'): Promise<Pipeline> {
  const dir = tempDir(`bench-${dtype}`)
  await buildModel(w, dir, { source: 'bench', dtype })
  return new Pipeline((await loadModel(dir, { device: 'cpu' })).runners.map((r) => r.open()))
}

export async function int4Accuracy(model: string, w: WeightSource, steps = 32): Promise<Int4Accuracy> {
  const [fp32, int4] = [await pipeline(w, 'fp32'), await pipeline(w, 'int4')]
  const prompt = [1, 17, 33, 48, 92, 200, 7, 301].map((t) => t % w.config.vocabSize)
  let a = lastRow(await fp32.step(prompt))
  let b = lastRow(await int4.step(prompt))
  const r: Int4Accuracy = { model, relRmsMax: 0, relRmsMean: 0, top1Agree: 0, fp32Top1InInt4Top5: 0, steps }
  for (let s = 0; s < steps; s++) {
    let err = 0
    let norm = 0
    for (let i = 0; i < a.length; i++) {
      err += (a[i] - b[i]) ** 2
      norm += a[i] ** 2
    }
    const rel = Math.sqrt(err / norm)
    r.relRmsMax = Math.max(r.relRmsMax, rel)
    r.relRmsMean += rel / steps
    const next = argmax(a)
    if (argmax(b) === next) r.top1Agree++
    const top5 = Array.from(b.keys())
      .sort((x, y) => b[y] - b[x])
      .slice(0, 5)
    if (top5.includes(next)) r.fp32Top1InInt4Top5++
    a = lastRow(await fp32.step([next]))
    b = lastRow(await int4.step([next]))
  }
  return r
}
