import type { HopOutput, ShardSession } from './runner.js'
import { createSampler, type SamplingOptions } from './sampler.js'
import { InputError } from './errors.js'

/**
 * One sequence running through a chain of shard sessions that together cover the model:
 * token ids → hop 0 → hidden → hop 1 → … → logits. Local today; the network client drives the
 * same steps with remote hops.
 */
export class Pipeline {
  constructor(private readonly hops: ShardSession[]) {
    if (hops.length === 0) throw new InputError('a pipeline needs at least one shard')
  }

  /** Tokens held in the caches (the same on every hop). */
  get length(): number {
    return this.hops[0].length
  }

  /** Feeds `tokens` and returns the logits of every new position, [tokens.length, vocab]. */
  async step(tokens: number[]): Promise<HopOutput> {
    let out = await this.hops[0].forward({ tokens })
    for (const hop of this.hops.slice(1)) out = await hop.forward({ hidden: out.data, seq: out.seq })
    if (out.kind !== 'logits') throw new InputError('the last shard of the chain does not produce logits')
    return out
  }

  /** Keeps the first `n` tokens in every hop's cache (a draft rewinding to what the target kept). */
  truncate(n: number): void {
    for (const h of this.hops) h.truncate(n)
  }

  close(): void {
    for (const h of this.hops) h.close()
  }
}

export interface GenerateOptions extends SamplingOptions {
  prompt: number[]
  maxTokens: number
  /** Stop once one of these ids is generated (it is still yielded). Off by default. */
  stopIds?: number[]
}

export interface GeneratedToken {
  id: number
  index: number
  logits: Float32Array
}

/** Prefills the prompt in one step, then decodes one token per step, yielding as it goes. */
export async function* generate(pipeline: Pipeline, opts: GenerateOptions): AsyncGenerator<GeneratedToken> {
  if (opts.prompt.length === 0) throw new InputError('the prompt is empty: give at least one token (BOS)')
  const sample = createSampler(opts)
  let out = await pipeline.step(opts.prompt)
  for (let index = 0; index < opts.maxTokens; index++) {
    const logits = lastRow(out)
    const id = sample(logits)
    yield { id, index, logits }
    if (opts.stopIds?.includes(id) === true || index + 1 === opts.maxTokens) return
    out = await pipeline.step([id])
  }
}

export function lastRow(out: HopOutput): Float32Array {
  return out.data.subarray((out.seq - 1) * out.width, out.seq * out.width)
}
