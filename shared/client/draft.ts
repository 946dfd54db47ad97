/**
 * Speculative decoding across the pipeline: a draft model next to the sampler guesses the next
 * few tokens, the whole route checks them in one pass (a step of γ + 1 rows), and the longest
 * prefix the target agrees with is kept, plus the target's own next token. Greedy output is
 * token-identical to plain decoding whatever the draft; a good draft only makes it faster, since
 * one pass of round trips then yields several tokens (Leviathan et al. 2023).
 */
import { InputError } from '../errors.js'
import type { ShardRunner } from '../runner.js'
import { argmax } from '../sampler.js'
import { lastRow, Pipeline } from '../pipeline.js'

/** A draft model: the `n` tokens it would generate greedily after `context` (the prompt and the tokens so far). */
export interface Draft {
  propose(context: number[], n: number): Promise<number[]>
}

export interface Speculation {
  /** Tokens drafted per pass (γ), at most. */
  gamma: number
}

/** Refuses what speculation cannot do yet, before anything is dialled. */
export function checkSpeculation(s: Speculation, o: { draft: Draft | undefined; temperature?: number; optimistic: boolean; proveSampling: boolean }): void {
  if (!Number.isInteger(s.gamma) || s.gamma < 1 || s.gamma > 16) throw new InputError(`speculate.gamma must be an integer from 1 to 16, not ${s.gamma}`)
  if (o.draft === undefined) throw new InputError('speculative decoding needs a draft model: give the client one (ClientConfig.draft)')
  if ((o.temperature ?? 0) !== 0) throw new InputError('speculative decoding is greedy only for now: use temperature 0')
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
    async propose(context, n) {
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
        out.push(argmax(logits))
        if (i < n - 1) logits = await run([out[i]])
      }
      return out
    },
    close() {
      pipeline.close()
    }
  }
}
