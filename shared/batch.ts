/**
 * Continuous batching of one shard's steps. Sessions submit steps; while the runtime computes
 * one batch the next ones queue, and the next run takes every queued one-token (decode) step of
 * a different session at once, up to a cap. A longer step (a prefill) runs alone, fed in chunks by
 * the runner so that one long prompt holds everyone's decode up for one chunk at most.
 *
 * Pure scheduling: what a batch is made of and when it runs. The runner (runner.ts) says how to
 * run one; tests drive this with fakes.
 */
import { InputError } from './errors.js'

export interface BatchLimits {
  /** One-token steps of different sessions run together at most; 1 = every step runs alone. */
  maxRows: number
  /**
   * How long a ready decode step may wait for other open sessions' steps to join it, in ms; 0 =
   * it takes what is queued. (Steps that queue behind a running batch join the next one anyway.)
   */
  waitMs: number
  /** A step of more tokens is fed in chunks of this many (a prefill), other sessions' decode steps between them. */
  prefillChunk: number
}

export const BATCH_DEFAULTS: BatchLimits = { maxRows: 16, waitMs: 0, prefillChunk: 128 }

/** Checks limits given by a flag or a caller. */
export function batchLimits(o: Partial<BatchLimits> = {}): BatchLimits {
  const l = { ...BATCH_DEFAULTS, ...o }
  if (!Number.isInteger(l.maxRows) || l.maxRows < 1) throw new InputError(`a batch takes 1 row or more, not ${l.maxRows}`)
  if (!Number.isFinite(l.waitMs) || l.waitMs < 0) throw new InputError(`the batch wait is 0 ms or more, not ${l.waitMs}`)
  if (!Number.isInteger(l.prefillChunk) || l.prefillChunk < 1) throw new InputError(`a prefill chunk is 1 token or more, not ${l.prefillChunk}`)
  return l
}

/** What batching did, for benches and tests: runs, rows they carried, and the widest. */
export interface BatchStats {
  runs: number
  rows: number
  widest: number
  /** Rows computed only to keep a batch's slots contiguous (kv-pool.ts), and thrown away. */
  idleRows: number
}

/** A queued step: its owner (a session), what it feeds, how many tokens. */
export interface QueuedStep<S, I> {
  owner: S
  input: I
  seq: number
}

interface Pending<S, I, O> extends QueuedStep<S, I> {
  resolve: (o: O) => void
  reject: (e: unknown) => void
}

export class StepBatcher<S extends { readonly closed: boolean }, I, O> {
  private readonly queue: Array<Pending<S, I, O>> = []
  private draining: Promise<void> | undefined
  readonly stats: BatchStats = { runs: 0, rows: 0, widest: 0, idleRows: 0 }

  /**
   * `run` computes one batch and returns one output per step, in order; `open` says how many
   * sessions could still join (the wait is pointless past that); `settle` runs between batches,
   * when nothing is being computed (the runner moves caches then).
   */
  constructor(
    private readonly limits: BatchLimits,
    private readonly run: (steps: Array<QueuedStep<S, I>>) => Promise<O[]>,
    private readonly open: () => number,
    private readonly settle: () => void = () => {}
  ) {}

  submit(owner: S, input: I, seq: number): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ owner, input, seq, resolve, reject })
      if (this.draining === undefined) this.draining = this.drain()
    })
  }

  /** Resolves once everything submitted so far has run. */
  async idle(): Promise<void> {
    while (this.draining !== undefined) await this.draining
  }

  private async drain(): Promise<void> {
    await Promise.resolve() // submit() has set `draining` by now
    try {
      while (this.queue.length > 0) {
        const { maxRows, waitMs } = this.limits
        if (waitMs > 0 && this.queue[0].seq === 1 && this.decodeSteps() < Math.min(maxRows, this.open())) {
          await new Promise((r) => setTimeout(r, waitMs))
        }
        this.settle()
        const batch = this.take()
        if (batch.length === 0) continue
        this.stats.runs++
        this.stats.rows += batch.length
        this.stats.widest = Math.max(this.stats.widest, batch.length)
        try {
          const out = await this.run(batch)
          for (const [i, s] of batch.entries()) s.resolve(out[i])
        } catch (err) {
          for (const s of batch) s.reject(err)
        }
      }
      this.settle()
    } finally {
      // In the same tick as the last look at the queue: a step submitted after it starts a new drain.
      this.draining = undefined
    }
  }

  private decodeSteps(): number {
    const owners = new Set<S>()
    for (const s of this.queue) if (s.seq === 1) owners.add(s.owner)
    return owners.size
  }

  /** The next batch: the oldest step, and if it decodes, every other session's queued decode step, up to the cap. */
  private take(): Array<Pending<S, I, O>> {
    for (let i = this.queue.length - 1; i >= 0; i--) {
      const s = this.queue[i]
      if (!s.owner.closed) continue
      this.queue.splice(i, 1)
      s.reject(new InputError('session is closed'))
    }
    const head = this.queue.shift()
    if (head === undefined) return []
    if (head.seq !== 1) return [head]
    const batch = [head]
    const owners = new Set([head.owner])
    for (let i = 0; i < this.queue.length && batch.length < this.limits.maxRows; ) {
      const s = this.queue[i]
      if (s.seq !== 1 || owners.has(s.owner)) {
        i++
        continue
      }
      owners.add(s.owner)
      batch.push(s)
      this.queue.splice(i, 1)
    }
    return batch
  }
}
