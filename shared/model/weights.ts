import { headDim, type LlamaConfig } from './config.js'

/**
 * The tensors of a Llama model, named as llama2.c does and laid out as it does:
 * every projection is [out, in] (row-major), norms are [dim].
 *
 *   tok_embeddings          [vocab, dim]
 *   layers.L.attention_norm [dim]
 *   layers.L.wq             [nHeads*headDim, dim]
 *   layers.L.wk, .wv        [nKvHeads*headDim, dim]
 *   layers.L.bq             [nHeads*headDim]    (only when config.qkvBias)
 *   layers.L.bk, .bv        [nKvHeads*headDim]  (only when config.qkvBias)
 *   layers.L.wo             [dim, nHeads*headDim]
 *   layers.L.ffn_norm       [dim]
 *   layers.L.w1, .w3        [hiddenDim, dim]
 *   layers.L.w2             [dim, hiddenDim]
 *   norm                    [dim]
 *   output                  [vocab, dim]  (the token embedding when tied)
 *
 * wq/wk rows follow the config's ropeLayout: a checkpoint is imported as it is stored and the
 * graph rotates accordingly, so no importer has to permute weights (biases bq/bk follow wq/wk's rows).
 */
export type LayerTensor = 'attention_norm' | 'wq' | 'wk' | 'wv' | 'wo' | 'ffn_norm' | 'w1' | 'w2' | 'w3' | BiasTensor
export type BiasTensor = 'bq' | 'bk' | 'bv'
/** The tensors every block has. */
export const LAYER_TENSORS: readonly LayerTensor[] = ['attention_norm', 'wq', 'wk', 'wv', 'wo', 'ffn_norm', 'w1', 'w2', 'w3']
export const BIAS_TENSORS: readonly BiasTensor[] = ['bq', 'bk', 'bv']

export const isBias = (name: TensorName): boolean => (BIAS_TENSORS as readonly string[]).includes(name.split('.')[2])

/** The tensors each block of `c` has: LAYER_TENSORS, plus the q/k/v biases when the config has them. */
export const layerTensors = (c: LlamaConfig): readonly LayerTensor[] => (c.qkvBias === true ? [...LAYER_TENSORS, ...BIAS_TENSORS] : LAYER_TENSORS)

export type TensorName = 'tok_embeddings' | 'norm' | 'output' | `layers.${number}.${LayerTensor}`

/** A source of weights that reads each tensor only when asked (so a shard reads only its layers). */
export interface WeightSource {
  readonly config: LlamaConfig
  /** The tensor as fp32, in the layout above. */
  tensor(name: TensorName): Promise<Float32Array>
}

export function tensorShape(c: LlamaConfig, name: TensorName): [number] | [number, number] {
  const hd = headDim(c)
  if (name === 'tok_embeddings' || name === 'output') return [c.vocabSize, c.dim]
  if (name === 'norm') return [c.dim]
  const kind = name.split('.')[2] as LayerTensor
  switch (kind) {
    case 'attention_norm':
    case 'ffn_norm':
      return [c.dim]
    case 'wq':
      return [c.nHeads * hd, c.dim]
    case 'bq':
      return [c.nHeads * hd]
    case 'bk':
    case 'bv':
      return [c.nKvHeads * hd]
    case 'wk':
    case 'wv':
      return [c.nKvHeads * hd, c.dim]
    case 'wo':
      return [c.dim, c.nHeads * hd]
    case 'w1':
    case 'w3':
      return [c.hiddenDim, c.dim]
    case 'w2':
      return [c.dim, c.hiddenDim]
  }
}

export const tensorSize = (c: LlamaConfig, name: TensorName): number => tensorShape(c, name).reduce((a, b) => a * b, 1)

export const layerTensor = (layer: number, t: LayerTensor): TensorName => `layers.${layer}.${t}`
