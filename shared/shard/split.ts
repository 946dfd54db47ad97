import { ConfigError } from '../errors.js'

export interface SplitOptions {
  /** Cut into this many shards of (nearly) equal size. */
  shards?: number
  /** Or: this many layers per shard (the last may be shorter). */
  layersPerShard?: number
  /** Or: explicit boundaries, e.g. [1, 3] cuts 5 layers into [0,1) [1,3) [3,5). */
  cuts?: number[]
}

/** Layer ranges [start, end) covering 0..nLayers, in order. Default: one shard. */
export function splitLayers(nLayers: number, o: SplitOptions = {}): Array<[number, number]> {
  let cuts: number[]
  if (o.cuts !== undefined) {
    cuts = [...o.cuts]
  } else if (o.layersPerShard !== undefined) {
    const k = o.layersPerShard
    if (!Number.isInteger(k) || k < 1) throw new ConfigError(`layers per shard must be a positive integer, got ${k}`)
    cuts = []
    for (let c = k; c < nLayers; c += k) cuts.push(c)
  } else {
    const n = o.shards ?? 1
    if (!Number.isInteger(n) || n < 1 || n > nLayers) throw new ConfigError(`cannot cut ${nLayers} layers into ${n} shards`)
    cuts = Array.from({ length: n - 1 }, (_, i) => Math.round(((i + 1) * nLayers) / n))
  }
  const bounds = [0, ...cuts, nLayers]
  for (let i = 1; i < bounds.length; i++) {
    if (!Number.isInteger(bounds[i]) || bounds[i] <= bounds[i - 1])
      throw new ConfigError(`shard boundaries ${JSON.stringify(cuts)} must be increasing integers inside (0, ${nLayers})`)
  }
  return bounds.slice(1).map((end, i) => [bounds[i], end])
}
