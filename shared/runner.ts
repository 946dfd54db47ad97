import type { InferenceSession, Tensor, TypedTensor } from 'onnxruntime-common'
import { headDim, type LlamaConfig } from './model/config.js'
import type { ShardEntry } from './manifest.js'
import { InputError } from './errors.js'
import * as io from './shard/io.js'
import { cutPart, LAYER_IN, partOutput } from './shard/part.js'
import { BATCH_DEFAULTS, StepBatcher, type BatchLimits, type BatchStats, type QueuedStep } from './batch.js'
import { KV_FIRST_CAPACITY, KvPool, kvCapacity, type KvSlot } from './kv-pool.js'

/** Where a shard's math runs. */
export type DeviceKind = 'cuda' | 'cpu' | 'webgpu' | 'wasm'

/** What one step sends into a shard: token ids for the first shard, hidden states after that. */
export type HopInput = { tokens: Int32Array | number[] } | { hidden: Float32Array; seq: number }

/** How many rows (token positions) an input carries. */
export const seqOf = (x: HopInput): number => ('tokens' in x ? x.tokens.length : x.seq)

/**
 * Hidden states [seq, dim] from a middle shard, logits [seq, vocab] from the last; and, from
 * shards built with them, each block's output [seq, dim] in layer order (`layers`).
 */
export interface HopOutput {
  data: Float32Array
  seq: number
  width: number
  kind: 'hidden' | 'logits'
  layers?: Float32Array[]
}

/**
 * One sequence's state on one shard: its KV cache. Positions are implicit: each forward()
 * continues where the cache ends, so a caller cannot misplace tokens.
 */
export interface ShardSession {
  /** Tokens held in the KV cache. */
  readonly length: number
  forward(input: HopInput): Promise<HopOutput>
  /** Forgets the cache from position `length` on (cheap: the rows stay, unread, and are overwritten). */
  truncate(length: number): void
  close(): void
}

/** A loaded shard on some runtime (onnxruntime-node, onnxruntime-web WASM or WebGPU). */
export interface ShardRunner {
  readonly shard: ShardEntry
  readonly device: DeviceKind
  open(): ShardSession
  /**
   * Re-executes one block of the shard (or its head, `layer` = layers[1]) over a whole sequence
   * from position 0, for disputes (shard/part.ts). `input` is the shard's input when `layer` is
   * its first block, else the residual stream entering the block [seq, dim]. Undefined where the
   * runtime cannot load parts.
   */
  runPart?: (layer: number, input: HopInput) => Promise<HopOutput>
  /** What continuous batching has done, where the shard batches (batch.ts). */
  readonly batching?: BatchStats
  /** Whether sessions keep their KV cache in the runtime's device memory (a WebGPU tab's GPU), not in JS. */
  readonly kvOnDevice?: boolean
  /** Bytes the shard's pooled KV caches take now (append layouts on the runner's pools). */
  readonly kvBytes?: number
  dispose(): Promise<void>
}

/** How a runtime opens a part's graph: an onnxruntime session with the shard's external data beside it. */
export interface PartLoader {
  /** The shard's own graph bytes. */
  graph: () => Promise<Uint8Array>
  load: (graph: Uint8Array) => Promise<InferenceSession>
}

/** The one thing the runner needs from an onnxruntime module (node and web share it). */
export interface OrtTensorCtor {
  new (type: 'float32', data: Float32Array, dims: readonly number[]): TypedTensor<'float32'>
  new (type: 'int64', data: BigInt64Array, dims: readonly number[]): TypedTensor<'int64'>
  new (type: 'int32', data: Int32Array, dims: readonly number[]): TypedTensor<'int32'>
}

/**
 * Runtime facts the runner cannot see from the session. `kvInPlace`: the runtime writes a
 * preallocated output into the caller's own buffer (onnxruntime-node: inputs and outputs wrap JS
 * memory), so a GroupQueryAttention cache can be fed as past and bound as present at once; where
 * it cannot (onnxruntime-web copies every tensor into its heap and leaves preallocated CPU outputs
 * unfilled), the present it returns is fed back as the next past.
 */
export interface RuntimeTraits {
  kvInPlace: boolean
  /**
   * Only one run at a time in the whole runtime, whichever session (onnxruntime-web: two shards'
   * runs at once corrupt its state). Elsewhere each shard runs its own one at a time, and shards
   * overlap.
   */
  oneRunAtATime?: boolean
  /**
   * Keeps each `append` session's KV cache in the runtime's device memory (a WebGPU tab: GPU
   * buffers) instead of the runner's pool, so no step moves the cache between the device and JS.
   * Such sessions run their steps alone (a batch would need one buffer over several sessions).
   */
  deviceKv?: DeviceKvFactory
}

/**
 * A session's KV cache where the runtime computes (web/src/runtime/kv-gpu.ts). The graph's cache
 * inputs are named by `names` (past_key.L, past_value.L); a run returns each one's new rows as
 * new_key.L / new_value.L, left on the device.
 */
export interface DeviceKv {
  /** The cache inputs, holding at least `rows` rows; growing them keeps the first `length`. */
  past(rows: number, length: number): Record<string, Tensor>
  /** Writes a run's new rows (`rows[name]`, [1, nKv, seq, hd] on the device) at `length`, then frees them. */
  append(rows: Record<string, Tensor>, length: number, seq: number): void
  release(): void
}
export type DeviceKvFactory = (names: string[]) => DeviceKv

/** Runs in submission order, one at a time. */
class RunQueue {
  private tail: Promise<unknown> = Promise.resolve()

  async run<T>(f: () => Promise<T>): Promise<T> {
    const result = this.tail.then(f)
    this.tail = result.catch(() => {})
    return await result
  }

  async idle(): Promise<void> {
    await this.tail
  }
}

/** The one queue of a runtime that runs one session at a time, by its Tensor class. */
const runtimeQueues = new WeakMap<OrtTensorCtor, RunQueue>()

/** A batch run spans a session's slot and the next batched one's across at most this many idle slots (computed and thrown away). */
const MAX_IDLE_GAP = 2

/**
 * A ShardRunner over an onnxruntime InferenceSession that the runtime-specific module created
 * (only runner modules import onnxruntime; this file sees its types). A shard does one run at a
 * time (RuntimeTraits says whether the whole runtime must).
 */
export class OrtShardRunner implements ShardRunner {
  private readonly queue: RunQueue
  // append sessions: their caches (a pool per capacity), their steps' batching, and slots closed while a batch ran.
  private readonly pools = new Map<number, KvPool>()
  private live = 0
  private batcher?: StepBatcher<KvSlot, HopInput, HopOutput>
  private toRelease: KvSlot[] = []
  private computing = false
  private readonly parts = new Map<number, Promise<InferenceSession>>()
  readonly runPart?: (layer: number, input: HopInput) => Promise<HopOutput>

  constructor(
    private readonly Tensor: OrtTensorCtor,
    private readonly session: InferenceSession,
    readonly shard: ShardEntry,
    private readonly config: LlamaConfig,
    readonly device: DeviceKind,
    private readonly partLoader?: PartLoader,
    private readonly traits: RuntimeTraits = { kvInPlace: false },
    private readonly batch: BatchLimits = BATCH_DEFAULTS
  ) {
    if (partLoader !== undefined) this.runPart = async (layer, input) => await this.part(layer, input)
    let queue = traits.oneRunAtATime === true ? runtimeQueues.get(Tensor) : undefined
    if (queue === undefined) {
      queue = new RunQueue()
      if (traits.oneRunAtATime === true) runtimeQueues.set(Tensor, queue)
    }
    this.queue = queue
  }

  open(): ShardSession {
    if (this.session.outputNames.includes(io.newKey(this.shard.layers[0])))
      return this.traits.deviceKv !== undefined ? this.openDeviceAppend() : this.openAppend()
    return this.session.inputNames.includes(io.SEQLENS_K) ? this.openGqa() : this.openConcat()
  }

  /**
   * An `append` session: its cache is a slot of the shard's KvPool (kv-pool.ts), fed as the past
   * every step (onnxruntime-node reads it where it is); a step returns only its new rows, copied in
   * after `length`. Steps go through the shard's StepBatcher (batch.ts): one-token steps of
   * different sessions that queue together run as one batch, each row masked at its own length; a
   * longer step is fed in chunks. Truncating is setting the length: the graph masks every row from
   * position_ids[0] on.
   */
  private openAppend(): ShardSession {
    const batcher = this.appendBatcher()
    const { config: c } = this
    const slot = this.poolFor(1).acquire()
    this.live++

    const forward = async (input: HopInput): Promise<HopOutput> => {
      if (slot.closed) throw new InputError('session is closed')
      const seq = this.checkInput(input, slot.length)
      return await inChunks(input, seq, this.batch.prefillChunk, c.dim, async (part, n) => await batcher.submit(slot, part, n))
    }

    return {
      get length() {
        return slot.length
      },
      forward,
      truncate(n: number) {
        if (!Number.isInteger(n) || n < 0 || n > slot.length) throw new InputError(`cannot truncate a ${slot.length}-token cache to ${n}`)
        slot.length = n
      },
      close: () => {
        if (slot.closed) return
        slot.closed = true
        this.live--
        // A running batch reads the pool: its slots move only between runs.
        this.toRelease.push(slot)
        if (!this.computing) this.releaseClosed()
      }
    }
  }

  /**
   * An `append` session whose cache stays on the runtime's device (RuntimeTraits.deviceKv): fed
   * where it is each step, the new rows copied in on the device. Steps run alone, prefills in
   * chunks as in a pool; truncating is setting the length.
   */
  private openDeviceAppend(): ShardSession {
    const { shard, config: c } = this
    const [start, end] = shard.layers
    const kv = this.traits.deviceKv!(this.kvNames())
    let length = 0
    let closed = false
    let inFlight: Promise<unknown> | undefined // a queued or running step still reads the buffers
    const step = async (input: HopInput): Promise<HopOutput> => {
      const { feeds, seq } = this.stepFeeds(input, length)
      Object.assign(feeds, kv.past(kvCapacity(length + seq, c.maxSeqLen), length))
      const running = this.run(feeds)
      inFlight = running
      const out = await running.finally(() => {
        inFlight = undefined
      })
      const rows: Record<string, Tensor> = {}
      for (let l = start; l < end; l++) {
        rows[io.pastKey(l)] = out[io.newKey(l)]
        rows[io.pastValue(l)] = out[io.newValue(l)]
      }
      if (closed) {
        for (const t of Object.values(rows)) t.dispose() // released while it ran: nothing to keep
      } else {
        kv.append(rows, length, seq)
        length += seq
      }
      return this.hopOutput(out, seq)
    }
    return {
      get length() {
        return length
      },
      forward: async (input) => {
        if (closed) throw new InputError('session is closed')
        const seq = this.checkInput(input, length)
        return await inChunks(input, seq, this.batch.prefillChunk, c.dim, step)
      },
      truncate(n: number) {
        if (!Number.isInteger(n) || n < 0 || n > length) throw new InputError(`cannot truncate a ${length}-token cache to ${n}`)
        length = n
      },
      close() {
        if (closed) return
        closed = true
        // Not under a step the runtime has yet to run: it would read destroyed buffers.
        if (inFlight === undefined) kv.release()
        else void inFlight.finally(() => kv.release()).catch(() => {})
      }
    }
  }

  private appendBatcher(): StepBatcher<KvSlot, HopInput, HopOutput> {
    this.batcher ??= new StepBatcher<KvSlot, HopInput, HopOutput>(
      this.batch,
      async (steps) => await this.runRows(steps),
      () => this.live,
      () => this.releaseClosed()
    )
    return this.batcher
  }

  /** The pool whose slots hold `rows` rows: the smallest capacity class (64, 128, …, the model's context) that does. */
  private poolFor(rows: number): KvPool {
    const c = this.config
    const capacity = kvCapacity(rows, c.maxSeqLen)
    let pool = this.pools.get(capacity)
    if (pool === undefined) {
      pool = new KvPool(this.kvNames(), c.nKvHeads, headDim(c), c.maxSeqLen, capacity)
      this.pools.set(capacity, pool)
    }
    return pool
  }

  /** The shard's cache inputs: keys and values per layer. */
  private kvNames(): string[] {
    const [start, end] = this.shard.layers
    return Array.from({ length: end - start }, (_, i) => [io.pastKey(start + i), io.pastValue(start + i)]).flat()
  }

  private releaseClosed(): void {
    for (const s of this.toRelease.splice(0)) s.pool.release(s)
    this.dropEmptyPools()
  }

  private dropEmptyPools(): void {
    for (const [capacity, pool] of this.pools) if (pool.size === 0) this.pools.delete(capacity)
  }

  /**
   * Runs one batch of append steps: a cache about to outgrow its pool moves to the next first; then
   * per pool, the rows' slots sorted and cut into runs that are contiguous but for a few idle slots
   * (computed at position 0 and thrown away), one onnxruntime run each.
   */
  private async runRows(steps: Array<QueuedStep<KvSlot, HopInput>>): Promise<HopOutput[]> {
    const outs = new Map<QueuedStep<KvSlot, HopInput>, HopOutput>()
    this.computing = true
    try {
      for (const s of steps) {
        const need = s.owner.length + s.seq
        if (need > s.owner.pool.rowsPerSlot) this.poolFor(need).adopt(s.owner)
      }
      this.dropEmptyPools()
      const sorted = [...steps].sort((a, b) => a.owner.pool.rowsPerSlot - b.owner.pool.rowsPerSlot || a.owner.slot - b.owner.slot)
      const runs: Array<typeof steps> = []
      for (const s of sorted) {
        const cur = runs[runs.length - 1]
        const prev = cur?.[cur.length - 1].owner
        if (prev !== undefined && prev.pool === s.owner.pool && s.owner.slot - prev.slot <= 1 + MAX_IDLE_GAP) cur.push(s)
        else runs.push([s])
      }
      for (const run of runs) {
        const got = await this.runSlots(run)
        for (const [i, s] of run.entries()) outs.set(s, got[i])
      }
    } finally {
      this.computing = false
    }
    return steps.map((s) => outs.get(s)!)
  }

  /** One onnxruntime run over slots [first row's, last row's]; `run` holds one prefill chunk or one-token rows. */
  private async runSlots(run: Array<QueuedStep<KvSlot, HopInput>>): Promise<HopOutput[]> {
    const { shard, config: c, Tensor } = this
    const pool = run[0].owner.pool
    const [start, end] = shard.layers
    const lo = run[0].owner.slot
    const n = run[run.length - 1].owner.slot - lo + 1
    const seq = run[0].seq
    const rows = new Array<QueuedStep<KvSlot, HopInput> | undefined>(n)
    for (const s of run) rows[s.owner.slot - lo] = s

    const feeds: Record<string, Tensor> = pool.views(Tensor, lo, n)
    const positions = new BigInt64Array(n * seq)
    rows.forEach((s, r) => {
      for (let i = 0; i < seq; i++) positions[r * seq + i] = BigInt((s?.owner.length ?? 0) + i)
    })
    feeds[io.POSITION_IDS] = new Tensor('int64', positions, [n, seq])
    if (shard.layers[0] === 0) {
      const ids = new BigInt64Array(n * seq)
      rows.forEach((s, r) => {
        if (s !== undefined && 'tokens' in s.input) ids.set(BigInt64Array.from(s.input.tokens, BigInt), r * seq)
      })
      feeds[io.INPUT_IDS] = new Tensor('int64', ids, [n, seq])
    } else if (n === 1 && 'hidden' in run[0].input) {
      feeds[io.HIDDEN_IN] = new Tensor('float32', run[0].input.hidden, [1, seq, c.dim])
    } else {
      const hidden = new Float32Array(n * seq * c.dim)
      rows.forEach((s, r) => {
        if (s !== undefined && 'hidden' in s.input) hidden.set(s.input.hidden, r * seq * c.dim)
      })
      feeds[io.HIDDEN_IN] = new Tensor('float32', hidden, [n, seq, c.dim])
    }

    const out = await this.run(feeds)
    const stats = this.batcher!.stats
    stats.idleRows += n - run.length
    const kvRow = c.nKvHeads * seq * headDim(c)
    return run.map((s) => {
      const r = s.owner.slot - lo
      if (!s.owner.closed) {
        for (let l = start; l < end; l++) {
          pool.write(io.pastKey(l), s.owner, out[io.newKey(l)].data as Float32Array, r * kvRow, seq)
          pool.write(io.pastValue(l), s.owner, out[io.newValue(l)].data as Float32Array, r * kvRow, seq)
        }
        s.owner.length += seq
      }
      return this.hopOutput(out, seq, n === 1 ? undefined : r)
    })
  }

  /** Checks one step's input against the shard and the context left; returns its token count. */
  private checkInput(input: HopInput, length: number): number {
    const { shard, config: c } = this
    const [start, end] = shard.layers
    const first = start === 0
    let seq: number
    if ('tokens' in input) {
      if (!first) throw new InputError(`shard ${start}-${end} takes hidden states, not token ids`)
      seq = input.tokens.length
      for (const t of input.tokens) {
        if (!Number.isInteger(t) || t < 0 || t >= c.vocabSize) throw new InputError(`token id ${t} is outside the vocabulary [0, ${c.vocabSize})`)
      }
    } else {
      if (first) throw new InputError(`shard ${start}-${end} takes token ids, not hidden states`)
      seq = input.seq
      if (input.hidden.length !== seq * c.dim) throw new InputError(`hidden states hold ${input.hidden.length} values; expected ${seq} × ${c.dim}`)
    }
    if (seq < 1) throw new InputError('a step needs at least one token')
    if (length + seq > c.maxSeqLen) throw new InputError(`context of ${length + seq} tokens exceeds the model's ${c.maxSeqLen}`)
    return seq
  }

  /** The step's inputs other than the cache: ids or hidden states, and positions from `length` on. */
  private stepFeeds(input: HopInput, length: number): { feeds: Record<string, Tensor>; seq: number } {
    const { config: c, Tensor } = this
    const seq = this.checkInput(input, length)
    const feeds: Record<string, Tensor> = {}
    if ('tokens' in input) feeds[io.INPUT_IDS] = new Tensor('int64', BigInt64Array.from(input.tokens, BigInt), [1, seq])
    else feeds[io.HIDDEN_IN] = new Tensor('float32', input.hidden, [1, seq, c.dim])
    const positions = new BigInt64Array(seq)
    for (let i = 0; i < seq; i++) positions[i] = BigInt(length + i)
    feeds[io.POSITION_IDS] = new Tensor('int64', positions, [1, seq])
    return { feeds, seq }
  }

  /** The hop's result from a run's outputs: all of it, or batch row `row` (copied out). */
  private hopOutput(out: InferenceSession.OnnxValueMapType, seq: number, row?: number): HopOutput {
    const { shard, config: c } = this
    const [start, end] = shard.layers
    const last = end === c.nLayers
    const width = last ? c.vocabSize : c.dim
    const take = (t: Tensor, w: number): Float32Array => {
      const data = t.data as Float32Array
      return row === undefined ? data : data.slice(row * seq * w, (row + 1) * seq * w)
    }
    const layers = this.session.outputNames.includes(io.layerOut(start))
      ? Array.from({ length: end - start }, (_, i) => take(out[io.layerOut(start + i)], c.dim))
      : undefined
    return {
      data: take(out[last ? io.LOGITS : io.HIDDEN_OUT], width),
      seq,
      width,
      kind: last ? 'logits' : 'hidden',
      ...(layers !== undefined ? { layers } : {})
    }
  }

  /**
   * A GroupQueryAttention session: one buffer per layer for keys and one for values,
   * [1, nKv, capacity, hd], that the op updates in place where the runtime allows; positions past
   * `length` are never read, so truncating is setting the length. Its steps run alone.
   */
  private openGqa(): ShardSession {
    const { shard, config: c, Tensor } = this
    const [start, end] = shard.layers
    const hd = headDim(c)
    // In place: a one-slot pool of the session's own, fed as past and bound as present. Elsewhere
    // each step's present is fed back as the next past, starting from none.
    const names = this.kvNames()
    const own = this.traits.kvInPlace ? new KvPool(names, c.nKvHeads, hd, c.maxSeqLen) : undefined
    const slot = own?.acquire()
    let cache = new Map<string, Tensor>()
    const empty = new Tensor('float32', new Float32Array(0), [1, c.nKvHeads, 0, hd])
    for (const name of names) cache.set(name, empty)
    let length = 0
    let closed = false

    const forward = async (input: HopInput): Promise<HopOutput> => {
      if (closed) throw new InputError('session is closed')
      const { feeds, seq } = this.stepFeeds(input, length)
      const total = length + seq
      if (own !== undefined && slot !== undefined) {
        slot.length = length
        own.reserve(total)
        cache = new Map(Object.entries(own.views(Tensor, 0, 1)))
      }
      for (const [name, t] of cache) feeds[name] = t
      feeds[io.SEQLENS_K] = new Tensor('int32', Int32Array.of(total - 1), [1])
      feeds[io.TOTAL_SEQUENCE_LENGTH] = new Tensor('int32', Int32Array.of(total), [])
      let out: InferenceSession.OnnxValueMapType
      if (own !== undefined) {
        // Present bound to the very buffers fed as past: the op writes the new rows into them. The
        // copies the binding returns for these outputs are dropped.
        const fetches: Record<string, Tensor | null> = Object.fromEntries(this.session.outputNames.map((n) => [n, null]))
        for (let l = start; l < end; l++) {
          fetches[io.presentKey(l)] = cache.get(io.pastKey(l))!
          fetches[io.presentValue(l)] = cache.get(io.pastValue(l))!
        }
        out = await this.run(feeds, this.session, fetches)
      } else {
        out = await this.run(feeds)
        const next = new Map<string, Tensor>()
        for (let l = start; l < end; l++) {
          next.set(io.pastKey(l), out[io.presentKey(l)])
          next.set(io.pastValue(l), out[io.presentValue(l)])
        }
        cache = next
      }
      length = total
      return this.hopOutput(out, seq)
    }

    return {
      get length() {
        return length
      },
      forward,
      truncate(n: number) {
        if (!Number.isInteger(n) || n < 0 || n > length) throw new InputError(`cannot truncate a ${length}-token cache to ${n}`)
        length = n
      },
      close() {
        closed = true
        cache.clear()
      }
    }
  }

  /** A session over a `concat` graph: the whole past goes in each step and comes back grown. */
  private openConcat(): ShardSession {
    const { shard, config: c, Tensor } = this
    const [start, end] = shard.layers
    const hd = headDim(c)
    const empty = new Tensor('float32', new Float32Array(0), [1, c.nKvHeads, 0, hd])
    let past = new Map<string, Tensor>()
    for (let l = start; l < end; l++) {
      past.set(io.pastKey(l), empty)
      past.set(io.pastValue(l), empty)
    }
    let length = 0
    let closed = false

    const forward = async (input: HopInput): Promise<HopOutput> => {
      if (closed) throw new InputError('session is closed')
      const { feeds, seq } = this.stepFeeds(input, length)
      for (const [name, t] of past) feeds[name] = t
      const out = await this.run(feeds)
      const next = new Map<string, Tensor>()
      for (let l = start; l < end; l++) {
        next.set(io.pastKey(l), out[io.presentKey(l)])
        next.set(io.pastValue(l), out[io.presentValue(l)])
      }
      past = next
      length += seq
      return this.hopOutput(out, seq)
    }

    return {
      get length() {
        return length
      },
      forward,
      truncate(n: number) {
        if (!Number.isInteger(n) || n < 0 || n > length) throw new InputError(`cannot truncate a ${length}-token cache to ${n}`)
        // This layout's cache is exactly `length` rows: keep each head's first n.
        for (const [name, t] of past) {
          const from = t.data as Float32Array
          const to = new Float32Array(c.nKvHeads * n * hd)
          for (let h = 0; h < c.nKvHeads; h++) to.set(from.subarray(h * length * hd, (h * length + n) * hd), h * n * hd)
          past.set(name, new Tensor('float32', to, [1, c.nKvHeads, n, hd]))
        }
        length = n
      },
      close() {
        closed = true
        past.clear()
      }
    }
  }

  private async part(layer: number, input: HopInput): Promise<HopOutput> {
    const { shard, config: c, Tensor } = this
    const [a, b] = shard.layers
    const last = b === c.nLayers
    if (!Number.isInteger(layer) || layer < a || layer > b) throw new InputError(`layer ${layer} is not in shard [${a},${b})`)
    if (layer > a && 'tokens' in input) throw new InputError(`block ${layer} takes the residual stream, not token ids`)
    let session = this.parts.get(layer)
    if (session === undefined) {
      const loader = this.partLoader!
      session = loader.graph().then(async (g) => await loader.load(cutPart(g, shard.layers, layer, last)))
      session.catch(() => this.parts.delete(layer))
      this.parts.set(layer, session)
    }
    const s = await session
    const seq = seqOf(input)
    if (seq < 1 || seq > c.maxSeqLen) throw new InputError(`a part runs 1 to ${c.maxSeqLen} rows, got ${seq}`)
    const feeds: Record<string, Tensor> = {}
    // No past. An append graph masks its buffer from position 0 on: it gets the unread rows a
    // session's first step has (WebGPU cannot bind an empty buffer, and the same shapes make the
    // same sums: a block re-executed computes exactly what a prefill did); the others take none.
    const rows = this.session.outputNames.includes(io.newKey(a)) ? Math.min(KV_FIRST_CAPACITY, c.maxSeqLen) : 0
    const empty = new Tensor('float32', new Float32Array(c.nKvHeads * rows * headDim(c)), [1, c.nKvHeads, rows, headDim(c)])
    for (const name of s.inputNames) {
      if (name === io.POSITION_IDS)
        feeds[name] = new Tensor(
          'int64',
          BigInt64Array.from({ length: seq }, (_, i) => BigInt(i)),
          [1, seq]
        )
      else if (name === io.INPUT_IDS && 'tokens' in input) feeds[name] = new Tensor('int64', BigInt64Array.from(input.tokens, BigInt), [1, seq])
      else if ((name === io.HIDDEN_IN || name === LAYER_IN) && 'hidden' in input) {
        if (input.hidden.length !== seq * c.dim) throw new InputError(`hidden states hold ${input.hidden.length} values; expected ${seq} × ${c.dim}`)
        feeds[name] = new Tensor('float32', input.hidden, [1, seq, c.dim])
      } else if (name.startsWith('past_')) feeds[name] = empty
      else if (name === io.SEQLENS_K) feeds[name] = new Tensor('int32', Int32Array.of(seq - 1), [1])
      else if (name === io.TOTAL_SEQUENCE_LENGTH) feeds[name] = new Tensor('int32', Int32Array.of(seq), [])
      else throw new InputError(`part ${layer} of shard [${a},${b}) needs ${name}, which this input does not carry`)
    }
    if ('tokens' in input) {
      for (const t of input.tokens)
        if (!Number.isInteger(t) || t < 0 || t >= c.vocabSize) throw new InputError(`token id ${t} is outside the vocabulary [0, ${c.vocabSize})`)
    }
    const out = await this.run(feeds, s)
    const head = layer === b && last
    return { data: out[partOutput(shard.layers, layer, last)].data as Float32Array, seq, width: head ? c.vocabSize : c.dim, kind: head ? 'logits' : 'hidden' }
  }

  private async run(
    feeds: Record<string, Tensor>,
    session = this.session,
    fetches?: Record<string, Tensor | null>
  ): Promise<InferenceSession.OnnxValueMapType> {
    return await this.queue.run(async () => await (fetches === undefined ? session.run(feeds) : session.run(feeds, fetches)))
  }

  /** What batching has done on this shard (append layouts batch; the others run every step alone). */
  get batching(): BatchStats | undefined {
    return this.batcher?.stats
  }

  get kvBytes(): number {
    let bytes = 0
    for (const pool of this.pools.values()) bytes += pool.bytes
    return bytes
  }

  get kvOnDevice(): boolean {
    return this.traits.deviceKv !== undefined && this.session.outputNames.includes(io.newKey(this.shard.layers[0]))
  }

  async dispose(): Promise<void> {
    await this.batcher?.idle()
    await this.queue.idle()
    for (const p of this.parts.values())
      await p.then(
        async (s) => await s.release(),
        () => {}
      )
    await this.session.release()
  }
}

/** Runs a step of `seq` rows as chunks of at most `chunk` rows, in order (a long prefill must not stall other sessions), and joins their outputs. */
async function inChunks(
  input: HopInput,
  seq: number,
  chunk: number,
  dim: number,
  run: (part: HopInput, rows: number) => Promise<HopOutput>
): Promise<HopOutput> {
  if (seq <= chunk) return await run(input, seq)
  const outs: HopOutput[] = []
  for (let at = 0; at < seq; at += chunk) {
    const n = Math.min(chunk, seq - at)
    const part: HopInput = 'tokens' in input ? { tokens: input.tokens.slice(at, at + n) } : { hidden: input.hidden.subarray(at * dim, (at + n) * dim), seq: n }
    outs.push(await run(part, n))
  }
  return joinOutputs(outs)
}

/** One step's output from the outputs of its chunks, in order. */
function joinOutputs(outs: HopOutput[]): HopOutput {
  const cat = (parts: Float32Array[]): Float32Array => {
    const to = new Float32Array(parts.reduce((n, p) => n + p.length, 0))
    let at = 0
    for (const p of parts) {
      to.set(p, at)
      at += p.length
    }
    return to
  }
  const [first] = outs
  const layers = first.layers?.map((_, i) => cat(outs.map((o) => o.layers![i])))
  return {
    data: cat(outs.map((o) => o.data)),
    seq: outs.reduce((n, o) => n + o.seq, 0),
    width: first.width,
    kind: first.kind,
    ...(layers !== undefined ? { layers } : {})
  }
}

/**
 * A shard's files as onnxruntime-web wants them: the graph's bytes, and its external data by
 * the names the graph refers to. `files` holds bytes already checked against the manifest.
 */
export function sessionFiles(
  files: Map<string, Uint8Array>,
  shard: ShardEntry
): { graph: Uint8Array; externalData: Array<{ path: string; data: Uint8Array }> } {
  const [graph, ...externalData] = shard.files.map((f) => {
    const data = files.get(f.name)
    if (data === undefined) throw new InputError(`shard ${shard.index}: file ${f.name} was not provided`)
    return { path: f.name, data }
  })
  return { graph: graph.data, externalData }
}
