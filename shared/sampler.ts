import { mulberry32 } from './rng.js'
import { InputError } from './errors.js'

export interface SamplingOptions {
  /** 0 = greedy (argmax, lowest id on ties, as llama2.c). */
  temperature?: number
  /** Nucleus sampling: keep the smallest set of tokens whose probability reaches topP. */
  topP?: number
  /** Seed for reproducible sampling. */
  seed?: number
}

export type Sampler = (logits: Float32Array) => number

export function argmax(logits: Float32Array): number {
  let best = 0
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i
  return best
}

export function createSampler({ temperature = 0, topP = 1, seed = 0 }: SamplingOptions = {}): Sampler {
  if (!(temperature >= 0)) throw new InputError(`temperature must be ≥ 0, got ${temperature}`)
  if (!(topP > 0 && topP <= 1)) throw new InputError(`top-p must be in (0, 1], got ${topP}`)
  if (temperature === 0) return argmax
  const rand = mulberry32(seed)
  return (logits) => {
    let max = -Infinity
    for (const v of logits) max = Math.max(max, v)
    const probs = new Float64Array(logits.length)
    let sum = 0
    for (let i = 0; i < logits.length; i++) {
      probs[i] = Math.exp((logits[i] - max) / temperature)
      sum += probs[i]
    }
    const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a])
    let kept = 0
    let mass = 0
    while (kept < order.length && mass < topP * sum) mass += probs[order[kept++]]
    let r = rand() * mass
    for (let i = 0; i < kept; i++) {
      r -= probs[order[i]]
      if (r <= 0) return order[i]
    }
    return order[kept - 1]
  }
}
