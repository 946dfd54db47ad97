/**
 * Model families from Hugging Face directories: for each (Llama 2, Llama 3.x, Qwen2, Mistral
 * v0.3, SmolLM2, TinyLlama) a seeded random directory with that family's real config.json keys
 * at a small size, opened, built into 2 fp32 shards and run on onnxruntime-node and on
 * onnxruntime-web's WASM backend, against an independent Float64 forward pass
 * (helpers/forward64.ts): logits within 1e-4, greedy ids equal over the decisive prefix. Plus:
 * Llama 3 RoPE scaling really changes the logits, q/k/v biases really matter and are applied in
 * fp16 and int4 shards too, and everything else is refused by name.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { buildModel } from '../host/model-store.js'
import { fileBlobs } from '../host/fs-blob.js'
import { loadModel } from '../native-node/store.js'
import { ConfigError } from '../shared/errors.js'
import type { LlamaConfig } from '../shared/model/config.js'
import { fromFloat16, toFloat16 } from '../shared/model/dtype.js'
import { openHfDir, parseHfConfig, writeHfDir, type HfFamily } from '../shared/model/hf.js'
import { randomWeights } from '../shared/model/random.js'
import { isBias, tensorShape, type TensorName, type WeightSource } from '../shared/model/weights.js'
import { Pipeline, generate, lastRow } from '../shared/pipeline.js'
import type { ShardRunner } from '../shared/runner.js'
import { ropeFrequencies, type WeightDType } from '../shared/shard/build.js'
import { dequantizeInt4, quantizeInt4 } from '../shared/shard/quant.js'
import { Forward64, greedy64, inverseFrequencies64, type Greedy64 } from './helpers/forward64.js'
import { tempDir } from './helpers/paths.js'
import { maxAbsDiff } from './helpers/reference.js'
import { loadWasmRunners } from './helpers/wasm.js'

const TOLERANCE = 1e-4
const PROMPT = [3, 41, 7, 199, 58, 120, 9, 250, 33, 77, 140, 5]
const STEPS = 16
/** The RoPE tables every shard carries cover this many positions, whatever max_position_embeddings says. */
const CONTEXT = 256

type Json = Record<string, unknown>

interface Family {
  name: string
  family: HfFamily
  seed: number
  /** config.json as the family's checkpoints write it, scaled down. */
  json: Json
  /** What import must make of it. */
  expected: Partial<LlamaConfig>
}

const FAMILIES: Family[] = [
  {
    name: 'Llama 2 (plain)',
    family: 'llama',
    seed: 21,
    json: {
      architectures: ['LlamaForCausalLM'],
      bos_token_id: 1,
      eos_token_id: 2,
      hidden_act: 'silu',
      hidden_size: 64,
      initializer_range: 0.02,
      intermediate_size: 176,
      max_position_embeddings: 4096,
      model_type: 'llama',
      num_attention_heads: 4,
      num_hidden_layers: 3,
      num_key_value_heads: 4,
      pretraining_tp: 1,
      rms_norm_eps: 1e-5,
      rope_scaling: null,
      tie_word_embeddings: false,
      torch_dtype: 'float16',
      transformers_version: '4.31.0.dev0',
      use_cache: true,
      vocab_size: 320
    },
    expected: { nKvHeads: 4, tiedEmbeddings: false, ropeTheta: 10000, bosId: 1, eosId: 2 }
  },
  {
    name: 'Llama 3.2 (llama3 RoPE scaling, head_dim ≠ hidden/heads, tied)',
    family: 'llama',
    seed: 22,
    json: {
      architectures: ['LlamaForCausalLM'],
      attention_bias: false,
      attention_dropout: 0.0,
      bos_token_id: 380,
      eos_token_id: [381, 382, 383],
      head_dim: 32,
      hidden_act: 'silu',
      hidden_size: 96,
      initializer_range: 0.02,
      intermediate_size: 256,
      max_position_embeddings: 131072,
      mlp_bias: false,
      model_type: 'llama',
      num_attention_heads: 4,
      num_hidden_layers: 2,
      num_key_value_heads: 2,
      pretraining_tp: 1,
      rms_norm_eps: 1e-5,
      rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
      rope_theta: 500000.0,
      tie_word_embeddings: true,
      torch_dtype: 'bfloat16',
      transformers_version: '4.45.0.dev0',
      use_cache: true,
      vocab_size: 384
    },
    expected: {
      headDim: 32,
      tiedEmbeddings: true,
      ropeTheta: 500000,
      ropeScaling: { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
      bosId: 380,
      eosId: 381,
      eosIds: [381, 382, 383]
    }
  },
  {
    name: 'Qwen2.5 (q/k/v biases, tied, rope_theta 1e6)',
    family: 'qwen2',
    seed: 27,
    json: {
      architectures: ['Qwen2ForCausalLM'],
      attention_dropout: 0.0,
      bos_token_id: 440,
      eos_token_id: 441,
      hidden_act: 'silu',
      hidden_size: 64,
      initializer_range: 0.02,
      intermediate_size: 176,
      max_position_embeddings: 32768,
      max_window_layers: 2,
      model_type: 'qwen2',
      num_attention_heads: 4,
      num_hidden_layers: 2,
      num_key_value_heads: 2,
      rms_norm_eps: 1e-6,
      rope_theta: 1000000.0,
      // Listed but unused: use_sliding_window is false.
      sliding_window: 4096,
      tie_word_embeddings: true,
      torch_dtype: 'bfloat16',
      transformers_version: '4.43.1',
      use_cache: true,
      use_sliding_window: false,
      vocab_size: 448
    },
    expected: { qkvBias: true, tiedEmbeddings: true, ropeTheta: 1e6, normEps: 1e-6, maxSeqLen: 32768 }
  },
  {
    name: 'Mistral 7B v0.3 shape (sliding_window null, head_dim present)',
    family: 'mistral',
    seed: 24,
    json: {
      architectures: ['MistralForCausalLM'],
      attention_dropout: 0.0,
      bos_token_id: 1,
      eos_token_id: 2,
      head_dim: 16,
      hidden_act: 'silu',
      hidden_size: 64,
      initializer_range: 0.02,
      intermediate_size: 224,
      max_position_embeddings: 32768,
      model_type: 'mistral',
      num_attention_heads: 4,
      num_hidden_layers: 2,
      num_key_value_heads: 1,
      rms_norm_eps: 1e-5,
      rope_theta: 1000000.0,
      sliding_window: null,
      tie_word_embeddings: false,
      torch_dtype: 'bfloat16',
      transformers_version: '4.42.0.dev0',
      use_cache: true,
      vocab_size: 512
    },
    expected: { nKvHeads: 1, ropeTheta: 1e6, tiedEmbeddings: false, maxSeqLen: 32768 }
  },
  {
    name: 'SmolLM2 shape (llama, tied, rope_theta 100000, head_dim given)',
    family: 'llama',
    seed: 25,
    json: {
      architectures: ['LlamaForCausalLM'],
      attention_bias: false,
      attention_dropout: 0.0,
      bos_token_id: 0,
      eos_token_id: 0,
      head_dim: 32,
      hidden_act: 'silu',
      hidden_size: 96,
      initializer_range: 0.041666666666666664,
      intermediate_size: 256,
      is_llama_config: true,
      max_position_embeddings: 8192,
      mlp_bias: false,
      model_type: 'llama',
      num_attention_heads: 3,
      num_hidden_layers: 3,
      num_key_value_heads: 1,
      pretraining_tp: 1,
      rms_norm_eps: 1e-5,
      rope_interleaved: false,
      rope_scaling: null,
      rope_theta: 100000,
      tie_word_embeddings: true,
      torch_dtype: 'bfloat16',
      transformers_version: '4.42.3',
      use_cache: true,
      vocab_size: 320
    },
    expected: { tiedEmbeddings: true, ropeTheta: 100000, nHeads: 3, nKvHeads: 1, bosId: 0, eosId: 0 }
  },
  {
    name: 'TinyLlama shape (GQA 8:1)',
    family: 'llama',
    seed: 26,
    json: {
      architectures: ['LlamaForCausalLM'],
      attention_bias: false,
      bos_token_id: 1,
      eos_token_id: 2,
      hidden_act: 'silu',
      hidden_size: 128,
      initializer_range: 0.02,
      intermediate_size: 256,
      max_position_embeddings: 2048,
      model_type: 'llama',
      num_attention_heads: 16,
      num_hidden_layers: 2,
      num_key_value_heads: 2,
      pretraining_tp: 1,
      rms_norm_eps: 1e-5,
      rope_scaling: null,
      rope_theta: 10000.0,
      tie_word_embeddings: false,
      torch_dtype: 'bfloat16',
      transformers_version: '4.35.0',
      use_cache: true,
      vocab_size: 384
    },
    expected: { nHeads: 16, nKvHeads: 2, tiedEmbeddings: false }
  }
]

/**
 * With a tied classifier, N(0, 1) random embeddings make every model echo its last token (each
 * embedding is nearest to itself); a smaller table lets the blocks decide what comes next.
 */
function quieterEmbedding(w: WeightSource): WeightSource {
  if (!w.config.tiedEmbeddings) return w
  return { config: w.config, tensor: async (n) => (n === 'tok_embeddings' ? (await w.tensor(n)).map((v) => v * 0.1) : await w.tensor(n)) }
}

/** Writes seeded random weights for `json` as a HF directory whose config.json is `json` itself. */
async function hfDir(json: Json, family: HfFamily, seed: number): Promise<string> {
  const w = quieterEmbedding(randomWeights(parseHfConfig(json), seed))
  const files = await writeHfDir(w, { dtype: 'F32', permute: false, family })
  files['config.json'] = new TextEncoder().encode(JSON.stringify(json, null, 2))
  const dir = tempDir('family-hf')
  for (const [name, bytes] of Object.entries(files)) await writeFile(join(dir, name), bytes)
  return dir
}

const open = async (dir: string): Promise<WeightSource> => await openHfDir(fileBlobs(dir), { maxSeqLen: CONTEXT })

/** Builds `w` into 2 shards of `dtype`; returns the model directory. */
async function build(w: WeightSource, dtype: WeightDType = 'fp32', int4Accuracy?: number): Promise<string> {
  const dir = tempDir('family-model')
  await mkdir(dir, { recursive: true })
  const m = await buildModel(w, dir, { source: 'test', dtype, int4Accuracy, shards: 2 })
  expect(m.shards).toHaveLength(2)
  return dir
}

const nodeRunners = async (dir: string): Promise<ShardRunner[]> => (await loadModel(dir, { device: 'cpu' })).runners

async function dispose(runners: ShardRunner[]): Promise<void> {
  for (const r of runners) await r.dispose()
}

/** Every prompt position's logits on a fresh pipeline over `runners`. */
async function promptLogits(runners: ShardRunner[], prompt: number[]): Promise<Float32Array[]> {
  const p = new Pipeline(runners.map((r) => r.open()))
  const out = await p.step(prompt)
  p.close()
  return Array.from({ length: out.seq }, (_, i) => out.data.slice(i * out.width, (i + 1) * out.width))
}

function worstRow(rows: ArrayLike<number>[], ref: ArrayLike<number>[]): number {
  expect(rows).toHaveLength(ref.length)
  return Math.max(...rows.map((r, i) => maxAbsDiff(r, ref[i])))
}

/** Prompt logits, teacher-forced step logits and free-running greedy ids against the Float64 reference. */
async function checkAgainst(runners: ShardRunner[], ref: Greedy64): Promise<void> {
  expect(worstRow(await promptLogits(runners, PROMPT), ref.promptLogits), 'prompt logits').toBeLessThan(TOLERANCE)
  const p = new Pipeline(runners.map((r) => r.open()))
  let logits = lastRow(await p.step(PROMPT))
  for (let s = 0; s < ref.decisivePrefix; s++) {
    expect(maxAbsDiff(logits, ref.stepLogits[s]), `step ${s} logits`).toBeLessThan(TOLERANCE)
    if (s + 1 < ref.decisivePrefix) logits = lastRow(await p.step([ref.ids[s]]))
  }
  p.close()
  const free = new Pipeline(runners.map((r) => r.open()))
  const ids: number[] = []
  for await (const t of generate(free, { prompt: PROMPT, maxTokens: ref.decisivePrefix })) ids.push(t.id)
  free.close()
  expect(ids).toEqual(ref.ids.slice(0, ref.decisivePrefix))
}

for (const f of FAMILIES) {
  describe(f.name, () => {
    let weights: WeightSource
    let ref: Greedy64
    const runtimes: Record<string, ShardRunner[]> = {}
    beforeAll(async () => {
      weights = await open(await hfDir(f.json, f.family, f.seed))
      ref = greedy64(await Forward64.load(weights), PROMPT, STEPS)
      const model = await build(weights)
      const { manifest, runners } = await loadModel(model, { device: 'cpu' })
      runtimes['onnxruntime-node'] = runners
      runtimes['onnxruntime-web wasm'] = await loadWasmRunners(model, manifest)
    })
    afterAll(async () => {
      for (const rs of Object.values(runtimes)) await dispose(rs)
    })

    it('imports as the family it is, and writeHfDir writes that family back', async () => {
      const parsed = parseHfConfig(f.json)
      expect(parsed).toMatchObject(f.expected)
      expect(weights.config).toEqual({ ...parsed, maxSeqLen: CONTEXT })
      const written = JSON.parse(new TextDecoder().decode((await writeHfDir(weights, { dtype: 'F32', permute: true, family: f.family }))['config.json']))
      expect(written).toMatchObject({ model_type: f.family, architectures: f.json.architectures, tie_word_embeddings: f.json.tie_word_embeddings })
      expect(parseHfConfig(written)).toEqual(weights.config)
    })

    it('the reference decides most greedy steps, and they do not just repeat (else the id check would prove little)', () => {
      expect(ref.decisivePrefix).toBeGreaterThanOrEqual(STEPS / 2)
      expect(new Set(ref.ids.slice(0, ref.decisivePrefix)).size).toBeGreaterThan(STEPS / 4)
    })

    for (const runtime of ['onnxruntime-node', 'onnxruntime-web wasm']) {
      it(`${runtime}: logits within ${TOLERANCE} of the Float64 reference, greedy ids over the decisive prefix`, async () => {
        await checkAgainst(runtimes[runtime], ref)
      })
    }
  })
}

describe('Llama 3 RoPE scaling', () => {
  const llama3 = FAMILIES[1]
  // A short original context puts frequencies in all three bands (kept, divided, blended) at hd 32, θ 1e4.
  const json: Json = {
    ...llama3.json,
    rope_theta: 10000,
    rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 32 }
  }
  const long = Array.from({ length: 48 }, (_, i) => (i * 37 + 11) % 384)

  it('the shard tables use the llama3 rule, all three bands of it', () => {
    const c = parseHfConfig(json)
    const built = ropeFrequencies(c)
    const ref = inverseFrequencies64(c)
    const plain = inverseFrequencies64({ ...c, ropeScaling: undefined })
    for (let i = 0; i < ref.length; i++) expect(Math.abs(built[i] - ref[i]) / ref[i]).toBeLessThan(1e-6)
    const kept = ref.filter((f, i) => f === plain[i]).length
    const divided = ref.filter((f, i) => Math.abs(f - plain[i] / 8) < 1e-15).length
    expect(kept).toBeGreaterThan(0)
    expect(divided).toBeGreaterThan(0)
    expect(ref.length - kept - divided).toBeGreaterThan(0)
  })

  it('scaled and unscaled models from the same weights differ, and each matches its reference', async () => {
    const scaled = await open(await hfDir(json, 'llama', 31))
    const plain = await open(await hfDir({ ...json, rope_scaling: null }, 'llama', 31))
    expect(scaled.config.ropeScaling?.originalMaxPositionEmbeddings).toBe(32)
    expect(plain.config.ropeScaling).toBeUndefined()
    const logits: Float32Array[][] = []
    for (const w of [scaled, plain]) {
      const ref = await Forward64.load(w)
      const runners = await nodeRunners(await build(w))
      const got = await promptLogits(runners, long)
      await dispose(runners)
      expect(worstRow(got, ref.step(long)), `${w.config.ropeScaling ? 'scaled' : 'plain'} vs reference`).toBeLessThan(TOLERANCE)
      logits.push(got)
    }
    expect(maxAbsDiff(logits[0][long.length - 1], logits[1][long.length - 1])).toBeGreaterThan(0.05)
  })
})

describe('Qwen2 q/k/v biases', () => {
  const qwen = FAMILIES[2]
  const prompt = PROMPT.slice(0, 6)

  /** The weights a shard of `dtype` really holds: fp16 or int4 matrices (fp16 embedding and classifier), fp32 norms and biases. */
  const asShardSees = (w: WeightSource, dtype: 'fp16' | 'int4'): WeightSource => ({
    config: w.config,
    async tensor(name: TensorName) {
      const t = await w.tensor(name)
      const shape = tensorShape(w.config, name)
      if (shape.length === 1) return t
      if (dtype === 'fp16' || name === 'tok_embeddings' || name === 'output') return fromFloat16(toFloat16(t))
      return dequantizeInt4(quantizeInt4(t, shape[0], shape[1]))
    }
  })

  it('change the logits (so matching the reference proves they are applied)', async () => {
    const w = await open(await hfDir(qwen.json, 'qwen2', qwen.seed))
    const unbiased: WeightSource = { config: w.config, tensor: async (n) => (isBias(n) ? new Float32Array(tensorShape(w.config, n)[0]) : await w.tensor(n)) }
    const a = (await Forward64.load(w)).step(prompt)
    const b = (await Forward64.load(unbiased)).step(prompt)
    expect(maxAbsDiff(a[a.length - 1], b[b.length - 1])).toBeGreaterThan(0.05)
  })

  for (const dtype of ['fp16', 'int4'] as const) {
    it(`are added in ${dtype} shards too (onnxruntime-node, within ${TOLERANCE} of the reference on the shard's own weights)`, async () => {
      const w = await open(await hfDir(qwen.json, 'qwen2', qwen.seed))
      const runners = await nodeRunners(await build(w, dtype, 0))
      const got = await promptLogits(runners, prompt)
      await dispose(runners)
      expect(worstRow(got, (await Forward64.load(asShardSees(w, dtype))).step(prompt))).toBeLessThan(TOLERANCE)
    })
  }

  it('a qwen2 directory without them is rejected by name', async () => {
    const dir = await hfDir({ ...qwen.json, model_type: 'llama', architectures: ['LlamaForCausalLM'] }, 'llama', 1)
    await writeFile(join(dir, 'config.json'), JSON.stringify(qwen.json))
    await expect(open(dir)).rejects.toThrow(/model\.layers\.0\.self_attn\.q_proj\.bias/)
  })
})

describe('refusals', () => {
  const llama = FAMILIES[0].json
  const qwen = FAMILIES[2].json
  const refused = (json: Json, why: RegExp): void => {
    let err: unknown
    try {
      parseHfConfig(json)
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(ConfigError)
    const message = (err as Error).message
    expect(message).toMatch(why)
    // Every refusal names what would have worked.
    for (const family of ['Llama', 'Mistral', 'Qwen2', 'LlamaForCausalLM', 'MistralForCausalLM', 'Qwen2ForCausalLM']) expect(message).toContain(family)
  }

  it('other RoPE scalings, naming the type', () => {
    for (const type of ['linear', 'dynamic', 'yarn', 'longrope', 'su']) {
      refused({ ...llama, rope_scaling: { rope_type: type, factor: 4 } }, new RegExp(`"${type}" is not supported \\(only "llama3"`))
      refused({ ...llama, rope_scaling: { type, factor: 4 } }, new RegExp(`"${type}"`))
    }
    refused({ ...llama, rope_scaling: { rope_type: 'llama3', factor: 8 } }, /needs a number low_freq_factor/)
    refused({ ...llama, rope_scaling: { factor: 8 } }, /rope_scaling type undefined is not supported/)
  })

  it('mixture-of-experts models', () => {
    refused({ ...llama, architectures: ['MixtralForCausalLM'], model_type: 'mixtral', num_local_experts: 8 }, /"mixtral" is a mixture-of-experts/)
    refused({ ...qwen, architectures: ['Qwen2MoeForCausalLM'], model_type: 'qwen2_moe', num_experts: 60 }, /"qwen2_moe" is a mixture-of-experts/)
    refused({ ...llama, architectures: ['DeepseekV3ForCausalLM'], model_type: 'deepseek_v3', n_routed_experts: 256 }, /"deepseek_v3" is a mixture-of-experts/)
    refused({ ...llama, num_local_experts: 8 }, /mixture-of-experts models \(num_local_experts = 8\)/)
    refused({ ...qwen, num_experts: 4 }, /mixture-of-experts models \(num_experts = 4\)/)
  })

  it('other model types and architectures', () => {
    refused({ ...llama, architectures: ['GemmaForCausalLM'], model_type: 'gemma' }, /model_type "gemma" is not supported/)
    refused({ ...llama, architectures: ['Phi3ForCausalLM'], model_type: 'phi3' }, /model_type "phi3" is not supported/)
    refused({ ...llama, architectures: ['Qwen3ForCausalLM'], model_type: 'qwen3' }, /model_type "qwen3" is not supported/)
    refused({ ...llama, architectures: ['GPT2LMHeadModel'], model_type: undefined }, /architecture "GPT2LMHeadModel" is not supported/)
    refused({ ...llama, architectures: ['Qwen2ForCausalLM'] }, /does not match model_type "llama"/)
    refused({ ...qwen, architectures: ['LlamaForCausalLM'] }, /does not match model_type "qwen2"/)
  })

  it('sliding-window attention in use, but not a window that is listed and off or as long as the context', () => {
    refused({ ...qwen, use_sliding_window: true, sliding_window: 4096 }, /sliding-window attention in use/)
    refused({ ...qwen, layer_types: ['full_attention', 'sliding_attention'] }, /sliding-window attention in use/)
    expect(parseHfConfig({ ...qwen, use_sliding_window: true, sliding_window: 32768 }).maxSeqLen).toBe(32768)
    expect(parseHfConfig({ ...qwen, use_sliding_window: false, sliding_window: 128 }).maxSeqLen).toBe(32768)
  })

  it('biases, activations and layouts the graph does not compute', () => {
    refused({ ...llama, attention_bias: true }, /attention biases \(attention_bias: true\)/)
    refused({ ...llama, mlp_bias: true }, /MLP biases/)
    refused({ ...llama, hidden_act: 'gelu' }, /hidden_act "gelu"/)
    refused({ ...llama, partial_rotary_factor: 0.5 }, /partial_rotary_factor 0.5/)
  })
})
