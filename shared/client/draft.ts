/**
 * Speculative decoding across the pipeline: a draft model next to the sampler guesses the next
 * few tokens, the whole route checks them in one pass (a step of γ + 1 rows), and the longest
 * prefix the target agrees with is kept, plus the target's own next token. Greedy output is
 * token-identical to plain decoding whatever the draft; a good draft only makes it faster, since
 * one pass of round trips then yields several tokens (Leviathan et al. 2023). Sampling, the
 * speculative-sampling rule (acceptSampled) keeps the target's distribution exactly; γ adapts to
 * the acceptance rate seen so far (chooseGamma).
 */
import { InputError } from '../errors.js'
import type { ShardRunner } from '../runner.js'
import { argmax, drawFrom } from '../sampler.js'
import { lastRow, Pipeline } from '../pipeline.js'

/**
 * A draft model: the `n` tokens it would generate after `context` (the prompt and the tokens so
 * far), each chosen by `pick` from its logits (greedy without one). Sampling, the client's pick
 * records the distribution each token was drawn from; a draft that ignores `pick` is taken to
 * have chosen each token for certain.
 */
export interface Draft {
  propose(context: number[], n: number, pick?: (logits: Float32Array) => number): Promise<number[]>
}

export interface Speculation {
  /** Tokens drafted per pass (γ), at most. */
  gamma: number
  /** Choose each pass's γ (1 to `gamma`) from the acceptance rate and timings seen so far (default true). */
  adapt?: boolean
}

/** Refuses what speculation cannot do yet, before anything is dialled. */
export function checkSpeculation(s: Speculation, o: { draft: Draft | undefined; optimistic: boolean; proveSampling: boolean }): void {
  if (!Number.isInteger(s.gamma) || s.gamma < 1 || s.gamma > 16) throw new InputError(`speculate.gamma must be an integer from 1 to 16, not ${s.gamma}`)
  if (s.adapt !== undefined && typeof s.adapt !== 'boolean') throw new InputError('speculate.adapt must be a boolean')
  if (o.draft === undefined) throw new InputError('speculative decoding needs a draft model: give the client one (ClientConfig.draft)')
  // An optimistic claim and a sampling proof are built step by step over the rows as sent; a rewind would cut them.
  if (o.optimistic) throw new InputError('speculative decoding cannot run under optimistic verification yet: choose none, redundant or spot')
  if (o.proveSampling) throw new InputError('speculative decoding cannot prove sampling yet: drop proveSampling or speculate')
}

/**
 * Which drafted tokens the target keeps: `targets[j]` is the target's own choice after the
 * context and drafts[0..j). Returns the kept drafts and the target's next token after them.
 */
export function acceptDrafts(drafts: number[], targets: number[]): { kept: number; tokens: number[] } {
  let kept = 0
  while (kept < drafts.length && drafts[kept] === targets[kept]) kept++
  return { kept, tokens: [...drafts.slice(0, kept), targets[kept]] }
}

/**
 * Speculative sampling (Leviathan et al. 2023, Chen et al. 2023): draft j, drawn from `q[j]`, is
 * kept with probability min(1, p[j](x) / q[j](x)); at the first one not kept the token is drawn
 * from the residual max(0, p[j] − q[j]), renormalized; if all are kept, the next from p[γ].
 * Each token is then distributed exactly as drawn from the target's p alone. `q[j]` undefined:
 * the draft chose x for certain (q is a point mass). `p` has one row more than there are drafts.
 */
export function acceptSampled(drafts: number[], q: Array<Float64Array | undefined>, p: Float64Array[], rand: () => number): { kept: number; tokens: number[] } {
  for (let j = 0; j < drafts.length; j++) {
    const x = drafts[j]
    const qx = q[j]?.[x] ?? 1
    if (rand() * qx < p[j][x]) continue // u < p/q, without dividing by a tiny q
    const residual = new Float64Array(p[j].length)
    let sum = 0
    for (let i = 0; i < residual.length; i++) {
      residual[i] = Math.max(0, p[j][i] - (q[j] === undefined ? (i === x ? 1 : 0) : q[j]![i]))
      sum += residual[i]
    }
    // sum is 0 only where p ≤ q everywhere, i.e. p = q: then x is always kept and this is never reached, up to rounding.
    const from = sum > 0 ? residual.map((v) => v / sum) : p[j]
    return { kept: j, tokens: [...drafts.slice(0, j), drawFrom(from, rand())] }
  }
  return { kept: drafts.length, tokens: [...drafts, drawFrom(p[drafts.length], rand())] }
}

/**
 * The γ for the next pass (1 to `max`) that minimizes the expected time per token: a pass of γ
 * drafts costs `passMs` + γ × `draftMs` and yields (1 − α^(γ+1)) / (1 − α) tokens when each draft
 * is kept with probability α (Leviathan et al. 2023, eq. 1 and §3.4). α is estimated from what the
 * target kept so far: each pass tests drafts until the first rejection, so α̂ = (kept + 1) /
 * (kept + rejections + 2), a draw from each being a Bernoulli trial with a uniform prior.
 */
export function chooseGamma(seen: { kept: number; rejections: number }, passMs: number, draftMs: number, max: number): number {
  const alpha = Math.min((seen.kept + 1) / (seen.kept + seen.rejections + 2), 0.999)
  let best = 1
  let bestCost = Infinity
  for (let g = 1; g <= max; g++) {
    const cost = (passMs + g * draftMs) / ((1 - alpha ** (g + 1)) / (1 - alpha))
    if (cost < bestCost - 1e-9) {
      best = g
      bestCost = cost
    }
  }
  return best
}

/**
 * A draft from a model the client runs itself (any runtime's shard runners covering the whole
 * model: an int4 copy of the target, a smaller model sharing its tokenizer). It keeps its own
 * KV cache across passes and rewinds it to what the target kept, so each pass feeds only the
 * tokens it has not seen.
 */
export function modelDraft(runners: ShardRunner[]): Draft & { close(): void } {
  const pipeline = new Pipeline(runners.map((r) => r.open()))
  let fed: number[] = [] // the tokens in the draft's caches
  const run = async (tokens: number[]): Promise<Float32Array> => {
    const out = await pipeline.step(tokens)
    fed.push(...tokens)
    return lastRow(out)
  }
  return {
    async propose(context, n, pick = argmax) {
      // Keep the prefix the context shares with what was fed (all but the last token at least: its logits are needed).
      let k = 0
      while (k < fed.length && k < context.length - 1 && fed[k] === context[k]) k++
      if (k < fed.length) {
        pipeline.truncate(k)
        fed = fed.slice(0, k)
      }
      let logits = await run(context.slice(k))
      const out: number[] = []
      for (let i = 0; i < n; i++) {
        out.push(pick(logits))
        if (i < n - 1) logits = await run([out[i]])
      }
      return out
    },
    close() {
      pipeline.close()
    }
  }
}
