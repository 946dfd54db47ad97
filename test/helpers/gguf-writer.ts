/**
 * A GGUF v3 writer for tests: metadata, tensor infos, data aligned to 32 bytes, from a
 * WeightSource, in F32, F16, BF16, Q8_0, Q4_0, Q4_K or Q6_K. The quantizers are written from
 * the block formats (ggml-common.h's structs), on the encoder side and independently of
 * shared/model/ggml.ts, so a test that decodes what they wrote checks the decoders against the
 * format rather than against themselves. Each quantizer also returns the values its bytes stand
 * for, computed from the integers it chose (not by unpacking bytes), and keeps its scales
 * rounded up so no value is clamped: the error bounds in gguf.test.ts follow from that.
 */
import { toBfloat16, toFloat16, toHalfBits, fromHalfBits } from '../../shared/model/dtype.js'
import { ggufTensorName } from '../../shared/model/gguf.js'
import { layerTensors, tensorShape, type TensorName, type WeightSource } from '../../shared/model/weights.js'

export type WriteType = 'F32' | 'F16' | 'BF16' | 'Q8_0' | 'Q4_0' | 'Q4_K' | 'Q6_K'

const TYPE_ID: Record<WriteType, number> = { F32: 0, F16: 1, BF16: 30, Q8_0: 8, Q4_0: 2, Q4_K: 12, Q6_K: 14 }

/** GGUF metadata value types (gguf.h's gguf_type). */
export const VT = { u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, i64: 11, f64: 12 } as const
type Scalar = Exclude<keyof typeof VT, 'array'>
export type MetaValue = { type: Scalar; value: number | string | boolean } | { type: 'array'; of: Scalar; value: Array<number | string | boolean> }

export const u32 = (value: number): MetaValue => ({ type: 'u32', value })
export const i32 = (value: number): MetaValue => ({ type: 'i32', value })
export const f32 = (value: number): MetaValue => ({ type: 'f32', value })
export const str = (value: string): MetaValue => ({ type: 'string', value })
export const bool = (value: boolean): MetaValue => ({ type: 'bool', value })
export const arr = (of: Scalar, value: Array<number | string | boolean>): MetaValue => ({ type: 'array', of, value })

export interface RawTensor {
  name: string
  /** [rows, cols] (or [n]): written innermost first, as ggml does. */
  shape: number[]
  typeId: number
  data: Uint8Array
}

/** fp16 of |v| rounded up (never below v), so a scale computed from it never makes a value overflow its integer range. */
function halfUp(v: number): number {
  let bits = toHalfBits(v)
  if (fromHalfBits(bits) < v) bits++
  return bits
}

export interface Encoded {
  bytes: Uint8Array
  /** The values the bytes stand for, from the chosen integers and scales. */
  values: Float32Array
}

/** Q8_0: blocks of 32: fp16 d = amax/127 (rounded up), int8 q = round(x/d). */
export function quantizeQ8_0(x: Float32Array): Encoded {
  const nb = x.length / 32
  const bytes = new Uint8Array(nb * 34)
  const values = new Float32Array(x.length)
  const dv = new DataView(bytes.buffer)
  for (let b = 0; b < nb; b++) {
    const block = x.subarray(b * 32, b * 32 + 32)
    const amax = block.reduce((m, v) => Math.max(m, Math.abs(v)), 0)
    const dBits = halfUp(amax / 127)
    const d = fromHalfBits(dBits)
    dv.setUint16(b * 34, dBits, true)
    for (let j = 0; j < 32; j++) {
      const q = d === 0 ? 0 : Math.round(block[j] / d) | 0 // | 0: no −0, which no int8 can hold
      dv.setInt8(b * 34 + 2 + j, q)
      values[b * 32 + j] = q * d
    }
  }
  return { bytes, values }
}

/** Q4_0: blocks of 32: d = (the value of largest magnitude)/−8, q = round(x/d) + 8 in 0..15; value j in byte j's low nibble, j+16 in its high. */
export function quantizeQ4_0(x: Float32Array): Encoded {
  const nb = x.length / 32
  const bytes = new Uint8Array(nb * 18)
  const values = new Float32Array(x.length)
  const dv = new DataView(bytes.buffer)
  for (let b = 0; b < nb; b++) {
    const block = x.subarray(b * 32, b * 32 + 32)
    let max = 0
    for (const v of block) if (Math.abs(v) > Math.abs(max)) max = v
    const mag = fromHalfBits(halfUp(Math.abs(max) / 8))
    const d = max > 0 ? -mag : mag
    dv.setUint16(b * 18, toHalfBits(d), true)
    const q = Array.from(block, (v) => (d === 0 ? 8 : Math.min(15, Math.max(0, Math.round(v / d) + 8))))
    for (let j = 0; j < 16; j++) bytes[b * 18 + 2 + j] = q[j] | (q[j + 16] << 4)
    for (let j = 0; j < 32; j++) values[b * 32 + j] = (q[j] - 8) * d
  }
  return { bytes, values }
}

/**
 * Q4_K: super-blocks of 256 = 8 sub-blocks of 32, x = d·sc·q − dmin·mn with q in 0..15 and 6-bit
 * sc, mn. Per sub-block mn covers the most negative value and sc the range above it; d and dmin
 * are the fp16 super-block scales of those (rounded up), sc rounded up too, so nothing clamps.
 */
export function quantizeQ4_K(x: Float32Array): Encoded {
  const nb = x.length / 256
  const bytes = new Uint8Array(nb * 144)
  const values = new Float32Array(x.length)
  const dv = new DataView(bytes.buffer)
  for (let b = 0; b < nb; b++) {
    const subs = Array.from({ length: 8 }, (_, j) => x.subarray(b * 256 + j * 32, b * 256 + j * 32 + 32))
    const lows = subs.map((s) => Math.min(0, ...s))
    const dminBits = halfUp(Math.max(...lows.map((l) => -l)) / 63)
    const dmin = fromHalfBits(dminBits)
    const mn = lows.map((l) => (dmin === 0 ? 0 : Math.ceil(-l / dmin)))
    const ranges = subs.map((s, j) => Math.max(...s) + dmin * mn[j])
    const dBits = halfUp(Math.max(...ranges) / (15 * 63))
    const d = fromHalfBits(dBits)
    const sc = ranges.map((r) => (d === 0 ? 0 : Math.min(63, Math.ceil(r / (15 * d)))))
    const at = b * 144
    dv.setUint16(at, dBits, true)
    dv.setUint16(at + 2, dminBits, true)
    for (let j = 0; j < 4; j++) {
      bytes[at + 4 + j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6)
      bytes[at + 8 + j] = (mn[j] & 63) | ((mn[j + 4] >> 4) << 6)
      bytes[at + 12 + j] = (sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4)
    }
    for (let j = 0; j < 8; j++) {
      const step = d * sc[j]
      const offset = dmin * mn[j]
      const q = Array.from(subs[j], (v) => (step === 0 ? 0 : Math.min(15, Math.max(0, Math.round((v + offset) / step)))))
      for (let l = 0; l < 32; l++) {
        values[b * 256 + j * 32 + l] = step * q[l] - offset
        // Sub-blocks 2r and 2r+1 share the 32 bytes of run r: low nibbles, then high.
        bytes[at + 16 + (j >> 1) * 32 + l] |= (j & 1) === 0 ? q[l] : q[l] << 4
      }
    }
  }
  return { bytes, values }
}

/**
 * Q6_K: super-blocks of 256 = 16 sub-blocks of 16, x = d·sc·q with q in −32..31 and int8 sc.
 * Layout: ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16], fp16 d. In each 128-value half,
 * value l + 32k (l < 32) keeps its low bits in ql[l + 32(k & 1)] (low nibble for k < 2, high
 * for k ≥ 2) and its high bits at bits 2k..2k+1 of qh[l].
 */
export function quantizeQ6_K(x: Float32Array): Encoded {
  const nb = x.length / 256
  const bytes = new Uint8Array(nb * 210)
  const values = new Float32Array(x.length)
  const dv = new DataView(bytes.buffer)
  for (let b = 0; b < nb; b++) {
    const steps = Array.from({ length: 16 }, (_, j) => x.subarray(b * 256 + j * 16, b * 256 + j * 16 + 16).reduce((m, v) => Math.max(m, Math.abs(v)), 0) / 31)
    const dBits = halfUp(Math.max(...steps) / 127)
    const d = fromHalfBits(dBits)
    const sc = steps.map((s) => (d === 0 ? 0 : Math.min(127, Math.ceil(s / d))))
    const at = b * 210
    const u = new Array<number>(256)
    for (let i = 0; i < 256; i++) {
      const step = d * sc[i >> 4]
      const q = step === 0 ? 0 : Math.min(31, Math.max(-32, Math.round(x[b * 256 + i] / step))) | 0
      values[b * 256 + i] = step * q
      u[i] = q + 32
    }
    for (let h = 0; h < 2; h++) {
      for (let l = 0; l < 32; l++) {
        const [u0, u1, u2, u3] = [0, 1, 2, 3].map((k) => u[h * 128 + l + 32 * k])
        bytes[at + h * 64 + l] = (u0 & 15) | ((u2 & 15) << 4)
        bytes[at + h * 64 + l + 32] = (u1 & 15) | ((u3 & 15) << 4)
        bytes[at + 128 + h * 32 + l] = (u0 >> 4) | ((u1 >> 4) << 2) | ((u2 >> 4) << 4) | ((u3 >> 4) << 6)
      }
    }
    for (let j = 0; j < 16; j++) dv.setInt8(at + 192 + j, sc[j])
    dv.setUint16(at + 208, dBits, true)
  }
  return { bytes, values }
}

const raw = (a: Float32Array | Uint16Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength).slice()

/** Encodes `x` as `type`; `values` is what a correct decoder must return. */
export function encodeTensor(x: Float32Array, type: WriteType): Encoded {
  switch (type) {
    case 'F32':
      return { bytes: raw(x), values: x.slice() }
    case 'F16': {
      const h = toFloat16(x)
      return { bytes: raw(h), values: Float32Array.from(h, fromHalfBits) }
    }
    case 'BF16': {
      const h = toBfloat16(x)
      return { bytes: raw(h), values: new Float32Array(Uint32Array.from(h, (v) => v << 16).buffer) }
    }
    case 'Q8_0':
      return quantizeQ8_0(x)
    case 'Q4_0':
      return quantizeQ4_0(x)
    case 'Q4_K':
      return quantizeQ4_K(x)
    case 'Q6_K':
      return quantizeQ6_K(x)
  }
}

/** The GGUF bytes of `meta` and `tensors` (alignment 32, data in the order given). */
export function writeGguf(meta: Record<string, MetaValue>, tensors: RawTensor[]): Uint8Array {
  const parts: Uint8Array[] = []
  const enc = new TextEncoder()
  const num = (type: Scalar, v: number | boolean): Uint8Array => {
    const b = new Uint8Array(
      type === 'u64' || type === 'i64' || type === 'f64' ? 8 : type === 'u32' || type === 'i32' || type === 'f32' ? 4 : type === 'u16' || type === 'i16' ? 2 : 1
    )
    const d = new DataView(b.buffer)
    const x = Number(v)
    if (type === 'u8' || type === 'bool') d.setUint8(0, x)
    else if (type === 'i8') d.setInt8(0, x)
    else if (type === 'u16') d.setUint16(0, x, true)
    else if (type === 'i16') d.setInt16(0, x, true)
    else if (type === 'u32') d.setUint32(0, x, true)
    else if (type === 'i32') d.setInt32(0, x, true)
    else if (type === 'f32') d.setFloat32(0, x, true)
    else if (type === 'u64') d.setBigUint64(0, BigInt(x), true)
    else if (type === 'i64') d.setBigInt64(0, BigInt(x), true)
    else d.setFloat64(0, x, true)
    return b
  }
  const string = (s: string): Uint8Array[] => {
    const b = enc.encode(s)
    return [num('u64', b.length), b]
  }
  const scalar = (type: Scalar, v: number | string | boolean): Uint8Array[] => (type === 'string' ? string(v as string) : [num(type, v as number)])
  parts.push(enc.encode('GGUF'), num('u32', 3), num('u64', tensors.length), num('u64', Object.keys(meta).length))
  for (const [key, m] of Object.entries(meta)) {
    parts.push(...string(key), num('u32', VT[m.type]))
    if (m.type === 'array') {
      parts.push(num('u32', VT[m.of]), num('u64', m.value.length))
      for (const v of m.value) parts.push(...scalar(m.of, v))
    } else parts.push(...scalar(m.type, m.value))
  }
  const pad = (n: number): number => Math.ceil(n / 32) * 32
  let offset = 0
  for (const t of tensors) {
    parts.push(...string(t.name), num('u32', t.shape.length))
    for (const d of [...t.shape].reverse()) parts.push(num('u64', d))
    parts.push(num('u32', t.typeId), num('u64', offset))
    offset = pad(offset + t.data.byteLength)
  }
  const headerBytes = parts.reduce((a, p) => a + p.byteLength, 0)
  const start = pad(headerBytes)
  const out = new Uint8Array(start + offset)
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.byteLength
  }
  at = start
  for (const t of tensors) {
    out.set(t.data, at)
    at = start + pad(at - start + t.data.byteLength)
  }
  return out
}

export interface FromWeightsOptions {
  arch: 'llama' | 'qwen2'
  /** The type of each 2-D tensor. */
  type: WriteType | ((name: TensorName) => WriteType)
  /** The type of norms and biases (default F32, as llama.cpp keeps them). */
  vectors?: 'F32' | 'F16' | 'BF16'
  /** More metadata (tokenizer.*, overrides). */
  meta?: Record<string, MetaValue>
  /** Extra tensors (rope_freqs.weight, …), written after the model's. */
  extra?: RawTensor[]
}

/**
 * `w` as a GGUF file, tensors as they are (a llama file holds Meta's interleaved q/k order, a
 * qwen2 file HF's half order: give a source in the layout its architecture stores). Returns
 * the bytes and, per tensor, the values a correct importer must read back.
 */
export async function ggufFromWeights(w: WeightSource, o: FromWeightsOptions): Promise<{ file: Uint8Array; values: Map<TensorName, Float32Array> }> {
  const c = w.config
  const a = o.arch
  const meta: Record<string, MetaValue> = {
    'general.architecture': str(a),
    'general.name': str(`test-${a}`),
    'general.alignment': u32(32),
    [`${a}.context_length`]: u32(c.maxSeqLen),
    [`${a}.embedding_length`]: u32(c.dim),
    [`${a}.block_count`]: u32(c.nLayers),
    [`${a}.feed_forward_length`]: u32(c.hiddenDim),
    [`${a}.attention.head_count`]: u32(c.nHeads),
    [`${a}.attention.head_count_kv`]: u32(c.nKvHeads),
    [`${a}.attention.layer_norm_rms_epsilon`]: f32(c.normEps),
    [`${a}.rope.freq_base`]: f32(c.ropeTheta),
    [`${a}.rope.dimension_count`]: u32(c.headDim ?? c.dim / c.nHeads),
    [`${a}.vocab_size`]: u32(c.vocabSize),
    ...(c.bosId !== undefined ? { 'tokenizer.ggml.bos_token_id': u32(c.bosId) } : {}),
    ...(c.eosId !== undefined ? { 'tokenizer.ggml.eos_token_id': u32(c.eosId) } : {}),
    ...o.meta
  }
  const names: TensorName[] = ['tok_embeddings']
  for (let l = 0; l < c.nLayers; l++) for (const t of layerTensors(c)) names.push(`layers.${l}.${t}`)
  names.push('norm')
  if (!c.tiedEmbeddings) names.push('output')
  const tensors: RawTensor[] = []
  const values = new Map<TensorName, Float32Array>()
  for (const n of names) {
    const shape = tensorShape(c, n)
    const type = shape.length === 1 ? (o.vectors ?? 'F32') : typeof o.type === 'function' ? o.type(n) : o.type
    const e = encodeTensor(await w.tensor(n), type)
    tensors.push({ name: ggufTensorName(n), shape, typeId: TYPE_ID[type], data: e.bytes })
    values.set(n, e.values)
  }
  return { file: writeGguf(meta, [...tensors, ...(o.extra ?? [])]), values }
}

export const F32_TENSOR = (name: string, data: Float32Array): RawTensor => ({ name, shape: [data.length], typeId: 0, data: raw(data) })
