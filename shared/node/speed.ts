/**
 * Self-measured decode speed: what a node advertises as msPerLayer (one token through one
 * transformer block), timed on the shards it actually loaded.
 */
import type { HopInput, ShardRunner, ShardSession } from '../runner.js'
import { InputError } from '../errors.js'
import { fillNormal, mulberry32 } from '../rng.js'

export interface SpeedOptions {
  /** Timed single-token decode steps (after one untimed warm-up). Default 8. */
  steps?: number
  /** Tokens prefilled first, so attention reads a realistic KV cache. Default 32. */
  context?: number
  /** The model's hidden size: needed when the chain does not start at layer 0. */
  dim?: number
  /** Token ids fed to a first shard stay below this. Default 256, which every real vocabulary exceeds. */
  vocabSize?: number
}

/**
 * Median milliseconds of one decode step through `runners` (a contiguous chain, in order),
 * divided by `nLayers`, the number of layers the chain covers. A chain starting past layer 0
 * is fed random hidden states of width `dim`.
 */
export async function measureMsPerLayer(runners: ShardRunner[], nLayers: number, opts: SpeedOptions = {}): Promise<number> {
  const steps = opts.steps ?? 8
  const context = opts.context ?? 32
  if (runners.length === 0) throw new InputError('measureMsPerLayer needs at least one shard')
  if (!Number.isInteger(steps) || steps < 1 || !Number.isInteger(context) || context < 1) throw new InputError('steps and context must be integers ≥ 1')
  for (let i = 1; i < runners.length; i++) {
    const [prev, next] = [runners[i - 1].shard, runners[i].shard]
    if (next.layers[0] !== prev.layers[1]) throw new InputError(`shards ${prev.index} and ${next.index} are not contiguous`)
  }
  const start = runners[0].shard.layers[0]
  const covered = runners[runners.length - 1].shard.layers[1] - start
  // Catches a caller passing the model's layer count for a partial chain (a silently wrong speed).
  if (nLayers !== covered) throw new InputError(`the chain covers ${covered} layers, not ${nLayers}`)
  if (start !== 0 && (opts.dim === undefined || opts.dim < 1)) {
    throw new InputError(`the chain starts at layer ${start}: give the model's dim to feed it hidden states`)
  }

  const rand = mulberry32(0x5eed)
  const bound = Math.max(1, opts.vocabSize ?? 256)
  const input = (seq: number): HopInput => {
    if (start === 0) return { tokens: Array.from({ length: seq }, () => Math.floor(rand() * bound)) }
    return { hidden: fillNormal(new Float32Array(seq * opts.dim!), rand, 1), seq }
  }

  const sessions: ShardSession[] = []
  try {
    for (const r of runners) sessions.push(r.open())
    const step = async (seq: number): Promise<number> => {
      const first = input(seq) // built before the clock starts
      const t0 = performance.now()
      let out = await sessions[0].forward(first)
      for (const s of sessions.slice(1)) out = await s.forward({ hidden: out.data, seq: out.seq })
      return performance.now() - t0
    }
    await step(context)
    await step(1) // warm-up: first decode-shaped run (allocations, kernel choice)
    const times: number[] = []
    for (let i = 0; i < steps; i++) times.push(await step(1))
    return median(times) / covered
  } finally {
    for (const s of sessions) s.close()
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2
}
