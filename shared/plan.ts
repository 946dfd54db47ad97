import type { LlamaConfig } from './model/config.js'
import { headDim, paramsPerLayer } from './model/config.js'
import type { WeightDType } from './shard/build.js'

/** Bytes per weight parameter as the shard builder stores it. int4: 4-bit codes + an fp32 scale and a 4-bit zero point per 32. */
export const BYTES_PER_PARAM: Record<WeightDType, number> = { fp32: 4, fp16: 2, int4: 0.5 + 4 / 32 + 0.5 / 32 }

export interface PlanOptions {
  dtype: WeightDType
  /** Memory the node may use (VRAM for CUDA, RAM for CPU). */
  budget: number
  /** Context each session may reach (tokens of KV cache). Default: the model's maxSeqLen. */
  context?: number
  /** Concurrent sessions whose KV cache must fit. Default 1. */
  sessions?: number
  /** Held back for the runtime, CUDA context and activations. Default 10% of budget + 512 MiB. */
  reserve?: number
}

export interface MemoryPlan {
  weightsPerLayer: number
  kvPerLayer: number // for all sessions at full context
  perLayer: number
  embedding: number // first shard's extra (fp16 unless fp32)
  classifier: number // last shard's extra
  reserve: number
  usable: number
  /** Layers that fit in a middle shard (no embedding, no classifier). */
  layers: number
  /** Shards of `layers` needed to hold the whole model. */
  shardsForModel: number
  wholeModel: number // every layer + embedding + classifier
}

/** How many transformer blocks of `c` fit in a memory budget. */
export function planMemory(c: LlamaConfig, o: PlanOptions): MemoryPlan {
  const sessions = o.sessions ?? 1
  const context = o.context ?? c.maxSeqLen
  const matrixParams = paramsPerLayer(c) - 2 * c.dim
  const weightsPerLayer = matrixParams * BYTES_PER_PARAM[o.dtype] + 2 * c.dim * 4
  const kvPerLayer = 2 * c.nKvHeads * headDim(c) * context * 4 * sessions
  const perLayer = weightsPerLayer + kvPerLayer
  const tableBytes = o.dtype === 'fp32' ? 4 : 2
  const embedding = c.vocabSize * c.dim * tableBytes
  const classifier = c.vocabSize * c.dim * tableBytes + c.dim * 4
  const reserve = o.reserve ?? Math.round(o.budget * 0.1 + 512 * 2 ** 20)
  const usable = Math.max(0, o.budget - reserve)
  const layers = Math.min(c.nLayers, Math.floor(usable / perLayer))
  return {
    weightsPerLayer,
    kvPerLayer,
    perLayer,
    embedding,
    classifier,
    reserve,
    usable,
    layers,
    shardsForModel: layers > 0 ? Math.ceil(c.nLayers / layers) : Infinity,
    wholeModel: c.nLayers * perLayer + embedding + classifier
  }
}
