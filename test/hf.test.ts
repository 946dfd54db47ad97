/**
 * Hugging Face import: safetensors parsing (dtypes, sharded index, errors), config mapping, and
 * end to end: the same seeded weights as llama2.c, as a permuted HF dir and as an unpermuted
 * (interleaved escape) HF dir must generate the same tokens; bf16 and sharded dirs too; a shard
 * build reads only its layers. Plus the tokenizer wrapper on a hand-made byte-level BPE.
 */
import { describe, it, expect } from 'vitest'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { memoryBlobs, type BlobSource } from '../shared/blob.js'
import { checkConfig, preset, type LlamaConfig } from '../shared/model/config.js'
import { fromBfloat16, fromFloat16, toBfloat16, toFloat16 } from '../shared/model/dtype.js'
import { openHfDir, parseHfConfig, permuteToHalf, writeHfDir } from '../shared/model/hf.js'
import { openLlama2c, writeLlama2c } from '../shared/model/llama2c.js'
import { randomWeights } from '../shared/model/random.js'
import { encodeSafetensors, openSafetensors, readSafetensorsHeader } from '../shared/model/safetensors.js'
import type { WeightSource } from '../shared/model/weights.js'
import { Pipeline, generate } from '../shared/pipeline.js'
import { loadTokenizer } from '../shared/tokenizer.js'
import { buildModel, type BuildOptions } from '../host/model-store.js'
import { loadModel } from '../native-node/store.js'
import { ConfigError, ModelFormatError } from '../shared/errors.js'

const PROMPT = [1, 5, 9]
const STEPS = 24
const bytesOf = (a: Float32Array | Uint16Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength)
const ramp = (n: number, scale = 0.37): Float32Array => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 1.7) * scale * (i + 1))
const text = (o: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(o))

/** Builds `w` into a temp dir, runs greedy generation; returns the ids and the last prompt position's logits. */
async function run(w: WeightSource, o: Partial<BuildOptions> = {}): Promise<{ ids: number[]; logits: Float32Array }> {
  const dir = await mkdtemp(join(tmpdir(), 'tessera-hf-'))
  try {
    await buildModel(w, dir, { source: 'test', ...o })
    const { runners } = await loadModel(dir, { device: 'cpu' })
    const p = new Pipeline(runners.map((r) => r.open()))
    const ids: number[] = []
    let logits = new Float32Array(0)
    for await (const t of generate(p, { prompt: PROMPT, maxTokens: STEPS })) {
      if (t.index === 0) logits = t.logits.slice()
      ids.push(t.id)
    }
    p.close()
    for (const r of runners) await r.dispose()
    return { ids, logits }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length)
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return m
}

/** Counts the bytes read from .safetensors files. */
function counting(src: BlobSource): BlobSource & { bytes: number } {
  const c = {
    bytes: 0,
    size: src.size,
    has: src.has,
    read: async (name: string, offset: number, length: number) => {
      if (name.endsWith('.safetensors')) c.bytes += length
      return await src.read(name, offset, length)
    }
  }
  return c
}

describe('safetensors', () => {
  it('round-trips F32, F16 and BF16 (unaligned offsets included) with metadata and a space-padded header', async () => {
    const a = ramp(6)
    const b = ramp(3) // 3 × 2 bytes: the next tensor starts unaligned
    const c = ramp(10)
    const file = encodeSafetensors(
      {
        a: { dtype: 'F32', shape: [2, 3], data: bytesOf(a) },
        b: { dtype: 'F16', shape: [3], data: bytesOf(toFloat16(b)) },
        c: { dtype: 'F32', shape: [10], data: bytesOf(c) },
        d: { dtype: 'BF16', shape: [5, 2], data: bytesOf(toBfloat16(c)) }
      },
      { format: 'pt' }
    )
    const n = Number(new DataView(file.buffer).getBigUint64(0, true))
    expect((8 + n) % 8).toBe(0)
    expect(new TextDecoder().decode(file.subarray(8, 8 + n))).toMatch(/^\{.*\} *$/s)
    const st = await openSafetensors(memoryBlobs({ 'model.safetensors': file }))
    expect(st.metadata).toEqual({ format: 'pt' })
    expect(st.tensors.get('d')?.shape).toEqual([5, 2])
    expect(Array.from(await st.read('a'))).toEqual(Array.from(a))
    expect(Array.from(await st.read('b'))).toEqual(Array.from(fromFloat16(toFloat16(b))))
    expect(Array.from(await st.read('c'))).toEqual(Array.from(c))
    expect(Array.from(await st.read('d'))).toEqual(Array.from(fromBfloat16(toBfloat16(c))))
  })

  it('follows model.safetensors.index.json across files', async () => {
    const x = ramp(4)
    const y = ramp(8)
    const src = memoryBlobs({
      'p1.safetensors': encodeSafetensors({ x: { dtype: 'F32', shape: [4], data: bytesOf(x) } }),
      'p2.safetensors': encodeSafetensors({ y: { dtype: 'BF16', shape: [2, 4], data: bytesOf(toBfloat16(y)) } }),
      'model.safetensors.index.json': text({ metadata: {}, weight_map: { x: 'p1.safetensors', y: 'p2.safetensors' } })
    })
    const st = await openSafetensors(src)
    expect(st.tensors.get('y')?.file).toBe('p2.safetensors')
    expect(Array.from(await st.read('x'))).toEqual(Array.from(x))
    expect(Array.from(await st.read('y'))).toEqual(Array.from(fromBfloat16(toBfloat16(y))))
    const broken = memoryBlobs({
      'p1.safetensors': encodeSafetensors({}),
      'model.safetensors.index.json': text({ weight_map: { x: 'p1.safetensors', z: 'gone.safetensors' } })
    })
    await expect(openSafetensors(broken)).rejects.toThrow(/gone\.safetensors, which is missing/)
  })

  it('rejects truncated files, unknown dtypes and shapes that do not match the bytes, saying why', async () => {
    const good = encodeSafetensors({ w: { dtype: 'F32', shape: [4, 4], data: bytesOf(ramp(16)) } })
    const open = async (f: Uint8Array): Promise<unknown> => await readSafetensorsHeader(memoryBlobs({ f }), 'f')
    await expect(open(good.subarray(0, good.length - 4))).rejects.toThrow(/ends at byte \d+ but the file has \d+; the file is truncated/)
    await expect(open(good.subarray(0, 20))).rejects.toThrow(/truncated/)
    await expect(open(good.subarray(0, 5))).rejects.toThrow(ModelFormatError)
    await expect(open(new TextEncoder().encode('not a safetensors file at all'))).rejects.toThrow(/implausible/)
    const raw = (header: object, dataBytes: number): Uint8Array => {
      const h = text(header)
      const out = new Uint8Array(8 + h.length + dataBytes)
      new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true)
      out.set(h, 8)
      return out
    }
    await expect(open(raw({ w: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 16] } }, 16))).rejects.toThrow(/needs 24 bytes but data_offsets span 16/)
    const q = memoryBlobs({ 'model.safetensors': raw({ w: { dtype: 'Q4', shape: [4], data_offsets: [0, 2] } }, 2) })
    await expect((await openSafetensors(q)).read('w')).rejects.toThrow(/dtype Q4; only F32, F16 and BF16 are supported/)
    const i64 = memoryBlobs({ 'model.safetensors': raw({ w: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }, 8) })
    await expect((await openSafetensors(i64)).read('w')).rejects.toThrow(/dtype I64/)
  })
})

describe('HF config', () => {
  const base = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: 64,
    intermediate_size: 176,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    vocab_size: 512,
    max_position_embeddings: 128,
    rms_norm_eps: 1e-5
  }
  it('maps fields and defaults', () => {
    const c = parseHfConfig({ ...base, bos_token_id: [1, 7], eos_token_id: [2, 3] })
    expect(c).toMatchObject({
      dim: 64,
      hiddenDim: 176,
      nLayers: 2,
      nHeads: 4,
      nKvHeads: 4,
      ropeTheta: 10000,
      ropeLayout: 'half',
      tiedEmbeddings: false,
      bosId: 1,
      eosId: 2,
      eosIds: [2, 3]
    })
    expect(parseHfConfig({ ...base, tessera_rope_layout: 'interleaved' }).ropeLayout).toBe('interleaved')
  })
  it('maps head_dim, llama3 rope_scaling and qwen2 biases (see families.test.ts for them end to end)', () => {
    expect(parseHfConfig({ ...base, head_dim: 32 }).headDim).toBe(32)
    // A head_dim that merely restates hidden_size / heads leaves the config as it always was.
    expect(parseHfConfig({ ...base, head_dim: 16 })).toEqual(parseHfConfig(base))
    const scaling = { factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 }
    const want = { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 }
    expect(parseHfConfig({ ...base, rope_scaling: { rope_type: 'llama3', ...scaling } }).ropeScaling).toEqual(want)
    expect(parseHfConfig({ ...base, rope_scaling: { type: 'llama3', ...scaling } }).ropeScaling).toEqual(want)
    expect(parseHfConfig({ ...base, rope_scaling: null }).ropeScaling).toBeUndefined()
    // transformers v5 folds the base and the scaling into rope_parameters.
    const v5 = parseHfConfig({ ...base, rope_parameters: { rope_type: 'llama3', rope_theta: 500000, ...scaling } })
    expect(v5).toMatchObject({ ropeTheta: 500000, ropeScaling: want })
    const plain = parseHfConfig({ ...base, rope_parameters: { rope_type: 'default', rope_theta: 1e6 } })
    expect(plain.ropeTheta).toBe(1e6)
    expect(plain.ropeScaling).toBeUndefined()
    expect(parseHfConfig({ ...base, architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2' }).qkvBias).toBe(true)
    expect(parseHfConfig(base).qkvBias).toBeUndefined()
  })
  it('tiny-llama3 is a valid Llama 3.1-shaped preset', () => {
    const c = checkConfig(preset('tiny-llama3'))
    expect(c).toMatchObject({ vocabSize: 128256, ropeTheta: 500000, ropeLayout: 'half', bosId: 128000, eosIds: [128001, 128008, 128009] })
    expect(c.ropeScaling).toEqual({ type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 })
    // preset() hands out copies: editing one leaves the preset as it was.
    c.ropeScaling!.factor = 2
    expect(preset('tiny-llama3').ropeScaling?.factor).toBe(8)
  })
  it('rejects what the Llama graph cannot compute', () => {
    expect(() => parseHfConfig({ ...base, architectures: ['GemmaForCausalLM'], model_type: 'gemma' })).toThrow(ConfigError)
    expect(() => parseHfConfig({ ...base, attention_bias: true })).toThrow(/biases/)
    expect(() => parseHfConfig({ ...base, rope_scaling: { rope_type: 'llama3', factor: 8 } })).toThrow(/needs a number low_freq_factor/)
    expect(() => parseHfConfig({ ...base, rope_scaling: { rope_type: 'yarn', factor: 4 } })).toThrow(/"yarn" is not supported/)
  })
})

describe('HF directories end to end', () => {
  const tiny = preset('tiny')

  // Untied: with a tied classifier random models just repeat the last token, which proves little.
  const untied: LlamaConfig = { ...tiny, tiedEmbeddings: false }

  it('llama2.c, permuted HF and interleaved-escape HF dirs generate the same ids', async () => {
    const w = randomWeights(untied, 11)
    const l2c = await openLlama2c(memoryBlobs({ 'm.bin': await writeLlama2c(w) }), 'm.bin')
    const permuted = await openHfDir(memoryBlobs(await writeHfDir(w, { dtype: 'F32', permute: true })))
    const escaped = await openHfDir(memoryBlobs(await writeHfDir(w, { dtype: 'F32', permute: false })))
    expect(permuted.config.ropeLayout).toBe('half')
    expect(escaped.config.ropeLayout).toBe('interleaved')
    // The permuted dir really holds other rows (else this test would prove nothing).
    const wk = await w.tensor('layers.0.wk')
    expect(await permuted.tensor('layers.0.wk')).not.toEqual(wk)
    expect(await permuted.tensor('layers.0.wk')).toEqual(permuteToHalf(wk, tiny.nKvHeads, tiny.dim / tiny.nHeads, tiny.dim))
    const ref = await run(l2c)
    expect(new Set(ref.ids).size).toBeGreaterThan(8)
    for (const other of [await run(permuted), await run(escaped)]) {
      expect(other.ids).toEqual(ref.ids)
      expect(maxDiff(other.logits, ref.logits)).toBeLessThan(1e-4)
    }
    // Control: the same unpermuted rows without the escape key are rotated wrongly.
    const files = await writeHfDir(w, { dtype: 'F32', permute: false })
    files['config.json'] = text({ ...JSON.parse(new TextDecoder().decode(files['config.json'])), tessera_rope_layout: undefined })
    expect(maxDiff((await run(await openHfDir(memoryBlobs(files)))).logits, ref.logits)).toBeGreaterThan(0.1)
  })

  it('a bf16 HF dir (tied classifier) matches llama2.c weights rounded to bf16', async () => {
    const w = randomWeights(tiny, 12)
    const rounded: WeightSource = { config: tiny, tensor: async (n) => fromBfloat16(toBfloat16(await w.tensor(n))) }
    const l2c = await openLlama2c(memoryBlobs({ 'm.bin': await writeLlama2c(rounded) }), 'm.bin')
    const files = await writeHfDir(w, { dtype: 'BF16', permute: true })
    const bf = await openHfDir(memoryBlobs(files))
    expect((await readSafetensorsHeader(memoryBlobs(files), 'model.safetensors')).tensors.get('model.norm.weight')?.dtype).toBe('BF16')
    const [a, b] = [await run(l2c), await run(bf)]
    expect(b.ids).toEqual(a.ids)
    expect(maxDiff(b.logits, a.logits)).toBeLessThan(1e-4)
  })

  it('a 2-file sharded dir (untied lm_head) matches the single-file one', async () => {
    const w = randomWeights(untied, 13)
    const files = await writeHfDir(w, { dtype: 'F32', permute: true, shards: 2 })
    expect(Object.keys(files).sort()).toEqual([
      'config.json',
      'model-00001-of-00002.safetensors',
      'model-00002-of-00002.safetensors',
      'model.safetensors.index.json'
    ])
    const sharded = await openHfDir(memoryBlobs(files))
    expect(sharded.config.tiedEmbeddings).toBe(false)
    const single = await openHfDir(memoryBlobs(await writeHfDir(w, { dtype: 'F32', permute: true })))
    const [a, b] = [await run(single), await run(sharded)]
    expect(b.ids).toEqual(a.ids)
    expect(maxDiff(b.logits, a.logits)).toBeLessThan(1e-4)
  })

  it('rejects a checkpoint whose tensor shapes do not match config.json', async () => {
    const files = await writeHfDir(randomWeights(tiny, 1), { dtype: 'F16', permute: true })
    const cfg = JSON.parse(new TextDecoder().decode(files['config.json']))
    files['config.json'] = text({ ...cfg, intermediate_size: 160 })
    await expect(openHfDir(memoryBlobs(files))).rejects.toThrow(/gate_proj\.weight has shape \[176, 64\] but config.json implies \[160, 64\]/)
  })

  it('opening reads only headers, and building the last of 2 shards reads only its layers', async () => {
    const deep: LlamaConfig = { ...tiny, nLayers: 8 }
    const files = await writeHfDir(randomWeights(deep, 14), { dtype: 'F32', permute: true })
    const total = files['model.safetensors'].byteLength
    const headerBytes = 8 + Number(new DataView(files['model.safetensors'].buffer).getBigUint64(0, true))
    const src = counting(memoryBlobs(files))
    const w = await openHfDir(src)
    expect(src.bytes).toBe(headerBytes)
    const dir = await mkdtemp(join(tmpdir(), 'tessera-hf-lazy-'))
    try {
      await buildModel(w, dir, { source: 'lazy', cuts: [6], only: [1] })
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
    // Layers 6–7, the final norm and the (tied) classifier: about 31% of the file.
    const perLayer = (deep.dim * deep.dim * 2 + deep.dim * (deep.dim / 2) * 2 + deep.dim * deep.hiddenDim * 3 + deep.dim * 2) * 4
    const needed = 2 * perLayer + deep.dim * 4 + deep.vocabSize * deep.dim * 4
    expect(src.bytes - headerBytes).toBe(needed)
    expect(src.bytes).toBeLessThan(total * 0.4)
  })
})

/** GPT-2's byte → printable-character table, as byte-level BPE vocabularies use. */
function byteChars(): string[] {
  const bs: number[] = []
  for (let b = 33; b <= 126; b++) bs.push(b)
  for (let b = 161; b <= 172; b++) bs.push(b)
  for (let b = 174; b <= 255; b++) bs.push(b)
  const out: string[] = new Array(256)
  let n = 0
  for (let b = 0; b < 256; b++) out[b] = String.fromCodePoint(bs.includes(b) ? b : 256 + n++)
  return out
}

function byteLevelBpe(template: boolean): object {
  const vocab: Record<string, number> = {}
  byteChars().forEach((c, i) => {
    vocab[c] = i
  })
  const merges = ['h e', 'l l', 'he ll', 'hell o', 'Ġ w', 'o r', 'Ġw or']
  for (const m of merges) vocab[m.replace(' ', '')] = Object.keys(vocab).length
  const special = (content: string, id: number): object => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })
  const bos = Object.keys(vocab).length
  return {
    version: '1.0',
    added_tokens: [special('<s>', bos), special('</s>', bos + 1)],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: template
      ? {
          type: 'TemplateProcessing',
          single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
          pair: [],
          special_tokens: { '<s>': { id: '<s>', ids: [bos], tokens: ['<s>'] } }
        }
      : { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges
    }
  }
}

describe('tokenizer', () => {
  const config = { bos_token: '<s>', eos_token: { content: '</s>' }, clean_up_tokenization_spaces: false }

  it('encodes with merges and round-trips text, BOS per the post-processor', () => {
    const t = loadTokenizer(JSON.stringify(byteLevelBpe(true)), config)
    expect(t.bosId).toBe(263)
    expect(t.eosId).toBe(264)
    const ids = t.encode('hello world')
    expect(ids[0]).toBe(t.bosId)
    expect(ids.slice(1, 2)).toEqual([259]) // "hello" is one merged token
    for (const s of ['hello world', 'héllo, wörld ✓ 123', '']) expect(t.decode(t.encode(s))).toBe(s)
    expect(t.decode(ids, { keepSpecial: true })).toBe('<s>hello world')
    expect(loadTokenizer(byteLevelBpe(true), config, { addBos: false }).encode('hello')).toEqual([259])
  })

  it('addBos adds BOS where the post-processor does not', () => {
    const plain = loadTokenizer(byteLevelBpe(false), config)
    expect(plain.encode('hello')).toEqual([259])
    expect(loadTokenizer(byteLevelBpe(false), config, { addBos: true }).encode('hello')).toEqual([263, 259])
  })
})
