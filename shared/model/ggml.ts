import { ModelFormatError } from '../errors.js'
import { fromBfloat16, fromHalfBits } from './dtype.js'

/**
 * ggml's tensor element types (the numbering of ggml.h's enum ggml_type, as GGUF stores it)
 * and decoders for the block formats an importer meets in Llama-family GGUF files. Each
 * quantized type packs a fixed block of values with its own scale(s) (ggml-common.h's
 * block_* structs); decoding follows ggml-quants.c's dequantize_row_* exactly.
 *
 * Exactness: the products ggml forms in fp32 (an fp16 scale times small integers) are exact in
 * fp32 except Q6_K's last, which C rounds once and fp64 holds exactly until the Float32Array
 * store rounds it once; so results are bit-identical to ggml's. (Q4_K's final subtraction is
 * exact in fp64 unless d and dmin are over 2^32 apart, where double rounding could in theory
 * move a tie by one ulp; real files never come near.)
 */
export const GGML_TYPE_NAMES: Readonly<Record<number, string>> = {
  0: 'F32',
  1: 'F16',
  2: 'Q4_0',
  3: 'Q4_1',
  6: 'Q5_0',
  7: 'Q5_1',
  8: 'Q8_0',
  9: 'Q8_1',
  10: 'Q2_K',
  11: 'Q3_K',
  12: 'Q4_K',
  13: 'Q5_K',
  14: 'Q6_K',
  15: 'Q8_K',
  16: 'IQ2_XXS',
  17: 'IQ2_XS',
  18: 'IQ3_XXS',
  19: 'IQ1_S',
  20: 'IQ4_NL',
  21: 'IQ3_S',
  22: 'IQ2_S',
  23: 'IQ4_XS',
  24: 'I8',
  25: 'I16',
  26: 'I32',
  27: 'I64',
  28: 'F64',
  29: 'IQ1_M',
  30: 'BF16',
  34: 'TQ1_0',
  35: 'TQ2_0',
  39: 'MXFP4'
}

/** The types this importer decodes. */
export type GgmlType = 'F32' | 'F16' | 'BF16' | 'Q8_0' | 'Q4_0' | 'Q4_K' | 'Q6_K'

/** Values per block and bytes per block of each supported type (ggml-common.h). */
export const GGML_TYPES: Readonly<Record<GgmlType, { id: number; block: number; bytes: number }>> = {
  F32: { id: 0, block: 1, bytes: 4 },
  F16: { id: 1, block: 1, bytes: 2 },
  BF16: { id: 30, block: 1, bytes: 2 },
  Q8_0: { id: 8, block: 32, bytes: 2 + 32 }, // d, qs[32]
  Q4_0: { id: 2, block: 32, bytes: 2 + 16 }, // d, qs[16]
  Q4_K: { id: 12, block: 256, bytes: 2 + 2 + 12 + 128 }, // d, dmin, scales[12], qs[128]
  Q6_K: { id: 14, block: 256, bytes: 128 + 64 + 16 + 2 } // ql[128], qh[64], scales[16], d
}

export const SUPPORTED_GGML_TYPES = Object.keys(GGML_TYPES).join(', ')

/** The name of type id `id` ("type 99" for one ggml does not know either). */
export const ggmlTypeName = (id: number): string => GGML_TYPE_NAMES[id] ?? `type ${id}`

/** The supported type with ggml id `id`, or undefined. */
export const ggmlType = (id: number): GgmlType | undefined => (Object.keys(GGML_TYPES) as GgmlType[]).find((t) => GGML_TYPES[t].id === id)

/** Bytes that `n` values of `type` take; throws when n is not whole blocks. */
export function ggmlBytes(type: GgmlType, n: number): number {
  const { block, bytes } = GGML_TYPES[type]
  if (n % block !== 0) throw new ModelFormatError(`${n} values of ${type} are not whole blocks of ${block}`)
  return (n / block) * bytes
}

/** Decodes `n` values of `type` from `data` into fp32. */
export function dequantize(type: GgmlType, data: Uint8Array, n: number): Float32Array {
  const need = ggmlBytes(type, n)
  if (data.byteLength < need) throw new ModelFormatError(`${n} values of ${type} need ${need} bytes, got ${data.byteLength}`)
  switch (type) {
    case 'F32':
      // A copy: the source bytes may be unaligned for a Float32Array view.
      return new Float32Array(data.slice(0, need).buffer)
    case 'F16':
      return decodeF16(data, n)
    case 'BF16':
      return fromBfloat16(new Uint16Array(data.slice(0, need).buffer))
    case 'Q8_0':
      return decodeQ8_0(data, n)
    case 'Q4_0':
      return decodeQ4_0(data, n)
    case 'Q4_K':
      return decodeQ4_K(data, n)
    case 'Q6_K':
      return decodeQ6_K(data, n)
  }
}

const half = (d: Uint8Array, at: number): number => fromHalfBits(d[at] | (d[at + 1] << 8))

function decodeF16(data: Uint8Array, n: number): Float32Array {
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) out[i] = half(data, 2 * i)
  return out
}

/** Q8_0: per 32 values an fp16 scale d and 32 int8 q; x = q·d. */
export function decodeQ8_0(data: Uint8Array, n: number): Float32Array {
  const out = new Float32Array(n)
  for (let b = 0, at = 0; b < n / 32; b++, at += 34) {
    const d = half(data, at)
    for (let j = 0; j < 32; j++) out[b * 32 + j] = ((data[at + 2 + j] << 24) >> 24) * d
  }
  return out
}

/** Q4_0: per 32 values an fp16 scale d and 16 bytes; byte j holds value j (low nibble) and j+16 (high); x = (q − 8)·d. */
export function decodeQ4_0(data: Uint8Array, n: number): Float32Array {
  const out = new Float32Array(n)
  for (let b = 0, at = 0; b < n / 32; b++, at += 18) {
    const d = half(data, at)
    for (let j = 0; j < 16; j++) {
      const q = data[at + 2 + j]
      out[b * 32 + j] = ((q & 0xf) - 8) * d
      out[b * 32 + j + 16] = ((q >> 4) - 8) * d
    }
  }
  return out
}

/**
 * Q4_K's 12 scale bytes hold eight 6-bit scales and eight 6-bit mins: sub-blocks 0–3 in the low
 * 6 bits of bytes 0–3 (scales) and 4–7 (mins); sub-blocks 4–7 have their low 4 bits in bytes
 * 8–11 (scale low nibble, min high nibble) and their top 2 bits in the top bits of bytes 0–7.
 */
export function q4kScaleMin(scales: Uint8Array, j: number): [number, number] {
  if (j < 4) return [scales[j] & 63, scales[j + 4] & 63]
  return [(scales[j + 4] & 0xf) | ((scales[j - 4] >> 6) << 4), (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4)]
}

/**
 * Q4_K: super-blocks of 256 = 8 sub-blocks of 32. fp16 d and dmin, 12 bytes of 6-bit scales and
 * mins, 128 bytes of nibbles: each 32-byte run holds sub-block 2i in its low nibbles and 2i+1 in
 * its high ones; x = d·scale·q − dmin·min.
 */
export function decodeQ4_K(data: Uint8Array, n: number): Float32Array {
  const out = new Float32Array(n)
  for (let b = 0, at = 0; b < n / 256; b++, at += 144) {
    const d = half(data, at)
    const dmin = half(data, at + 2)
    const scales = data.subarray(at + 4, at + 16)
    const qs = at + 16
    for (let run = 0; run < 4; run++) {
      const [s1, m1] = q4kScaleMin(scales, 2 * run)
      const [s2, m2] = q4kScaleMin(scales, 2 * run + 1)
      const d1 = d * s1
      const d2 = d * s2
      const base = b * 256 + run * 64
      for (let l = 0; l < 32; l++) {
        const q = data[qs + run * 32 + l]
        out[base + l] = d1 * (q & 0xf) - dmin * m1
        out[base + 32 + l] = d2 * (q >> 4) - dmin * m2
      }
    }
  }
  return out
}

/**
 * Q6_K: super-blocks of 256 = 16 sub-blocks of 16, each with an int8 scale, and an fp16 d. A
 * 6-bit q is 4 low bits from ql and 2 high bits from qh; in each half (128 values) value
 * l + 32k (k = 0..3, l < 32) takes ql[l + 32(k&1)]'s low (k < 2) or high nibble and bits 2k..2k+1
 * of qh[l]; x = d·scale·(q − 32).
 */
export function decodeQ6_K(data: Uint8Array, n: number): Float32Array {
  const out = new Float32Array(n)
  for (let b = 0, at = 0; b < n / 256; b++, at += 210) {
    const d = half(data, at + 208)
    for (let h = 0; h < 2; h++) {
      const ql = at + h * 64
      const qh = at + 128 + h * 32
      const sc = at + 192 + h * 8
      const base = b * 256 + h * 128
      for (let l = 0; l < 32; l++) {
        const hi = data[qh + l]
        const lo0 = data[ql + l]
        const lo1 = data[ql + l + 32]
        const s = sc + (l >> 4)
        const scale = (k: number): number => d * ((data[s + 2 * k] << 24) >> 24)
        out[base + l] = scale(0) * (((lo0 & 0xf) | ((hi & 3) << 4)) - 32)
        out[base + l + 32] = scale(1) * (((lo1 & 0xf) | (((hi >> 2) & 3) << 4)) - 32)
        out[base + l + 64] = scale(2) * (((lo0 >> 4) | (((hi >> 4) & 3) << 4)) - 32)
        out[base + l + 96] = scale(3) * (((lo1 >> 4) | (((hi >> 6) & 3) << 4)) - 32)
      }
    }
  }
  return out
}
