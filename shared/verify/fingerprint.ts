/**
 * Fingerprints of a hop's output, in the spirit of TOPLOC: per token position, the k entries of
 * largest magnitude (their indices, and their values rounded to fp16). Small enough to sign
 * and send with every hop; stable under the honest float differences between CPU, WASM, WebGPU
 * and CUDA (summation order), but a different model, input or precision moves them.
 */
import { fromHalfBits, toHalfBits } from '../model/dtype.js'
import { ProtocolError } from '../errors.js'

export const FINGERPRINT_K = 16

export interface Fingerprint {
  k: number
  positions: number
  /** positions × k indices, each position's sorted by index. */
  idx: Uint32Array
  /** fp16 bits of the values at those indices. */
  val: Uint16Array
}

/** The top-k entries by magnitude of each row of `data` [seq, width]. */
export function fingerprint(data: Float32Array, seq: number, width: number, k = FINGERPRINT_K): Fingerprint {
  const kk = Math.min(k, width)
  const idx = new Uint32Array(seq * kk)
  const val = new Uint16Array(seq * kk)
  const top = new Int32Array(kk)
  for (let p = 0; p < seq; p++) {
    const row = data.subarray(p * width, (p + 1) * width)
    // A small insertion-sorted buffer: k ≪ width, one pass over the row.
    let n = 0
    for (let i = 0; i < width; i++) {
      const m = Math.abs(row[i])
      if (n === kk && m <= Math.abs(row[top[kk - 1]])) continue
      let j = n < kk ? n++ : kk - 1
      while (j > 0 && Math.abs(row[top[j - 1]]) < m) {
        top[j] = top[j - 1]
        j--
      }
      top[j] = i
    }
    const chosen = Array.from(top.subarray(0, kk)).sort((a, b) => a - b)
    chosen.forEach((i, j) => {
      idx[p * kk + j] = i
      val[p * kk + j] = toHalfBits(row[i])
    })
  }
  return { k: kk, positions: seq, idx, val }
}

export interface Comparison {
  /** Smallest share of top-k indices two fingerprints have in common at any position (1 = all). */
  minOverlap: number
  /** Largest relative difference of a shared entry's value, |a - b| / max(|a|, |b|, floor). */
  maxRelErr: number
  /** One number for reports: (1 - minOverlap) + maxRelErr. */
  distance: number
  verdict: 'match' | 'mismatch'
}

/**
 * Thresholds calibrated on honest runs across backends (README "Fingerprints"): honest pairs
 * stay far inside them, a changed model, input or precision far outside.
 */
export const THRESHOLDS = { minOverlap: 0.75, maxRelErr: 0.05, valueFloor: 1e-2 }

export function compareFingerprints(a: Fingerprint, b: Fingerprint, t = THRESHOLDS): Comparison {
  if (a.k !== b.k || a.positions !== b.positions) return { minOverlap: 0, maxRelErr: Infinity, distance: Infinity, verdict: 'mismatch' }
  let minOverlap = 1
  let maxRelErr = 0
  for (let p = 0; p < a.positions; p++) {
    let shared = 0
    let i = p * a.k
    let j = p * b.k
    const endA = i + a.k
    const endB = j + b.k
    while (i < endA && j < endB) {
      if (a.idx[i] === b.idx[j]) {
        const x = fromHalfBits(a.val[i])
        const y = fromHalfBits(b.val[j])
        maxRelErr = Math.max(maxRelErr, Math.abs(x - y) / Math.max(Math.abs(x), Math.abs(y), t.valueFloor))
        shared++
        i++
        j++
      } else if (a.idx[i] < b.idx[j]) i++
      else j++
    }
    minOverlap = Math.min(minOverlap, shared / a.k)
  }
  const verdict = minOverlap >= t.minOverlap && maxRelErr <= t.maxRelErr ? 'match' : 'mismatch'
  return { minOverlap, maxRelErr, distance: 1 - minOverlap + maxRelErr, verdict }
}

/** Bytes: k (u8), positions (u32), then idx (u32 each), then val (u16 each), little-endian. */
export function encodeFingerprint(f: Fingerprint): Uint8Array {
  const out = new Uint8Array(5 + f.idx.length * 6)
  const v = new DataView(out.buffer)
  v.setUint8(0, f.k)
  v.setUint32(1, f.positions, true)
  for (const [i, x] of f.idx.entries()) v.setUint32(5 + i * 4, x, true)
  const base = 5 + f.idx.length * 4
  for (const [i, x] of f.val.entries()) v.setUint16(base + i * 2, x, true)
  return out
}

export function decodeFingerprint(b: Uint8Array): Fingerprint {
  if (b.byteLength < 5) throw new ProtocolError('MALFORMED', 'fingerprint too short')
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength)
  const k = v.getUint8(0)
  const positions = v.getUint32(1, true)
  const n = k * positions
  if (b.byteLength !== 5 + n * 6) throw new ProtocolError('MALFORMED', `fingerprint of ${b.byteLength} bytes does not hold ${positions} × ${k} entries`)
  const idx = new Uint32Array(n)
  const val = new Uint16Array(n)
  for (let i = 0; i < n; i++) idx[i] = v.getUint32(5 + i * 4, true)
  for (let i = 0; i < n; i++) val[i] = v.getUint16(5 + n * 4 + i * 2, true)
  return { k, positions, idx, val }
}

/** The last `positions` rows of a fingerprint (a referee's replay covers the whole history). */
export function tailFingerprint(f: Fingerprint, positions: number): Fingerprint {
  if (positions >= f.positions) return f
  const from = (f.positions - positions) * f.k
  return { k: f.k, positions, idx: f.idx.slice(from), val: f.val.slice(from) }
}
