import type { BlobSource } from '../blob.js'
import { checkConfig, headDim, type LlamaConfig } from './config.js'
import { ConfigError, ModelFormatError } from '../errors.js'
import { LAYER_TENSORS, tensorSize, type LayerTensor, type TensorName, type WeightSource } from './weights.js'

/**
 * llama2.c checkpoints (legacy format): a header of seven int32
 *   dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
 * (vocab_size < 0 means the classifier is stored separately), then fp32 tensors, each
 * stacked over layers:
 *   tok_embeddings, attention_norm, wq, wk, wv, wo, ffn_norm, w1, w2, w3, norm,
 *   freq_cis_real, freq_cis_imag (unused: we compute RoPE), [output]
 */
const HEADER_BYTES = 7 * 4

/** Order in which per-layer tensors are stacked in the file. */
const FILE_ORDER: readonly LayerTensor[] = ['attention_norm', 'wq', 'wk', 'wv', 'wo', 'ffn_norm', 'w1', 'w2', 'w3']

interface Span {
  offset: number
  floats: number
}

function layout(c: LlamaConfig): Map<string, Span> {
  const spans = new Map<string, Span>()
  let offset = HEADER_BYTES
  const put = (name: string, floats: number): void => {
    spans.set(name, { offset, floats })
    offset += floats * 4
  }
  put('tok_embeddings', tensorSize(c, 'tok_embeddings'))
  for (const t of FILE_ORDER) {
    const n = tensorSize(c, `layers.0.${t}`)
    for (let l = 0; l < c.nLayers; l++) put(`layers.${l}.${t}`, n)
  }
  put('norm', c.dim)
  put('freq_cis', c.maxSeqLen * headDim(c)) // real + imag halves, skipped
  if (!c.tiedEmbeddings) put('output', tensorSize(c, 'output'))
  spans.set('end', { offset, floats: 0 })
  return spans
}

export function parseLlama2cHeader(bytes: Uint8Array): LlamaConfig {
  if (bytes.byteLength < HEADER_BYTES) throw new ModelFormatError('llama2.c checkpoint is shorter than its 28-byte header')
  const h = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES)
  const i = (k: number): number => h.getInt32(k * 4, true)
  const vocab = i(5)
  return checkConfig({
    dim: i(0),
    hiddenDim: i(1),
    nLayers: i(2),
    nHeads: i(3),
    nKvHeads: i(4),
    vocabSize: Math.abs(vocab),
    maxSeqLen: i(6),
    tiedEmbeddings: vocab > 0,
    normEps: 1e-5,
    ropeTheta: 10000,
    ropeLayout: 'interleaved',
    bosId: 1,
    eosId: 2
  })
}

/** Opens `name` in `src` as a lazy WeightSource; only the header is read now. */
export async function openLlama2c(src: BlobSource, name: string): Promise<WeightSource> {
  const config = parseLlama2cHeader(await src.read(name, 0, HEADER_BYTES))
  const spans = layout(config)
  const size = await src.size(name)
  const expected = spans.get('end')!.offset
  if (size !== expected) {
    throw new ModelFormatError(
      `${name}: ${size} bytes, but a llama2.c checkpoint with this header ` +
        `(dim ${config.dim}, ${config.nLayers} layers, vocab ${config.vocabSize}) has ${expected}`
    )
  }
  return {
    config,
    async tensor(t: TensorName) {
      const key = t === 'output' && config.tiedEmbeddings ? 'tok_embeddings' : t
      const span = spans.get(key)
      if (span === undefined) throw new ModelFormatError(`${name}: no tensor ${t}`)
      return toFloat32(await src.read(name, span.offset, span.floats * 4))
    }
  }
}

/** Little-endian fp32 bytes as a Float32Array (copies when the bytes are unaligned). */
export function toFloat32(bytes: Uint8Array): Float32Array {
  if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)
  return new Float32Array(bytes.slice().buffer)
}

/** Serializes any WeightSource as a llama2.c checkpoint (for tests and exports; holds it all in memory). */
export async function writeLlama2c(w: WeightSource): Promise<Uint8Array> {
  const c = w.config
  // The header has no place for these; a file written without them would be read back as another model.
  const lost = [c.qkvBias === true && 'q/k/v biases', c.headDim !== undefined && 'an explicit headDim', c.ropeScaling !== undefined && 'RoPE scaling']
  const named = lost.filter((x): x is string => x !== false)
  if (named.length > 0) throw new ConfigError(`a llama2.c checkpoint cannot hold ${named.join(', ')}`)
  const spans = layout(c)
  const out = new Uint8Array(spans.get('end')!.offset)
  const header = new DataView(out.buffer, 0, HEADER_BYTES)
  const fields = [c.dim, c.hiddenDim, c.nLayers, c.nHeads, c.nKvHeads, c.tiedEmbeddings ? c.vocabSize : -c.vocabSize, c.maxSeqLen]
  for (const [k, v] of fields.entries()) header.setInt32(k * 4, v, true)
  const names: TensorName[] = ['tok_embeddings', 'norm']
  for (let l = 0; l < c.nLayers; l++) for (const t of LAYER_TENSORS) names.push(`layers.${l}.${t}`)
  if (!c.tiedEmbeddings) names.push('output')
  for (const n of names) {
    const t = await w.tensor(n)
    out.set(new Uint8Array(t.buffer, t.byteOffset, t.byteLength), spans.get(n)!.offset)
  }
  return out
}
