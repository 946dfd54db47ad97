/**
 * Small seeded generators. Reproducible across Node and browsers, so a seed names the same
 * random model or the same sampled tokens everywhere.
 */

/** 32-bit FNV-1a of a string, to derive independent streams from (seed, name). */
export function hash32(s: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h
}

/** mulberry32: a fast 32-bit generator with good enough statistics for weights and sampling. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Fills `out` with N(0, std²) samples (Box–Muller). */
export function fillNormal(out: Float32Array, rand: () => number, std: number): Float32Array {
  for (let i = 0; i < out.length; i += 2) {
    const u = 1 - rand()
    const v = rand()
    const r = Math.sqrt(-2 * Math.log(u)) * std
    out[i] = r * Math.cos(2 * Math.PI * v)
    if (i + 1 < out.length) out[i + 1] = r * Math.sin(2 * Math.PI * v)
  }
  return out
}
