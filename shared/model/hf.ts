import { readText, type BlobSource } from '../blob.js'
import { checkConfig, headDim, type LlamaConfig, type RopeLayout } from './config.js'
import { ConfigError, ModelFormatError } from '../errors.js'
import { toBfloat16, toFloat16 } from './dtype.js'
import { encodeSafetensors, openSafetensors, type SafeDType } from './safetensors.js'
import { LAYER_TENSORS, tensorShape, type LayerTensor, type TensorName, type WeightSource } from './weights.js'

/**
 * Hugging Face model directories (config.json + safetensors) of the Llama family.
 *
 * HF stores wq/wk with rows permuted so RoPE pairs dimensions (i, i + headDim/2) ("half"
 * layout); the shard graph rotates that layout natively, so import never permutes. A directory
 * whose config.json carries the non-standard key `"tessera_rope_layout": "interleaved"` holds
 * unpermuted Meta/llama2.c-layout wq/wk instead (what writeHfDir writes with permute: false),
 * and is imported as such.
 */

const ARCHITECTURES = ['LlamaForCausalLM', 'MistralForCausalLM']
const MODEL_TYPES = ['llama', 'mistral']

const HF_LAYER: Record<LayerTensor, string> = {
  attention_norm: 'input_layernorm',
  wq: 'self_attn.q_proj',
  wk: 'self_attn.k_proj',
  wv: 'self_attn.v_proj',
  wo: 'self_attn.o_proj',
  ffn_norm: 'post_attention_layernorm',
  w1: 'mlp.gate_proj',
  w2: 'mlp.down_proj',
  w3: 'mlp.up_proj'
}

/** The HF tensor name of a llama2.c-named tensor (`output` → lm_head; the caller handles tying). */
export function hfTensorName(name: TensorName): string {
  if (name === 'tok_embeddings') return 'model.embed_tokens.weight'
  if (name === 'norm') return 'model.norm.weight'
  if (name === 'output') return 'lm_head.weight'
  const [, l, t] = name.split('.')
  return `model.layers.${l}.${HF_LAYER[t as LayerTensor]}.weight`
}

const first = (v: unknown): number | undefined => {
  const x = Array.isArray(v) ? v[0] : v
  return typeof x === 'number' ? x : undefined
}

/** config.json → LlamaConfig; throws ConfigError for anything the Llama graph would compute differently. */
// biome-ignore lint/suspicious/noExplicitAny: config.json is whatever a checkpoint's authors wrote; every field read is checked below.
export function parseHfConfig(j: Record<string, any>): LlamaConfig {
  const no = (m: string): never => {
    throw new ConfigError(`config.json: ${m}`)
  }
  const archs: string[] = j.architectures ?? []
  if (j.model_type !== undefined && !MODEL_TYPES.includes(j.model_type))
    no(`model_type "${j.model_type}" is not supported; only ${MODEL_TYPES.join(', ')} models can be imported`)
  if (archs.some((a) => !ARCHITECTURES.includes(a)) || (archs.length === 0 && j.model_type === undefined)) {
    no(`architectures ${JSON.stringify(archs)} are not supported; only ${ARCHITECTURES.join(', ')} can be imported`)
  }
  // Each of these changes the math; importing silently would give a model that runs but talks nonsense.
  if (j.attention_bias === true || j.mlp_bias === true) no('attention/MLP biases (attention_bias / mlp_bias) are not supported')
  if (j.hidden_act !== undefined && j.hidden_act !== 'silu') no(`hidden_act "${j.hidden_act}" is not supported (only silu)`)
  if (j.rope_scaling !== undefined && j.rope_scaling !== null) no(`rope_scaling ${JSON.stringify(j.rope_scaling)} is not supported yet (only plain RoPE)`)
  const heads: number = j.num_attention_heads
  if (j.head_dim !== undefined && j.head_dim !== null && j.head_dim * heads !== j.hidden_size) {
    no(`head_dim ${j.head_dim} differs from hidden_size / num_attention_heads (${j.hidden_size / heads}); not supported`)
  }
  const layout: RopeLayout = j.tessera_rope_layout ?? 'half'
  if (layout !== 'half' && layout !== 'interleaved') no(`tessera_rope_layout must be "half" or "interleaved", got ${JSON.stringify(layout)}`)
  let maxSeqLen: number = j.max_position_embeddings
  // Mistral's sliding window: full causal attention equals it while the context fits the window, so cap the context there.
  if (typeof j.sliding_window === 'number' && j.sliding_window < maxSeqLen) maxSeqLen = j.sliding_window
  return checkConfig({
    dim: j.hidden_size,
    hiddenDim: j.intermediate_size,
    nLayers: j.num_hidden_layers,
    nHeads: heads,
    nKvHeads: j.num_key_value_heads ?? heads,
    vocabSize: j.vocab_size,
    maxSeqLen,
    normEps: j.rms_norm_eps ?? 1e-6,
    ropeTheta: j.rope_theta ?? 10000,
    ropeLayout: layout,
    tiedEmbeddings: j.tie_word_embeddings ?? false,
    bosId: first(j.bos_token_id),
    eosId: first(j.eos_token_id)
  })
}

export interface HfOpenOptions {
  /** Cap the context (and the RoPE tables each shard carries) below max_position_embeddings. */
  maxSeqLen?: number
}

/** Opens a HF directory as a lazy WeightSource: reads config.json and the safetensors headers only. */
export async function openHfDir(src: BlobSource, opts: HfOpenOptions = {}): Promise<WeightSource> {
  if (!(await src.has('config.json'))) throw new ModelFormatError('no config.json found: is this a Hugging Face model directory?')
  // biome-ignore lint/suspicious/noExplicitAny: parsed JSON, handed to parseHfConfig which checks each field.
  let json: Record<string, any>
  try {
    json = JSON.parse(await readText(src, 'config.json'))
  } catch (err) {
    throw new ModelFormatError(`config.json: not valid JSON (${(err as Error).message})`)
  }
  const st = await openSafetensors(src)
  const parsed = parseHfConfig(json)
  // A checkpoint without lm_head is tied whatever config.json says: the embedding is the classifier.
  const tied = parsed.tiedEmbeddings || !st.tensors.has('lm_head.weight')
  const config = checkConfig({ ...parsed, tiedEmbeddings: tied, maxSeqLen: Math.min(parsed.maxSeqLen, opts.maxSeqLen ?? Infinity) })
  const source = (t: TensorName): string => hfTensorName(t === 'output' && tied ? 'tok_embeddings' : t)

  // Check every tensor's presence and shape now, from the headers, so a wrong checkpoint fails before any build starts.
  const names: TensorName[] = ['tok_embeddings', 'norm', 'output']
  for (let l = 0; l < config.nLayers; l++) for (const t of LAYER_TENSORS) names.push(`layers.${l}.${t}`)
  for (const t of names) {
    const info = st.tensors.get(source(t))
    if (info === undefined) throw new ModelFormatError(`the checkpoint has no ${source(t)} (needed for ${t})`)
    const want = tensorShape(config, t)
    if (info.shape.join(',') !== want.join(',')) {
      throw new ModelFormatError(`${info.file}: ${source(t)} has shape [${info.shape.join(', ')}] but config.json implies [${want.join(', ')}]`)
    }
  }
  return { config, tensor: async (t) => await st.read(source(t)) }
}

export interface HfWriteOptions {
  dtype: SafeDType
  /** >1 writes model-0000i-of-0000n.safetensors and model.safetensors.index.json. */
  shards?: number
  /**
   * true: apply HF's convert_llama_weights_to_hf permutation to wq/wk of an 'interleaved'
   * source, giving a standard HF directory. false: keep the rows as they are and mark an
   * interleaved source with "tessera_rope_layout": "interleaved" (the escape openHfDir honours).
   */
  permute: boolean
}

/**
 * Meta → HF row order of wq/wk, [heads·hd, dim]: HF row h·hd + p·hd/2 + j = Meta row
 * h·hd + 2j + p (torch: w.view(heads, hd/2, 2, dim).transpose(1, 2).reshape(heads·hd, dim)).
 */
export function permuteToHalf(w: Float32Array, heads: number, hd: number, dim: number): Float32Array {
  const out = new Float32Array(w.length)
  const half = hd / 2
  for (let h = 0; h < heads; h++) {
    for (let p = 0; p < 2; p++) {
      for (let j = 0; j < half; j++) {
        const from = (h * hd + 2 * j + p) * dim
        out.set(w.subarray(from, from + dim), (h * hd + p * half + j) * dim)
      }
    }
  }
  return out
}

/** Serializes a WeightSource as a HF directory (file name → bytes); for tests and exports, all in memory. */
export async function writeHfDir(w: WeightSource, opts: HfWriteOptions): Promise<Record<string, Uint8Array>> {
  const c = w.config
  const permute = opts.permute && c.ropeLayout === 'interleaved'
  const layout: RopeLayout = permute ? 'half' : c.ropeLayout
  const config: Record<string, unknown> = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_act: 'silu',
    hidden_size: c.dim,
    intermediate_size: c.hiddenDim,
    num_hidden_layers: c.nLayers,
    num_attention_heads: c.nHeads,
    num_key_value_heads: c.nKvHeads,
    vocab_size: c.vocabSize,
    max_position_embeddings: c.maxSeqLen,
    rms_norm_eps: c.normEps,
    rope_theta: c.ropeTheta,
    rope_scaling: null,
    tie_word_embeddings: c.tiedEmbeddings,
    attention_bias: false,
    bos_token_id: c.bosId ?? null,
    eos_token_id: c.eosId ?? null,
    torch_dtype: { F32: 'float32', F16: 'float16', BF16: 'bfloat16' }[opts.dtype]
  }
  if (layout === 'interleaved') config.tessera_rope_layout = 'interleaved'

  const names: TensorName[] = ['tok_embeddings']
  for (let l = 0; l < c.nLayers; l++) for (const t of LAYER_TENSORS) names.push(`layers.${l}.${t}`)
  names.push('norm')
  if (!c.tiedEmbeddings) names.push('output')
  const tensors: Array<[string, { dtype: SafeDType; shape: number[]; data: Uint8Array }]> = []
  for (const n of names) {
    let t = await w.tensor(n)
    const kind = n.split('.')[2]
    if (permute && (kind === 'wq' || kind === 'wk')) t = permuteToHalf(t, kind === 'wq' ? c.nHeads : c.nKvHeads, headDim(c), c.dim)
    tensors.push([hfTensorName(n), { dtype: opts.dtype, shape: tensorShape(c, n), data: encode(t, opts.dtype) }])
  }

  const files: Record<string, Uint8Array> = { 'config.json': new TextEncoder().encode(JSON.stringify(config, null, 2) + '\n') }
  const n = opts.shards ?? 1
  if (n <= 1) {
    files['model.safetensors'] = encodeSafetensors(Object.fromEntries(tensors), { format: 'pt' })
    return files
  }
  // Cut by bytes, in order, as transformers' save_pretrained does (each file up to ~total/n).
  const total = tensors.reduce((a, [, t]) => a + t.data.byteLength, 0)
  const groups: Array<typeof tensors> = Array.from({ length: n }, () => [])
  let done = 0
  for (const entry of tensors) {
    groups[Math.min(n - 1, Math.floor((done * n) / total))].push(entry)
    done += entry[1].data.byteLength
  }
  const weightMap: Record<string, string> = {}
  groups.forEach((g, i) => {
    const file = `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`
    files[file] = encodeSafetensors(Object.fromEntries(g), { format: 'pt' })
    for (const [name] of g) weightMap[name] = file
  })
  files['model.safetensors.index.json'] = new TextEncoder().encode(JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + '\n')
  return files
}

function encode(t: Float32Array, dtype: SafeDType): Uint8Array {
  const a = dtype === 'F32' ? t : dtype === 'F16' ? toFloat16(t) : toBfloat16(t)
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength).slice()
}
