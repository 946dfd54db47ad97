import { checkConfig, headDim, type LlamaConfig, type RopeScaling } from './config.js'
import { ConfigError, ModelFormatError } from '../errors.js'
import { dequantize, GGML_TYPES, ggmlBytes, ggmlType, ggmlTypeName, SUPPORTED_GGML_TYPES, type GgmlType } from './ggml.js'
import { layerTensors, tensorShape, type LayerTensor, type TensorName, type WeightSource } from './weights.js'

/**
 * GGUF files (llama.cpp, Ollama) of the Llama family, as a lazy WeightSource. The header is
 * parsed elsewhere (host/gguf.ts uses @huggingface/gguf) and handed in with a reader of byte
 * ranges, so this module needs neither Node nor the DOM; tensors are read one at a time, by
 * offset, and dequantized to fp32 (shared/model/ggml.ts).
 *
 * RoPE layout, from llama.cpp: convert_hf_to_gguf.py un-permutes HF's q/k rows back to Meta's
 * interleaved order for "llama" (rope type NORM: pairs (2i, 2i+1)), and leaves "qwen2" as HF
 * stores it (rope type NEOX: pairs (i, i + hd/2)). The graph rotates either layout natively,
 * so import sets config.ropeLayout and never permutes.
 */

/** What import needs of a parsed GGUF header (a subset of @huggingface/gguf's GGUFParseOutput). */
export interface GgufHeader {
  metadata: Record<string, unknown>
  tensorInfos: ReadonlyArray<{ name: string; shape: ReadonlyArray<bigint | number>; dtype: number; offset: bigint | number }>
  tensorDataOffset: bigint | number
  /** false for a big-endian file (s390x builds), whose tensor bytes the decoders would misread. */
  littleEndian?: boolean
  /** Where the tensor infos end (before the alignment padding): a truncated header shows here. */
  tensorInfoByteRange?: readonly [number, number]
}

/** `length` bytes of the file from `offset`. */
export type GgufReader = (offset: number, length: number) => Promise<Uint8Array>

export interface GgufOpenOptions {
  /** The file's name, for messages. */
  name: string
  /** The file's size in bytes, to catch truncation before any build starts. */
  size: number
  /** Cap the context (and the RoPE tables each shard carries) below <arch>.context_length. */
  maxSeqLen?: number
}

/** The architectures import understands (general.architecture); Mistral files say "llama". */
const ARCHITECTURES: Record<string, string> = {
  llama: 'Llama 1/2/3.x and Mistral (dense)',
  qwen2: 'Qwen2 / Qwen2.5 (dense)'
}

export const SUPPORTED_GGUF_ARCHITECTURES =
  'supported: ' +
  Object.entries(ARCHITECTURES)
    .map(([a, n]) => `${n} [general.architecture "${a}"]`)
    .join('; ') +
  `; tensor types ${SUPPORTED_GGML_TYPES}`

const LAYER: Record<LayerTensor, string> = {
  attention_norm: 'attn_norm.weight',
  wq: 'attn_q.weight',
  wk: 'attn_k.weight',
  wv: 'attn_v.weight',
  bq: 'attn_q.bias',
  bk: 'attn_k.bias',
  bv: 'attn_v.bias',
  wo: 'attn_output.weight',
  ffn_norm: 'ffn_norm.weight',
  w1: 'ffn_gate.weight',
  w2: 'ffn_down.weight',
  w3: 'ffn_up.weight'
}

/** The GGUF tensor name of a llama2.c-named tensor (`output` → output.weight; the caller handles tying). */
export function ggufTensorName(name: TensorName): string {
  if (name === 'tok_embeddings') return 'token_embd.weight'
  if (name === 'norm') return 'output_norm.weight'
  if (name === 'output') return 'output.weight'
  const [, l, t] = name.split('.')
  return `blk.${l}.${LAYER[t as LayerTensor]}`
}

/** Llama 3.x's RoPE scaling, stored as a tensor of per-frequency divisors. */
export const ROPE_FREQS = 'rope_freqs.weight'

/** The llama3 parameters rope_freqs.weight is matched against (3.1/3.3: factor 8; 3.2: factor 32). */
const LLAMA3_SCALINGS: readonly RopeScaling[] = [8, 32, 16, 4, 2].map((factor) => ({
  type: 'llama3',
  factor,
  lowFreqFactor: 1,
  highFreqFactor: 4,
  originalMaxPositionEmbeddings: 8192
}))

const num = (v: unknown): number | undefined => (typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : undefined)

/** The shortest decimal an fp32 metadata value rounds from (1e-5, not 0.0000099999997), as the converter was given it. */
function decimal(v: number): number {
  for (let p = 1; p <= 9; p++) {
    const d = Number(v.toPrecision(p))
    if (Math.fround(d) === v) return d
  }
  return v
}

/**
 * GGUF metadata → LlamaConfig (without ropeScaling, which needs rope_freqs' values); refuses what
 * the graph cannot compute. `tied`: the file has no output.weight; `vocabSize`: token_embd's rows.
 */
export function parseGgufConfig(meta: Record<string, unknown>, opts: { tied: boolean; vocabSize?: number }): LlamaConfig {
  const no = (m: string): never => {
    throw new ConfigError(`GGUF: ${m}; ${SUPPORTED_GGUF_ARCHITECTURES}`)
  }
  const arch = meta['general.architecture']
  if (typeof arch !== 'string') no('general.architecture is missing')
  if (!Object.hasOwn(ARCHITECTURES, arch as string)) no(`architecture ${JSON.stringify(arch)} is not supported`)
  const key = (k: string): unknown => meta[`${arch}.${k}`]
  const need = (k: string): number => {
    const v = num(key(k))
    if (v === undefined) throw new ModelFormatError(`GGUF: metadata ${arch}.${k} is missing or not a number`)
    return v
  }
  const experts = num(key('expert_count')) ?? 0
  if (experts > 0) no(`mixture-of-experts models (${arch}.expert_count = ${experts}) are not supported`)
  const scaling = meta[`${arch}.rope.scaling.type`]
  if (scaling !== undefined && scaling !== 'none') no(`RoPE scaling type ${JSON.stringify(scaling)} is not supported (only plain RoPE or Llama 3's rope_freqs)`)

  const dim = need('embedding_length')
  const nHeads = need('attention.head_count')
  const keyLength = num(key('attention.key_length'))
  const valueLength = num(key('attention.value_length'))
  if (keyLength !== undefined && valueLength !== undefined && keyLength !== valueLength) {
    no(`attention.key_length ${keyLength} differs from attention.value_length ${valueLength}`)
  }
  // The embedding's rows are the vocabulary when the file does not say (converters write vocab_size for some architectures only).
  const tokens = meta['tokenizer.ggml.tokens']
  const vocabSize = num(key('vocab_size')) ?? opts.vocabSize ?? (Array.isArray(tokens) ? tokens.length : undefined)
  if (vocabSize === undefined)
    throw new ModelFormatError(`GGUF: neither ${arch}.vocab_size, token_embd.weight nor tokenizer.ggml.tokens gives the vocabulary size`)
  if (Array.isArray(tokens) && tokens.length > vocabSize) {
    throw new ModelFormatError(`GGUF: tokenizer.ggml.tokens lists ${tokens.length} tokens but the model's vocabulary has ${vocabSize}`)
  }
  const id = (k: string): number | undefined => num(meta[`tokenizer.ggml.${k}`])
  const eosIds = [...new Set(['eos_token_id', 'eot_token_id', 'eom_token_id'].map(id).filter((x) => x !== undefined))]
  const config: LlamaConfig = {
    dim,
    hiddenDim: need('feed_forward_length'),
    nLayers: need('block_count'),
    nHeads,
    nKvHeads: num(key('attention.head_count_kv')) ?? nHeads,
    vocabSize,
    maxSeqLen: need('context_length'),
    normEps: decimal(need('attention.layer_norm_rms_epsilon')),
    ropeTheta: decimal(num(key('rope.freq_base')) ?? 10000),
    // See the module comment: llama files hold Meta's order, qwen2 files HF's.
    ropeLayout: arch === 'qwen2' ? 'half' : 'interleaved',
    tiedEmbeddings: opts.tied,
    bosId: id('bos_token_id'),
    eosId: id('eos_token_id') ?? eosIds[0]
  }
  if (keyLength !== undefined && keyLength * nHeads !== dim) config.headDim = keyLength
  if (arch === 'qwen2') config.qkvBias = true
  if (eosIds.length > 1) config.eosIds = eosIds
  const rotated = num(key('rope.dimension_count'))
  if (rotated !== undefined && rotated !== headDim(config))
    no(`rope.dimension_count ${rotated} rotates part of each ${headDim(config)}-wide head (partial RoPE)`)
  return checkConfig(config)
}

/**
 * The llama3 parameters that give `divisors` (rope_freqs.weight), computed as
 * convert_hf_to_gguf.py does from transformers' llama3 rope: 1 above the high-frequency
 * cutoff, `factor` below the low one, 1 / ((1 − s)/factor + s) between. A candidate must match
 * every entry within 1e-4 relative: the converter does this math in fp32 tensor ops, and near
 * the band's edge the last step amplifies their rounding ~50×, so entries may sit ~1e-6 from an
 * fp64 computation; the candidates themselves differ by far more. Anything else is refused.
 */
export function ropeScalingFromFreqs(c: LlamaConfig, divisors: Float32Array): RopeScaling {
  const hd = headDim(c)
  if (divisors.length !== hd / 2) throw new ModelFormatError(`GGUF: ${ROPE_FREQS} has ${divisors.length} values, but RoPE on ${hd}-wide heads needs ${hd / 2}`)
  const f = Math.fround
  const expected = (s: RopeScaling): Float32Array => {
    const out = new Float32Array(hd / 2)
    const low = s.originalMaxPositionEmbeddings / s.lowFreqFactor
    const high = s.originalMaxPositionEmbeddings / s.highFreqFactor
    for (let i = 0; i < hd / 2; i++) {
      const freq = f(1 / f(c.ropeTheta ** f(f(2 * i) / hd)))
      const wavelen = (2 * Math.PI) / freq
      const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor)
      out[i] = wavelen < high ? 1 : wavelen > low ? s.factor : 1 / ((1 - smooth) / s.factor + smooth)
    }
    return out
  }
  const fits = (s: RopeScaling): boolean => expected(s).every((v, i) => Math.abs(v - divisors[i]) <= 1e-4 * v)
  const found = LLAMA3_SCALINGS.find(fits)
  if (found !== undefined) return { ...found }
  const shown = Array.from(divisors.slice(0, 4), (v) => v.toPrecision(6)).join(', ')
  throw new ConfigError(
    `GGUF: ${ROPE_FREQS} [${shown}, …] matches no Llama 3 RoPE scaling tried (factor ${LLAMA3_SCALINGS.map((s) => s.factor).join('/')}, ` +
      'low_freq_factor 1, high_freq_factor 4, original context 8192 at this rope.freq_base); other RoPE scalings are not supported'
  )
}

interface Located {
  name: string
  type: GgmlType | undefined
  typeId: number
  shape: number[]
  offset: number
  bytes: number
}

/** Opens a GGUF file as a lazy WeightSource: checks every tensor's presence, shape, type and extent now, reads none but rope_freqs. */
export async function openGguf(header: GgufHeader, read: GgufReader, opts: GgufOpenOptions): Promise<WeightSource> {
  const file = opts.name
  const truncated = (what: string, end: number): never => {
    throw new ModelFormatError(`${file}: ${what} ends at byte ${end} but the file has ${opts.size}; the file is truncated: copy or download it again`)
  }
  const unsupported = (t: Located): never => {
    throw new ModelFormatError(`${file}: tensor ${t.name} has type ${ggmlTypeName(t.typeId)}, which is not supported (supported: ${SUPPORTED_GGML_TYPES})`)
  }
  if (header.littleEndian === false)
    throw new ModelFormatError(`${file}: a big-endian GGUF file; only little-endian files (what llama.cpp writes by default) are supported`)
  const infoEnd = header.tensorInfoByteRange?.[1]
  if (infoEnd !== undefined && infoEnd > opts.size) truncated('the GGUF header', infoEnd)
  const dataOffset = Number(header.tensorDataOffset)
  const tensors = new Map<string, Located>()
  for (const t of header.tensorInfos) {
    // ggml lists dimensions innermost first (ne[0] = columns); ours are [rows, cols].
    const shape = t.shape.map(Number).reverse()
    const n = shape.reduce((a, b) => a * b, 1)
    const type = ggmlType(t.dtype)
    const located: Located = { name: t.name, type, typeId: t.dtype, shape, offset: dataOffset + Number(t.offset), bytes: 0 }
    if (type !== undefined) {
      if (shape.length > 0 && shape[shape.length - 1] % GGML_TYPES[type].block !== 0) {
        throw new ModelFormatError(`${file}: tensor ${t.name} has rows of ${shape[shape.length - 1]} values, not whole ${type} blocks`)
      }
      located.bytes = ggmlBytes(type, n)
      if (located.offset + located.bytes > opts.size) truncated(`tensor ${t.name}`, located.offset + located.bytes)
    }
    tensors.set(t.name, located)
  }

  const embd = tensors.get('token_embd.weight')
  const tied = !tensors.has('output.weight')
  const parsed = parseGgufConfig(header.metadata, { tied, vocabSize: embd?.shape[0] })
  let config = checkConfig({ ...parsed, maxSeqLen: Math.min(parsed.maxSeqLen, opts.maxSeqLen ?? Infinity) })
  const source = (t: TensorName): string => ggufTensorName(t === 'output' && tied ? 'tok_embeddings' : t)
  const tensor = async (name: string): Promise<Float32Array> => {
    const t = tensors.get(name)
    if (t === undefined) throw new ModelFormatError(`${file}: no tensor ${name}`)
    if (t.type === undefined) return unsupported(t)
    const n = t.shape.reduce((a, b) => a * b, 1)
    return dequantize(t.type, await read(t.offset, t.bytes), n)
  }

  const rope = tensors.get(ROPE_FREQS)
  if (rope !== undefined) config = checkConfig({ ...config, ropeScaling: ropeScalingFromFreqs(config, await tensor(ROPE_FREQS)) })

  // Every tensor checked now, from the header, so a wrong file fails before any build starts.
  const names: TensorName[] = ['tok_embeddings', 'norm', 'output']
  for (let l = 0; l < config.nLayers; l++) for (const t of layerTensors(config)) names.push(`layers.${l}.${t}`)
  const expected = new Set<string>([ROPE_FREQS])
  for (const t of names) {
    const name = source(t)
    expected.add(name)
    const info = tensors.get(name)
    if (info === undefined) throw new ModelFormatError(`${file}: no tensor ${name} (needed for ${t})`)
    if (info.type === undefined) unsupported(info)
    const want = tensorShape(config, t)
    if (info.shape.join(',') !== want.join(',')) {
      throw new ModelFormatError(`${file}: tensor ${name} has shape [${info.shape.join(', ')}] (rows, columns) but the metadata implies [${want.join(', ')}]`)
    }
  }
  // A tensor the graph would not use (an o_proj or MLP bias, an extra norm) means the model computes something else.
  const extra = [...tensors.keys()].find((n) => !expected.has(n))
  if (extra !== undefined) throw new ConfigError(`GGUF: tensor ${extra} is not part of a plain Llama/Qwen2 block; ${SUPPORTED_GGUF_ARCHITECTURES}`)
  return { config, tensor: async (t) => await tensor(source(t)) }
}
