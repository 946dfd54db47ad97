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
    const { probs, order, kept, mass } = nucleus(logits, temperature, topP)
    let r = rand() * mass
    for (let i = 0; i < kept; i++) {
      r -= probs[order[i]]
      if (r <= 0) return order[i]
    }
    return order[kept - 1]
  }
}

/** exp((logits − max) / temperature), unnormalized, and their sum. */
function weights(logits: Float32Array, temperature: number): { probs: Float64Array; sum: number } {
  let max = -Infinity
  for (const v of logits) max = Math.max(max, v)
  const probs = new Float64Array(logits.length)
  let sum = 0
  for (let i = 0; i < logits.length; i++) {
    probs[i] = Math.exp((logits[i] - max) / temperature)
    sum += probs[i]
  }
  return { probs, sum }
}

/**
 * exp((logits − max) / temperature), unnormalized, and the top-p nucleus: the ids by falling
 * weight, how many of them it keeps and their total weight.
 */
function nucleus(logits: Float32Array, temperature: number, topP: number): { probs: Float64Array; order: number[]; kept: number; mass: number } {
  const { probs, sum } = weights(logits, temperature)
  const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a])
  let kept = 0
  let mass = 0
  while (kept < order.length && mass < topP * sum) mass += probs[order[kept++]]
  return { probs, order, kept, mass }
}

/**
 * The distribution createSampler draws from, as probabilities over the vocabulary:
 * softmax(logits / temperature), cut to the top-p nucleus, renormalized. What speculative
 * sampling compares (client/draft.ts); temperature must be above 0.
 */
export function samplingDistribution(logits: Float32Array, { temperature = 1, topP = 1 }: SamplingOptions = {}): Float64Array {
  // Without a nucleus nothing is cut: no sort of the vocabulary (it runs for every drafted token and every checked row).
  if (topP >= 1) {
    const { probs, sum } = weights(logits, temperature)
    for (let i = 0; i < probs.length; i++) probs[i] /= sum
    return probs
  }
  const { probs, order, kept, mass } = nucleus(logits, temperature, topP)
  for (let i = kept; i < order.length; i++) probs[order[i]] = 0
  for (let i = 0; i < probs.length; i++) probs[i] /= mass
  return probs
}

/** The id a uniform draw `r` in [0, 1) picks from `probs` (which sum to 1). */
export function drawFrom(probs: Float64Array, r: number): number {
  let last = 0
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] === 0) continue
    last = i
    r -= probs[i]
    if (r < 0) return i
  }
  return last // rounding left a sliver: the last id with any mass
}

/**
 * ln p of `id` and of the `n` likeliest ids under softmax(logits): the model's own distribution,
 * whatever temperature sampled from it (OpenAI's logprobs are the same). Ties go to the lower id.
 */
export function logprobsOf(logits: Float32Array, id: number, n: number): { logprob: number; top: Array<{ id: number; logprob: number }> } {
  let max = -Infinity
  for (const v of logits) max = Math.max(max, v)
  let sum = 0
  for (const v of logits) sum += Math.exp(v - max)
  const norm = max + Math.log(sum)
  // n is at most 20: keep a small sorted list instead of sorting the whole vocabulary.
  const top: number[] = []
  for (let i = 0; i < logits.length && n > 0; i++) {
    if (top.length === n && logits[i] <= logits[top[n - 1]]) continue
    let at = top.length
    while (at > 0 && logits[top[at - 1]] < logits[i]) at--
    top.splice(at, 0, i)
    if (top.length > n) top.pop()
  }
  return { logprob: logits[id] - norm, top: top.map((t) => ({ id: t, logprob: logits[t] - norm })) }
}
