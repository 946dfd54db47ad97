import { readText, type BlobSource } from '../blob.js'
import { checkConfig, headDim, type LlamaConfig, type RopeLayout, type RopeScaling } from './config.js'
import { ConfigError, ModelFormatError } from '../errors.js'
import { toBfloat16, toFloat16 } from './dtype.js'
import { encodeSafetensors, openSafetensors, type SafeDType } from './safetensors.js'
import { layerTensors, tensorShape, type LayerTensor, type TensorName, type WeightSource } from './weights.js'

/**
 * Hugging Face model directories (config.json + safetensors) of the Llama family: Llama 1/2/3.x,
 * Mistral and Qwen2/2.5 (the same block with q/k/v biases). Everything else is refused by name.
 *
 * HF stores wq/wk with rows permuted so RoPE pairs dimensions (i, i + headDim/2) ("half"
 * layout); the shard graph rotates that layout natively, so import never permutes. A directory
 * whose config.json carries the non-standard key `"tessera_rope_layout": "interleaved"` holds
 * unpermuted Meta/llama2.c-layout wq/wk instead (what writeHfDir writes with permute: false),
 * and is imported as such.
 */

/** The model families import understands, each a dense Llama-shaped decoder. */
export type HfFamily = 'llama' | 'mistral' | 'qwen2'
const FAMILIES: Record<HfFamily, { architecture: string; name: string }> = {
  llama: { architecture: 'LlamaForCausalLM', name: 'Llama 1/2/3.x (incl. TinyLlama, SmolLM2)' },
  mistral: { architecture: 'MistralForCausalLM', name: 'Mistral (dense, e.g. 7B v0.1–v0.3)' },
  qwen2: { architecture: 'Qwen2ForCausalLM', name: 'Qwen2 / Qwen2.5 (dense)' }
}

/** What every refusal ends with, so the reader learns what would have worked. */
export const SUPPORTED_FAMILIES =
  'supported: ' +
  Object.entries(FAMILIES)
    .map(([type, f]) => `${f.name} [model_type "${type}", ${f.architecture}]`)
    .join('; ') +
  '; with SiLU MLPs and plain or "llama3"-scaled RoPE'

/** Mixture-of-experts model types, named so the refusal says why rather than just "unknown". */
const MOE_TYPES = ['mixtral', 'qwen2_moe', 'qwen3_moe', 'deepseek', 'deepseek_v2', 'deepseek_v3', 'dbrx', 'jamba', 'olmoe', 'granitemoe', 'phimoe']
/** config.json keys that only mixture-of-experts models have. */
const MOE_KEYS = ['num_local_experts', 'num_experts', 'num_experts_per_tok', 'n_routed_experts', 'moe_intermediate_size']

const HF_LAYER: Record<LayerTensor, string> = {
  attention_norm: 'input_layernorm.weight',
  wq: 'self_attn.q_proj.weight',
  wk: 'self_attn.k_proj.weight',
  wv: 'self_attn.v_proj.weight',
  bq: 'self_attn.q_proj.bias',
  bk: 'self_attn.k_proj.bias',
  bv: 'self_attn.v_proj.bias',
  wo: 'self_attn.o_proj.weight',
  ffn_norm: 'post_attention_layernorm.weight',
  w1: 'mlp.gate_proj.weight',
  w2: 'mlp.down_proj.weight',
  w3: 'mlp.up_proj.weight'
}

/** The HF tensor name of a llama2.c-named tensor (`output` → lm_head; the caller handles tying). */
export function hfTensorName(name: TensorName): string {
  if (name === 'tok_embeddings') return 'model.embed_tokens.weight'
  if (name === 'norm') return 'model.norm.weight'
  if (name === 'output') return 'lm_head.weight'
  const [, l, t] = name.split('.')
  return `model.layers.${l}.${HF_LAYER[t as LayerTensor]}`
}

const first = (v: unknown): number | undefined => {
  const x = Array.isArray(v) ? v[0] : v
  return typeof x === 'number' ? x : undefined
}

const ids = (v: unknown): number[] | undefined => (Array.isArray(v) && v.every((x) => typeof x === 'number') ? (v as number[]) : undefined)

/** A number field of config.json, or undefined when absent or null. */
const num = (v: unknown): number | undefined => (typeof v === 'number' ? v : undefined)

// biome-ignore lint/suspicious/noExplicitAny: config.json is whatever a checkpoint's authors wrote; every field read is checked.
type HfJson = Record<string, any>

/** config.json → LlamaConfig; throws ConfigError for anything the Llama graph would compute differently. */
export function parseHfConfig(j: HfJson): LlamaConfig {
  const no = (m: string): never => {
    throw new ConfigError(`config.json: ${m}; ${SUPPORTED_FAMILIES}`)
  }
  const family = familyOf(j, no)
  // Each of these changes the math; importing silently would give a model that runs but talks nonsense.
  const moe = MOE_KEYS.find((k) => j[k] !== undefined && j[k] !== null && j[k] !== 0)
  if (moe !== undefined) no(`mixture-of-experts models (${moe} = ${JSON.stringify(j[moe])}) are not supported`)
  // Llama's attention_bias also puts a bias on o_proj, which the graph does not carry.
  if (family !== 'qwen2' && j.attention_bias === true) no('attention biases (attention_bias: true) are not supported on llama/mistral')
  if (j.mlp_bias === true) no('MLP biases (mlp_bias: true) are not supported')
  if (j.hidden_act !== undefined && j.hidden_act !== 'silu') no(`hidden_act "${j.hidden_act}" is not supported (only silu)`)
  const partial = num(j.partial_rotary_factor) ?? num(j.rope_parameters?.partial_rotary_factor)
  if (partial !== undefined && partial !== 1) no(`partial_rotary_factor ${partial} is not supported (RoPE rotates whole heads)`)
  const layout: RopeLayout = j.tessera_rope_layout ?? 'half'
  if (layout !== 'half' && layout !== 'interleaved') no(`tessera_rope_layout must be "half" or "interleaved", got ${JSON.stringify(layout)}`)

  const heads: number = j.num_attention_heads
  const explicitHeadDim = num(j.head_dim)
  const maxPositions: number = j.max_position_embeddings
  const eosIds = ids(j.eos_token_id)
  const config: LlamaConfig = {
    dim: j.hidden_size,
    hiddenDim: j.intermediate_size,
    nLayers: j.num_hidden_layers,
    nHeads: heads,
    nKvHeads: j.num_key_value_heads ?? heads,
    vocabSize: j.vocab_size,
    maxSeqLen: contextOf(family, j, maxPositions, no),
    normEps: j.rms_norm_eps ?? 1e-6,
    ropeTheta: num(j.rope_theta) ?? num(j.rope_parameters?.rope_theta) ?? 10000,
    ropeLayout: layout,
    tiedEmbeddings: j.tie_word_embeddings ?? false,
    bosId: first(j.bos_token_id),
    eosId: first(j.eos_token_id)
  }
  // Only a head width that differs is recorded, so configs of models that always worked stay as they were.
  if (explicitHeadDim !== undefined && explicitHeadDim * heads !== j.hidden_size) config.headDim = explicitHeadDim
  if (family === 'qwen2') config.qkvBias = true // Qwen2 always has q/k/v biases (and none on o_proj)
  const scaling = ropeScalingOf(j.rope_scaling ?? j.rope_parameters, no)
  if (scaling !== undefined) config.ropeScaling = scaling
  if (eosIds !== undefined && eosIds.length > 0) config.eosIds = eosIds
  return checkConfig(config)
}

/** Which family config.json describes, from model_type and architectures; refuses anything else by name. */
function familyOf(j: HfJson, no: (m: string) => never): HfFamily {
  const type: unknown = j.model_type
  const archs: unknown[] = Array.isArray(j.architectures) ? j.architectures : []
  if (typeof type === 'string' && MOE_TYPES.includes(type)) no(`model_type "${type}" is a mixture-of-experts model, which is not supported`)
  if (type !== undefined && !(typeof type === 'string' && Object.hasOwn(FAMILIES, type))) no(`model_type ${JSON.stringify(type)} is not supported`)
  const byArch = (a: unknown): HfFamily | undefined => (Object.keys(FAMILIES) as HfFamily[]).find((f) => FAMILIES[f].architecture === a)
  const bad = archs.find((a) => byArch(a) === undefined)
  if (bad !== undefined) no(`architecture ${JSON.stringify(bad)} is not supported`)
  const family = (type as HfFamily | undefined) ?? byArch(archs[0])
  if (family === undefined) no('config.json names neither a model_type nor an architecture')
  // Llama and Mistral blocks compute the same here; only Qwen2's biases make a mismatch matter.
  const other = archs.find((a) => (byArch(a) === 'qwen2') !== (family === 'qwen2'))
  if (other !== undefined) no(`architecture ${JSON.stringify(other)} does not match model_type "${family}"`)
  return family as HfFamily
}

/** The context the graph may run: full causal attention equals sliding-window attention only while the context fits the window. */
function contextOf(family: HfFamily, j: HfJson, maxPositions: number, no: (m: string) => never): number {
  const window = num(j.sliding_window)
  if (family === 'qwen2') {
    // Qwen2 ignores sliding_window unless use_sliding_window is set (newer configs say it per layer).
    const layers: unknown[] = Array.isArray(j.layer_types) ? j.layer_types : []
    const sliding = j.use_sliding_window === true || layers.some((t) => t === 'sliding_attention')
    if (sliding && window !== undefined && window < maxPositions) {
      no(`sliding-window attention in use (use_sliding_window with sliding_window ${window} < max_position_embeddings ${maxPositions}) is not supported`)
    }
    return maxPositions
  }
  // Mistral v0.1's window: capping the context there keeps full causal attention exact.
  return window !== undefined && window < maxPositions ? window : maxPositions
}

/** rope_scaling → RopeScaling; null, absent or "default" is plain RoPE; any other type is refused. */
function ropeScalingOf(r: unknown, no: (m: string) => never): RopeScaling | undefined {
  if (r === undefined || r === null) return undefined
  if (typeof r !== 'object') no(`rope_scaling must be an object or null, got ${JSON.stringify(r)}`)
  const o = r as HfJson
  // transformers v5's rope_parameters may carry just the base; anything else without a type is not plain RoPE.
  const plain = Object.keys(o).every((k) => k === 'rope_theta' || k === 'partial_rotary_factor')
  const type: unknown = o.rope_type ?? o.type ?? (plain ? 'default' : undefined)
  if (type === 'default') return undefined
  if (type !== 'llama3') no(`rope_scaling type ${JSON.stringify(type)} is not supported (only "llama3" scaling, or none)`)
  const field = (k: string): number => {
    const v = num(o[k])
    if (v === undefined) no(`rope_scaling "llama3" needs a number ${k}, got ${JSON.stringify(o[k])}`)
    return v as number
  }
  return {
    type: 'llama3',
    factor: field('factor'),
    lowFreqFactor: field('low_freq_factor'),
    highFreqFactor: field('high_freq_factor'),
    originalMaxPositionEmbeddings: field('original_max_position_embeddings')
  }
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
  for (let l = 0; l < config.nLayers; l++) for (const t of layerTensors(config)) names.push(`layers.${l}.${t}`)
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
  /** The family whose config.json keys to write; default qwen2 when the config has q/k/v biases, else llama. */
  family?: HfFamily
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
  const config = hfConfigJson(c, opts.family ?? (c.qkvBias === true ? 'qwen2' : 'llama'), opts.dtype)
  if (layout === 'interleaved') config.tessera_rope_layout = 'interleaved'

  const names: TensorName[] = ['tok_embeddings']
  for (let l = 0; l < c.nLayers; l++) for (const t of layerTensors(c)) names.push(`layers.${l}.${t}`)
  names.push('norm')
  if (!c.tiedEmbeddings) names.push('output')
  const tensors: Array<[string, { dtype: SafeDType; shape: number[]; data: Uint8Array }]> = []
  for (const n of names) {
    let t = await w.tensor(n)
    const kind = n.split('.')[2]
    const hd = headDim(c)
    // A bias is permuted as a one-column weight: it belongs to the row it is added to.
    if (permute && (kind === 'wq' || kind === 'wk')) t = permuteToHalf(t, kind === 'wq' ? c.nHeads : c.nKvHeads, hd, c.dim)
    if (permute && (kind === 'bq' || kind === 'bk')) t = permuteToHalf(t, kind === 'bq' ? c.nHeads : c.nKvHeads, hd, 1)
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

/** config.json as `family`'s transformers config class writes it (the keys that matter to import). */
function hfConfigJson(c: LlamaConfig, family: HfFamily, dtype: SafeDType): Record<string, unknown> {
  const bias = c.qkvBias === true
  if (family === 'qwen2' && !bias) throw new ConfigError('a qwen2 directory always has q/k/v biases, and this config has none')
  if (family !== 'qwen2' && bias) throw new ConfigError(`a ${family} directory cannot hold q/k/v biases without an o_proj bias; write it as qwen2`)
  const s = c.ropeScaling
  const config: Record<string, unknown> = {
    architectures: [FAMILIES[family].architecture],
    model_type: family,
    hidden_act: 'silu',
    hidden_size: c.dim,
    intermediate_size: c.hiddenDim,
    num_hidden_layers: c.nLayers,
    num_attention_heads: c.nHeads,
    num_key_value_heads: c.nKvHeads,
    head_dim: headDim(c),
    vocab_size: c.vocabSize,
    max_position_embeddings: c.maxSeqLen,
    rms_norm_eps: c.normEps,
    rope_theta: c.ropeTheta,
    rope_scaling:
      s === undefined
        ? null
        : {
            rope_type: s.type,
            factor: s.factor,
            low_freq_factor: s.lowFreqFactor,
            high_freq_factor: s.highFreqFactor,
            original_max_position_embeddings: s.originalMaxPositionEmbeddings
          },
    tie_word_embeddings: c.tiedEmbeddings,
    bos_token_id: c.bosId ?? null,
    eos_token_id: c.eosIds ?? c.eosId ?? null,
    torch_dtype: { F32: 'float32', F16: 'float16', BF16: 'bfloat16' }[dtype]
  }
  if (family === 'llama') Object.assign(config, { attention_bias: false, mlp_bias: false, pretraining_tp: 1 })
  if (family === 'mistral') config.sliding_window = null
  // Qwen2 lists a window it does not use unless use_sliding_window is set.
  if (family === 'qwen2') Object.assign(config, { use_sliding_window: false, sliding_window: c.maxSeqLen, max_window_layers: c.nLayers })
  return config
}

function encode(t: Float32Array, dtype: SafeDType): Uint8Array {
  const a = dtype === 'F32' ? t : dtype === 'F16' ? toFloat16(t) : toBfloat16(t)
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength).slice()
}
