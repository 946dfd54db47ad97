/**
 * 4-bit block quantization in the layout of onnxruntime's MatMulNBits (com.microsoft):
 * a weight W [N, K] (out, in) is cut along K into blocks of `blockSize`; each block stores
 * 4-bit codes q with its own scale s and zero point z, and w ≈ (q - z) · s.
 *
 *   packed      uint8 [N, nBlocks, blockSize/2]   two codes per byte, low nibble first
 *   scales      fp32  [N * nBlocks]
 *   zeroPoints  uint8 [N * ceil(nBlocks/2)]        two per byte, low nibble first, per row
 *
 * Asymmetric blocks whose range always includes 0 (zeros stay exact), clipped where that
 * lowers the block's squared error (round-to-nearest with an MSE range search).
 */
export interface Int4Weight {
  n: number
  k: number
  blockSize: number
  packed: Uint8Array
  scales: Float32Array
  zeroPoints: Uint8Array
}

export function quantizeInt4(w: Float32Array, n: number, k: number, blockSize = 32): Int4Weight {
  const nBlocks = Math.ceil(k / blockSize)
  const blockBytes = blockSize / 2
  const zpRow = Math.ceil(nBlocks / 2)
  const packed = new Uint8Array(n * nBlocks * blockBytes)
  const scales = new Float32Array(n * nBlocks)
  const zeroPoints = new Uint8Array(n * zpRow)
  for (let row = 0; row < n; row++) {
    for (let b = 0; b < nBlocks; b++) {
      const start = row * k + b * blockSize
      const end = row * k + Math.min((b + 1) * blockSize, k)
      const [scale, zp] = blockRange(w, start, end)
      scales[row * nBlocks + b] = scale
      zeroPoints[row * zpRow + (b >> 1)] |= zp << ((b & 1) * 4)
      const base = (row * nBlocks + b) * blockBytes
      for (let j = 0; j < blockSize; j++) {
        const i = start + j
        const q = i < end ? Math.min(15, Math.max(0, Math.round(w[i] / scale) + zp)) : zp
        packed[base + (j >> 1)] |= q << ((j & 1) * 4)
      }
    }
  }
  return { n, k, blockSize, packed, scales, zeroPoints }
}

/** The fp32 weight an Int4Weight stands for (for tests and error measurement). */
export function dequantizeInt4(q: Int4Weight): Float32Array {
  const { n, k, blockSize } = q
  const nBlocks = Math.ceil(k / blockSize)
  const zpRow = Math.ceil(nBlocks / 2)
  const out = new Float32Array(n * k)
  for (let row = 0; row < n; row++) {
    for (let i = 0; i < k; i++) {
      const b = Math.floor(i / blockSize)
      const j = i % blockSize
      const code = (q.packed[(row * nBlocks + b) * (blockSize / 2) + (j >> 1)] >> ((j & 1) * 4)) & 15
      const zp = (q.zeroPoints[row * zpRow + (b >> 1)] >> ((b & 1) * 4)) & 15
      out[row * k + i] = (code - zp) * q.scales[row * nBlocks + b]
    }
  }
  return out
}

/** Shrink factors tried for each block's range: clipping rare outliers often lowers the total error. */
const CLIP = [1, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6]

/** Scale and zero point of one block: the clipped min/max range with the least squared error. */
function blockRange(w: Float32Array, start: number, end: number): [number, number] {
  let lo = 0
  let hi = 0
  for (let i = start; i < end; i++) {
    lo = Math.min(lo, w[i])
    hi = Math.max(hi, w[i])
  }
  if (hi === lo) return [1, 0]
  let best: [number, number] = [1, 0]
  let bestErr = Infinity
  for (const f of CLIP) {
    const scale = ((hi - lo) * f) / 15
    const zp = Math.min(15, Math.max(0, Math.round((-lo * f) / scale)))
    let err = 0
    for (let i = start; i < end; i++) {
      const q = Math.min(15, Math.max(0, Math.round(w[i] / scale) + zp))
      err += ((q - zp) * scale - w[i]) ** 2
    }
    if (err < bestErr) {
      bestErr = err
      best = [scale, zp]
    }
  }
  return best
}
