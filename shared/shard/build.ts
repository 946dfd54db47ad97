import { headDim, qDim, type LlamaConfig } from '../model/config.js'
import { ConfigError } from '../errors.js'
import { toFloat16 } from '../model/dtype.js'
import { layerTensor, layerTensors, tensorShape, type TensorName, type WeightSource } from '../model/weights.js'
import { DType, Graph, type DataSink } from './graph.js'
import * as io from './io.js'
import { quantizeInt4 } from './quant.js'

export type WeightDType = 'fp32' | 'fp16' | 'int4'
export const WEIGHT_DTYPES: readonly WeightDType[] = ['fp32', 'fp16', 'int4']

export interface ShardSpec {
  start: number // first layer (inclusive)
  end: number // last layer (exclusive)
  dtype: WeightDType
  /** MatMulNBits accuracy level for int4: 0 = fp32 math on dequantized weights, 4 = int8 math (faster). */
  int4Accuracy?: number
  /** How attention keeps its KV cache (kvLayout says which by default). */
  kv?: KvLayout
}

/**
 * `append`: plain ONNX ops that read the past from a buffer the runtime owns (masked past its
 * length) and return only the new rows, which the runtime appends: nothing proportional to the
 * context is copied. `gqa`: onnxruntime's GroupQueryAttention over such a buffer, updated in place
 * (but onnxruntime-node copies every output it returns, the whole buffer included). `concat`:
 * plain ops that take the whole past in and return it grown by the new rows (a copy each step).
 */
export type KvLayout = 'append' | 'gqa' | 'concat'

/**
 * `append` unless another is asked for (`build-model --kv`): plain ops every runtime runs, and no
 * copy of the cache per step. (`gqa`: onnxruntime-web 1.30's WebGPU GroupQueryAttention gave
 * wrong tokens on stories260K in Chromium, so tabs serve it on WASM.)
 */
export const kvLayout = (asked?: KvLayout): KvLayout => asked ?? 'append'

/** Called after each tensor is written, with how many of the shard's tensors are done. */
export type BuildProgress = (done: number, total: number, tensor: string) => void

const INT4_BLOCK = 32

/**
 * Builds the ONNX graph of layers [start, end) of a Llama model, reading only those layers'
 * tensors from `weights`. The first shard embeds tokens; the last applies the final norm and
 * the classifier. Large weights go to `sink` (the shard's external data file); the returned
 * bytes are the .onnx file.
 */
export async function buildShard(weights: WeightSource, spec: ShardSpec, sink: DataSink, progress?: BuildProgress): Promise<Uint8Array> {
  const c = weights.config
  const first = spec.start === 0
  const last = spec.end === c.nLayers
  const total = (spec.end - spec.start) * layerTensors(c).length + (first ? 1 : 0) + (last ? 2 : 0)
  let done = 0
  const b = new Builder(new Graph(sink), c, spec, async (name) => {
    const t = await weights.tensor(name)
    progress?.(++done, total, name)
    return t
  })
  const g = b.g
  const F = DType.FLOAT
  const I = DType.INT64

  // Inputs.
  let x = first ? await b.embed(g.input(io.INPUT_IDS, I, ['batch', 'seq'])) : g.input(io.HIDDEN_IN, F, ['batch', 'seq', c.dim])
  const pos = g.input(io.POSITION_IDS, I, ['batch', 'seq'])
  const kv = kvLayout(spec.kv)
  if (kv === 'gqa' && headDim(c) % 8 !== 0) throw new ConfigError(`kv layout gqa needs a head size that is a multiple of 8, not ${headDim(c)}`)
  const cached = kv === 'concat' ? 'past' : 'capacity'
  for (let l = spec.start; l < spec.end; l++) {
    g.input(io.pastKey(l), F, ['batch', c.nKvHeads, cached, headDim(c)])
    g.input(io.pastValue(l), F, ['batch', c.nKvHeads, cached, headDim(c)])
  }
  if (kv === 'gqa') {
    g.input(io.SEQLENS_K, DType.INT32, ['batch'])
    g.input(io.TOTAL_SEQUENCE_LENGTH, DType.INT32, [])
  }

  // Shared by every block of the shard: RoPE angles, and the masks of these positions.
  const rope = await b.ropeTables(pos)
  const mask: Masks =
    kv === 'concat' ? { kv, all: b.causalMask(pos, io.pastKey(spec.start)) } : kv === 'append' ? { kv, ...b.appendMasks(pos, io.pastKey(spec.start)) } : { kv }

  for (let l = spec.start; l < spec.end; l++) {
    x = await b.block(l, x, rope, mask)
    // Every block's output leaves the graph too: receipts commit to each layer's fingerprint,
    // so a dispute can be narrowed to the one layer where two peers part ways.
    g.alias(x, io.layerOut(l))
    g.output(io.layerOut(l), F, ['batch', 'seq', c.dim])
  }

  if (last) {
    x = b.rmsnorm(x, await b.norm('norm'))
    g.alias(await b.linear(x, 'output'), io.LOGITS)
    g.output(io.LOGITS, F, ['batch', 'seq', c.vocabSize])
  } else {
    g.alias(x, io.HIDDEN_OUT)
    g.output(io.HIDDEN_OUT, F, ['batch', 'seq', c.dim])
  }
  for (let l = spec.start; l < spec.end; l++) {
    if (kv === 'append') {
      g.output(io.newKey(l), F, ['batch', c.nKvHeads, 'seq', headDim(c)])
      g.output(io.newValue(l), F, ['batch', c.nKvHeads, 'seq', headDim(c)])
      continue
    }
    g.output(io.presentKey(l), F, ['batch', c.nKvHeads, 'total', headDim(c)])
    g.output(io.presentValue(l), F, ['batch', c.nKvHeads, 'total', headDim(c)])
  }
  const doc = JSON.stringify({ tessera: 1, layers: [spec.start, spec.end], dtype: spec.dtype, kv, config: c })
  return g.encode(`tessera_layers_${spec.start}_${spec.end}`, doc)
}

interface Rope {
  cos: string
  sin: string
}

/** What attention masks with, per layout: concat one mask over past and new keys; append one for the buffer's rows and one among the new rows. */
type Masks = { kv: 'concat'; all: string } | { kv: 'append'; past: string; fresh: string } | { kv: 'gqa' }

/** The forward pass, one method per step, in the order llama2.c's forward() takes them. */
class Builder {
  constructor(
    readonly g: Graph,
    private readonly c: LlamaConfig,
    private readonly spec: ShardSpec,
    private readonly read: (name: TensorName) => Promise<Float32Array>
  ) {}

  /** Token embedding lookup: [B,S] ids → [B,S,dim]. Stored fp16 unless the shard is fp32. */
  async embed(ids: string): Promise<string> {
    const w = await this.read('tok_embeddings')
    const dims = [this.c.vocabSize, this.c.dim]
    if (this.spec.dtype === 'fp32') return this.g.op('Gather', [await this.g.weight('tok_embeddings', DType.FLOAT, dims, bytes(w)), ids])
    const table = await this.g.weight('tok_embeddings', DType.FLOAT16, dims, bytes(toFloat16(w)))
    return this.g.op('Cast', [this.g.op('Gather', [table, ids])], { to: DType.FLOAT })
  }

  async norm(name: TensorName): Promise<string> {
    return await this.g.weight(name, DType.FLOAT, [this.c.dim], bytes(await this.read(name)))
  }

  /** RMSNorm as llama2.c: w * (x / sqrt(mean(x²) + eps)). */
  rmsnorm(x: string, w: string): string {
    const g = this.g
    const ms = g.op('ReduceMean', [g.op('Mul', [x, x])], { axes: [-1], keepdims: 1 })
    const inv = g.op('Reciprocal', [g.op('Sqrt', [g.op('Add', [ms, g.scalar(this.c.normEps)])])])
    return g.op('Mul', [g.op('Mul', [x, inv]), w])
  }

  /** y = x · Wᵀ (+ b) for a weight stored [out, in]; the bias, when given, stays fp32 whatever the dtype. */
  async linear(x: string, name: TensorName, bias?: TensorName): Promise<string> {
    const y = await this.matmul(x, name)
    if (bias === undefined) return y
    const [n] = tensorShape(this.c, bias)
    return this.g.op('Add', [y, await this.g.weight(bias, DType.FLOAT, [n], bytes(await this.read(bias)))])
  }

  /** x · Wᵀ: fp32/fp16 as a MatMul, int4 as MatMulNBits. */
  private async matmul(x: string, name: TensorName): Promise<string> {
    const g = this.g
    const [n, k] = tensorShape(this.c, name) as [number, number]
    const w = await this.read(name)
    if (this.spec.dtype === 'int4' && name !== 'output') {
      const q = quantizeInt4(w, n, k, INT4_BLOCK)
      const nBlocks = Math.ceil(k / INT4_BLOCK)
      const inputs = [
        x,
        await g.weight(`${name}.q4`, DType.UINT8, [n, nBlocks, INT4_BLOCK / 2], q.packed),
        await g.weight(`${name}.scales`, DType.FLOAT, [n * nBlocks], bytes(q.scales)),
        await g.weight(`${name}.zero_points`, DType.UINT8, [n * Math.ceil(nBlocks / 2)], q.zeroPoints)
      ]
      return g.op(
        'MatMulNBits',
        inputs,
        { K: k, N: n, bits: 4, block_size: INT4_BLOCK, accuracy_level: this.spec.int4Accuracy ?? 4 },
        'MatMulNBits',
        'com.microsoft'
      )
    }
    const wt = transpose(w, n, k)
    if (this.spec.dtype !== 'fp32') {
      const half = await g.weight(name, DType.FLOAT16, [k, n], bytes(toFloat16(wt)))
      return g.op('MatMul', [x, g.op('Cast', [half], { to: DType.FLOAT })])
    }
    return g.op('MatMul', [x, await g.weight(name, DType.FLOAT, [k, n], bytes(wt))])
  }

  /** cos/sin of each position's angles, [B,S,1,hd/2], gathered from tables llama2.c would compute. */
  async ropeTables(pos: string): Promise<Rope> {
    const { maxSeqLen } = this.c
    const half = headDim(this.c) / 2
    const cos = new Float32Array(maxSeqLen * half)
    const sin = new Float32Array(maxSeqLen * half)
    const freqs = ropeFrequencies(this.c)
    for (let p = 0; p < maxSeqLen; p++) {
      for (let i = 0; i < half; i++) {
        const angle = Math.fround(p * freqs[i])
        cos[p * half + i] = Math.cos(angle)
        sin[p * half + i] = Math.sin(angle)
      }
    }
    const g = this.g
    const dims = [maxSeqLen, half]
    const gather = async (name: string, t: Float32Array): Promise<string> =>
      g.op('Unsqueeze', [g.op('Gather', [await g.weight(name, DType.FLOAT, dims, bytes(t)), pos]), g.const([2])])
    return { cos: await gather('rope_cos', cos), sin: await gather('rope_sin', sin) }
  }

  /** Rotates x [B,S,heads,hd] by its positions' angles, pairing dimensions per the config's layout. */
  rope(x: string, heads: number, r: Rope): string {
    const g = this.g
    const hd = headDim(this.c)
    const rotate = (a: string, b: string): [string, string] => [
      g.op('Sub', [g.op('Mul', [a, r.cos]), g.op('Mul', [b, r.sin])]),
      g.op('Add', [g.op('Mul', [a, r.sin]), g.op('Mul', [b, r.cos])])
    ]
    if (this.c.ropeLayout === 'half') {
      const [a, b] = g.opN('Split', [x, g.const([hd / 2, hd / 2])], 2, { axis: -1 })
      const [ra, rb] = rotate(a, b)
      return g.op('Concat', [ra, rb], { axis: -1 })
    }
    // interleaved: view as [B,S,heads,hd/2,2] and rotate each (even, odd) pair
    const pairs = g.op('Reshape', [x, g.const([0, 0, heads, hd / 2, 2])])
    const [a, b] = g.opN('Split', [pairs, g.const([1, 1])], 2, { axis: -1 })
    const sq = (t: string): string => g.op('Squeeze', [t, g.const([-1])])
    const [ra, rb] = rotate(sq(a), sq(b))
    const un = (t: string): string => g.op('Unsqueeze', [t, g.const([-1])])
    return g.op('Reshape', [g.op('Concat', [un(ra), un(rb)], { axis: -1 }), g.const([0, 0, heads, hd])])
  }

  /**
   * Additive causal mask [B,1,G·S,T]: key j is visible to a query at absolute position p iff
   * j ≤ p. Built from the real position ids, so a replayed history lines up with the cache.
   * Repeated G times because queries are grouped per kv head (see attention).
   */
  causalMask(pos: string, firstPastKey: string): string {
    const g = this.g
    const I = DType.INT64
    const past = g.op('Shape', [firstPastKey], { start: 2, end: 3 })
    const seq = g.op('Shape', [pos], { start: 1, end: 2 })
    const total = g.op('Squeeze', [g.op('Add', [past, seq]), g.const([0])])
    const keys = g.op('Range', [g.const([0], I, []), total, g.const([1], I, [])]) // [T]
    const queries = g.op('Unsqueeze', [pos, g.const([1, 3])]) // [B,1,S,1]
    const hidden = g.op('Greater', [keys, queries]) // [B,1,S,T]
    const mask = g.op('Where', [hidden, g.scalar(-Infinity), g.scalar(0)])
    const groups = this.c.nHeads / this.c.nKvHeads
    return groups === 1 ? mask : g.op('Tile', [mask, g.const([1, 1, groups, 1])])
  }

  /**
   * `append`'s masks: the buffer's rows [B,1,1,C] count below the first new position (the
   * cache's length), whatever the buffer holds after; the new rows among themselves are causal
   * [B,1,G·S,S] (grouped as in attention).
   */
  appendMasks(pos: string, firstPastKey: string): { past: string; fresh: string } {
    const g = this.g
    const I = DType.INT64
    const capacity = g.op('Squeeze', [g.op('Shape', [firstPastKey], { start: 2, end: 3 }), g.const([0])])
    const rows = g.op('Range', [g.const([0], I, []), capacity, g.const([1], I, [])]) // [C]
    const length = g.op('Unsqueeze', [g.op('Slice', [pos, g.const([0]), g.const([1]), g.const([1])]), g.const([2, 3])]) // [B,1,1,1]
    const past = g.op('Where', [g.op('GreaterOrEqual', [rows, length]), g.scalar(-Infinity), g.scalar(0)]) // [B,1,1,C]
    const hidden = g.op('Greater', [g.op('Unsqueeze', [pos, g.const([1, 2])]), g.op('Unsqueeze', [pos, g.const([1, 3])])]) // [B,1,S,S]
    const fresh = g.op('Where', [hidden, g.scalar(-Infinity), g.scalar(0)])
    const groups = this.c.nHeads / this.c.nKvHeads
    return { past, fresh: groups === 1 ? fresh : g.op('Tile', [fresh, g.const([1, 1, groups, 1])]) }
  }

  /** Grouped-query attention with the KV cache; returns [B,S,nHeads·hd] before the output projection. */
  async attention(l: number, x: string, r: Rope, mask: Masks): Promise<string> {
    const g = this.g
    const { nHeads, nKvHeads } = this.c
    const hd = headDim(this.c)
    // Biases (Qwen2) are added to the projections before RoPE rotates them.
    const project = async (w: 'wq' | 'wk' | 'wv', b: 'bq' | 'bk' | 'bv', heads: number): Promise<string> => {
      const y = await this.linear(x, layerTensor(l, w), this.c.qkvBias === true ? layerTensor(l, b) : undefined)
      return g.op('Reshape', [y, g.const([0, 0, heads, hd])])
    }
    const q = this.rope(await project('wq', 'bq', nHeads), nHeads, r)
    const k = this.rope(await project('wk', 'bk', nKvHeads), nKvHeads, r)
    const v = await project('wv', 'bv', nKvHeads)
    if (mask.kv === 'gqa') {
      // GroupQueryAttention: causal over the buffer's first seqlens_k + 1 rows, the new rows
      // written into it at their positions; its cache outputs are the graph's own (no Identity
      // between), which is what lets onnxruntime update the caller's buffer in place. RoPE stays
      // ours (do_rotary 0), so both layouts rotate exactly alike.
      const flat = (t: string, n: number): string => g.op('Reshape', [t, g.const([0, 0, n * hd])])
      const inputs = [flat(q, nHeads), flat(k, nKvHeads), flat(v, nKvHeads), io.pastKey(l), io.pastValue(l), io.SEQLENS_K, io.TOTAL_SEQUENCE_LENGTH]
      const attrs = { num_heads: nHeads, kv_num_heads: nKvHeads, scale: { float: 1 / Math.sqrt(hd) }, do_rotary: 0 }
      return g.opTo('GroupQueryAttention', inputs, [`attention_${l}`, io.presentKey(l), io.presentValue(l)], attrs, 'com.microsoft')[0]
    }
    const heads = (t: string): string => g.op('Transpose', [t], { perm: [0, 2, 1, 3] })
    // Query heads h = kv·G + g share kv head `kv`: fold the G heads into the rows of each kv
    // head ([B,nKv,G·S,hd]) instead of copying keys and values G times.
    const grouped = g.op('Reshape', [heads(q), g.const([0, nKvHeads, -1, hd])])
    const scaled = (keys: string): string =>
      g.op('Div', [g.op('MatMul', [grouped, g.op('Transpose', [keys], { perm: [0, 1, 3, 2] })]), g.scalar(Math.sqrt(hd))])
    const merge = (out: string): string => g.op('Reshape', [heads(g.op('Reshape', [out, g.const([0, nHeads, -1, hd])])), g.const([0, 0, qDim(this.c)])])

    if (mask.kv === 'append') {
      // One softmax over the buffer's rows and the new ones side by side; the buffer is only read.
      const kNew = heads(k)
      const vNew = heads(v)
      g.alias(kNew, io.newKey(l))
      g.alias(vNew, io.newValue(l))
      const capacity = g.op('Shape', [io.pastKey(l)], { start: 2, end: 3 })
      const scores = g.op('Concat', [g.op('Add', [scaled(io.pastKey(l)), mask.past]), g.op('Add', [scaled(kNew), mask.fresh])], { axis: -1 })
      const probs = g.op('Softmax', [scores], { axis: -1 })
      const onPast = g.op('Slice', [probs, g.const([0]), capacity, g.const([-1])])
      const onNew = g.op('Slice', [probs, capacity, g.const([2 ** 62]), g.const([-1])])
      return merge(g.op('Add', [g.op('MatMul', [onPast, io.pastValue(l)]), g.op('MatMul', [onNew, vNew])]))
    }

    const keys = g.op('Concat', [io.pastKey(l), heads(k)], { axis: 2 }) // [B,nKv,T,hd]
    const values = g.op('Concat', [io.pastValue(l), heads(v)], { axis: 2 })
    g.alias(keys, io.presentKey(l))
    g.alias(values, io.presentValue(l))

    const probs = g.op('Softmax', [g.op('Add', [scaled(keys), mask.all])], { axis: -1 })
    return merge(g.op('MatMul', [probs, values]))
  }

  /** SwiGLU feed-forward: w2(silu(w1·x) * w3·x). */
  async ffn(l: number, x: string): Promise<string> {
    const g = this.g
    const a = await this.linear(x, layerTensor(l, 'w1'))
    const b = await this.linear(x, layerTensor(l, 'w3'))
    const silu = g.op('Mul', [a, g.op('Sigmoid', [a])])
    return await this.linear(g.op('Mul', [silu, b]), layerTensor(l, 'w2'))
  }

  /** One transformer block with residual connections. */
  async block(l: number, x: string, r: Rope, mask: Masks): Promise<string> {
    const g = this.g
    const attn = await this.attention(l, this.rmsnorm(x, await this.norm(layerTensor(l, 'attention_norm'))), r, mask)
    const h = g.op('Add', [x, await this.linear(attn, layerTensor(l, 'wo'))])
    const ffn = await this.ffn(l, this.rmsnorm(h, await this.norm(layerTensor(l, 'ffn_norm'))))
    return g.op('Add', [h, ffn])
  }
}

/**
 * RoPE's inverse frequencies θ^(-2i/hd), in fp32 at each step as llama2.c's powf sees them, then
 * Llama 3's rescaling when the config has it (transformers' _compute_llama3_parameters): high
 * frequencies (wavelength under original/highFreqFactor) are kept, low ones (over
 * original/lowFreqFactor) divided by factor, and the band between interpolated smoothly.
 */
export function ropeFrequencies(c: LlamaConfig): Float32Array {
  const f = Math.fround
  const hd = headDim(c)
  const freqs = new Float32Array(hd / 2)
  for (let i = 0; i < hd / 2; i++) freqs[i] = f(1 / f(c.ropeTheta ** f(f(2 * i) / hd)))
  const s = c.ropeScaling
  if (s === undefined) return freqs
  const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor
  const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor
  for (let i = 0; i < freqs.length; i++) {
    const freq = freqs[i]
    const wavelen = (2 * Math.PI) / freq
    if (wavelen < highWavelen) continue
    if (wavelen > lowWavelen) {
      freqs[i] = freq / s.factor
      continue
    }
    const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor)
    freqs[i] = (1 - smooth) * (freq / s.factor) + smooth * freq
  }
  return freqs
}

function transpose(w: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(w.length)
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = w[r * cols + c]
  return out
}

function bytes(a: Float32Array | Uint16Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength)
}
