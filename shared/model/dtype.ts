/** Conversions between fp32 and the 16-bit float formats checkpoints use. */

const f32 = new Float32Array(1)
const u32 = new Uint32Array(f32.buffer)

/** fp32 → IEEE half, round to nearest even; overflow → ±inf, NaN kept. */
export function toHalfBits(v: number): number {
  f32[0] = v
  const x = u32[0]
  const sign = (x >>> 16) & 0x8000
  const exp = (x >>> 23) & 0xff
  let mant = x & 0x7fffff
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0)
  let e = exp - 127 + 15
  if (e >= 0x1f) return sign | 0x7c00
  if (e <= 0) {
    if (e < -10) return sign
    mant |= 0x800000
    const shift = 14 - e
    const half = 1 << (shift - 1)
    let m = mant >>> shift
    const rest = mant & ((1 << shift) - 1)
    if (rest > half || (rest === half && (m & 1) === 1)) m++
    return sign | m
  }
  let m = mant >>> 13
  const rest = mant & 0x1fff
  if (rest > 0x1000 || (rest === 0x1000 && (m & 1) === 1)) {
    m++
    if (m === 0x400) {
      m = 0
      e++
    }
    if (e >= 0x1f) return sign | 0x7c00
  }
  return sign | (e << 10) | m
}

export function fromHalfBits(h: number): number {
  const sign = (h & 0x8000) !== 0 ? -1 : 1
  const exp = (h >>> 10) & 0x1f
  const mant = h & 0x3ff
  if (exp === 0) return sign * mant * 2 ** -24
  if (exp === 0x1f) return mant !== 0 ? NaN : sign * Infinity
  return sign * (1 + mant / 1024) * 2 ** (exp - 15)
}

export function toFloat16(src: Float32Array): Uint16Array {
  const out = new Uint16Array(src.length)
  for (let i = 0; i < src.length; i++) out[i] = toHalfBits(src[i])
  return out
}

export function fromFloat16(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length)
  for (let i = 0; i < src.length; i++) out[i] = fromHalfBits(src[i])
  return out
}

/** bf16 is the top half of an fp32: widening is a shift. */
export function fromBfloat16(src: Uint16Array): Float32Array {
  const out = new Uint32Array(src.length)
  for (let i = 0; i < src.length; i++) out[i] = src[i] << 16
  return new Float32Array(out.buffer)
}

/** fp32 → bf16, round to nearest even (as PyTorch does). */
export function toBfloat16(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length)
  const out = new Uint16Array(src.length)
  for (let i = 0; i < src.length; i++) {
    const x = bits[i]
    if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) {
      out[i] = (x >>> 16) | 0x40
      continue
    }
    out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16
  }
  return out
}
