import { ConfigError } from '../errors.js'

/** How RoPE pairs the dimensions of a head. */
export type RopeLayout =
  /** llama2.c / Meta: dimensions (2i, 2i+1) form a pair */
  | 'interleaved'
  /** Hugging Face: dimensions (i, i + headDim/2) form a pair (wq/wk rows permuted to match) */
  | 'half'

/** What a Llama-family model is. Everything the shard builder needs, nothing it does not. */
export interface LlamaConfig {
  dim: number // width of the residual stream
  hiddenDim: number // width of the feed-forward layer
  nLayers: number // transformer blocks
  nHeads: number // query heads
  nKvHeads: number // key/value heads (GQA when < nHeads)
  vocabSize: number
  maxSeqLen: number // longest context the RoPE tables cover
  normEps: number // RMSNorm epsilon
  ropeTheta: number // RoPE base
  ropeLayout: RopeLayout
  tiedEmbeddings: boolean // classifier shares the token embedding
  /** Width of each attention head when it is not dim / nHeads (Llama 3.2 3B-style, Mistral Nemo). */
  headDim?: number
  /** q, k and v projections carry a bias (Qwen2); o_proj does not. */
  qkvBias?: boolean
  /** RoPE frequency scaling; absent means plain RoPE. */
  ropeScaling?: RopeScaling
  bosId?: number
  /** The first of eosIds when there are several. */
  eosId?: number
  /** Every end-of-sequence id, when the model has several (Llama 3.1 instruct: 128001, 128008, 128009). */
  eosIds?: number[]
}

/** Llama 3.x's rescaling of RoPE frequencies (transformers' rope_type "llama3"). */
export interface RopeScaling {
  type: 'llama3'
  factor: number // low frequencies are divided by this
  lowFreqFactor: number
  highFreqFactor: number
  originalMaxPositionEmbeddings: number // the context the model was pretrained on
}

export const headDim = (c: LlamaConfig): number => c.headDim ?? c.dim / c.nHeads
/** Width of all query heads together: the rows of wq, the columns of wo. */
export const qDim = (c: LlamaConfig): number => headDim(c) * c.nHeads
export const kvDim = (c: LlamaConfig): number => headDim(c) * c.nKvHeads

/** Throws ConfigError when the shapes cannot make a model. */
export function checkConfig(c: LlamaConfig): LlamaConfig {
  const bad = (m: string): never => {
    throw new ConfigError(`invalid model config: ${m}`)
  }
  for (const k of ['dim', 'hiddenDim', 'nLayers', 'nHeads', 'nKvHeads', 'vocabSize', 'maxSeqLen'] as const) {
    if (!Number.isInteger(c[k]) || c[k] <= 0) bad(`${k} must be a positive integer, got ${c[k]}`)
  }
  if (c.headDim !== undefined) {
    if (!Number.isInteger(c.headDim) || c.headDim <= 0) bad(`headDim must be a positive integer, got ${c.headDim}`)
  } else if (c.dim % c.nHeads !== 0) {
    bad(`dim ${c.dim} is not divisible by nHeads ${c.nHeads} (set headDim explicitly if the heads are narrower or wider)`)
  }
  if (c.nHeads % c.nKvHeads !== 0) bad(`nHeads ${c.nHeads} is not divisible by nKvHeads ${c.nKvHeads}`)
  if (headDim(c) % 2 !== 0) bad(`head size ${headDim(c)} must be even for RoPE`)
  if (c.ropeScaling !== undefined) checkRopeScaling(c.ropeScaling, bad)
  if (c.eosIds !== undefined && (!Array.isArray(c.eosIds) || !c.eosIds.every((x) => Number.isInteger(x) && x >= 0))) {
    bad(`eosIds must be a list of token ids, got ${JSON.stringify(c.eosIds)}`)
  }
  return c
}

function checkRopeScaling(r: RopeScaling, bad: (m: string) => never): void {
  if (r.type !== 'llama3') bad(`ropeScaling.type must be "llama3", got ${JSON.stringify(r.type)}`)
  for (const k of ['factor', 'lowFreqFactor', 'highFreqFactor', 'originalMaxPositionEmbeddings'] as const) {
    if (typeof r[k] !== 'number' || !Number.isFinite(r[k]) || r[k] <= 0) bad(`ropeScaling.${k} must be a positive number, got ${r[k]}`)
  }
  // The smoothing step divides by (high - low): equal factors leave no band to interpolate across.
  if (r.highFreqFactor <= r.lowFreqFactor) bad(`ropeScaling.highFreqFactor ${r.highFreqFactor} must exceed lowFreqFactor ${r.lowFreqFactor}`)
}

/** Parameters held by one transformer block (norms and biases included). */
export function paramsPerLayer(c: LlamaConfig): number {
  const attn = c.dim * qDim(c) * 2 + c.dim * kvDim(c) * 2 // wq, wo, wk, wv
  const bias = c.qkvBias === true ? qDim(c) + kvDim(c) * 2 : 0 // bq, bk, bv
  const ffn = c.dim * c.hiddenDim * 3 // w1, w2, w3
  return attn + bias + ffn + c.dim * 2 // + two RMSNorm weights
}

export function paramCount(c: LlamaConfig): number {
  const embed = c.vocabSize * c.dim
  return embed + c.nLayers * paramsPerLayer(c) + c.dim + (c.tiedEmbeddings ? 0 : embed)
}

// Untied, as Llama 2: with random weights a tied classifier mostly echoes the input token.
const base = { normEps: 1e-5, ropeTheta: 10000, ropeLayout: 'interleaved' as const, tiedEmbeddings: false, bosId: 1, eosId: 2 }

/**
 * Named shapes for seeded random models. `tiny` builds in a blink for tests; `small` (~30M) and
 * `medium` (~250M) are for benchmarks; `llama-2-70b` is the real thing's shape, for memory
 * planning only (its random weights would be 280 GB of noise).
 */
export const PRESETS: Record<string, LlamaConfig> = {
  tiny: { ...base, dim: 64, hiddenDim: 176, nLayers: 4, nHeads: 4, nKvHeads: 2, vocabSize: 512, maxSeqLen: 256 },
  small: { ...base, dim: 512, hiddenDim: 1408, nLayers: 8, nHeads: 8, nKvHeads: 4, vocabSize: 4096, maxSeqLen: 1024 },
  medium: { ...base, dim: 1024, hiddenDim: 2816, nLayers: 16, nHeads: 16, nKvHeads: 8, vocabSize: 32000, maxSeqLen: 2048 },
  'llama-2-70b': { ...base, dim: 8192, hiddenDim: 28672, nLayers: 80, nHeads: 64, nKvHeads: 8, vocabSize: 32000, maxSeqLen: 4096 },
  // Llama 3.1's vocabulary, RoPE and special ids at tiny's size, so the real Llama 3.1 tokenizer fits it.
  'tiny-llama3': {
    dim: 64,
    hiddenDim: 176,
    nLayers: 4,
    nHeads: 4,
    nKvHeads: 2,
    vocabSize: 128256,
    maxSeqLen: 1024,
    normEps: 1e-5,
    ropeTheta: 500000,
    ropeLayout: 'half',
    tiedEmbeddings: false,
    ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
    bosId: 128000,
    eosId: 128009,
    eosIds: [128001, 128008, 128009]
  }
}

export function preset(name: string): LlamaConfig {
  const c = PRESETS[name]
  if (c === undefined) throw new ConfigError(`unknown preset "${name}"; known presets: ${Object.keys(PRESETS).join(', ')}`)
  // A deep copy: callers may edit what they get without changing the preset.
  const copy: LlamaConfig = { ...c }
  if (c.ropeScaling !== undefined) copy.ropeScaling = { ...c.ropeScaling }
  if (c.eosIds !== undefined) copy.eosIds = [...c.eosIds]
  return copy
}
