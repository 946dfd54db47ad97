import type { InferenceSession, Tensor, TypedTensor } from 'onnxruntime-common'
import { headDim, type LlamaConfig } from './model/config.js'
import type { ShardEntry } from './manifest.js'
import { InputError } from './errors.js'
import * as io from './shard/io.js'
import { cutPart, LAYER_IN, partOutput } from './shard/part.js'

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
}

/** A GroupQueryAttention cache starts with room for this many positions and doubles when full. */
const KV_FIRST_CAPACITY = 64

/**
 * A ShardRunner over an onnxruntime InferenceSession that the runtime-specific module created
 * (only runner modules import onnxruntime; this file sees its types).
 *
 * onnxruntime sessions must not run concurrently on the web, so runs are serialized here for
 * every runtime alike.
 */
export class OrtShardRunner implements ShardRunner {
  private queue: Promise<unknown> = Promise.resolve()
  private readonly parts = new Map<number, Promise<InferenceSession>>()
  readonly runPart?: (layer: number, input: HopInput) => Promise<HopOutput>

  constructor(
    private readonly Tensor: OrtTensorCtor,
    private readonly session: InferenceSession,
    readonly shard: ShardEntry,
    private readonly config: LlamaConfig,
    readonly device: DeviceKind,
    private readonly partLoader?: PartLoader,
    private readonly traits: RuntimeTraits = { kvInPlace: false }
  ) {
    if (partLoader !== undefined) this.runPart = async (layer, input) => await this.part(layer, input)
  }

  open(): ShardSession {
    if (this.session.outputNames.includes(io.newKey(this.shard.layers[0]))) return this.openAppend()
    return this.session.inputNames.includes(io.SEQLENS_K) ? this.openGqa() : this.openConcat()
  }

  /**
   * An `append` session: one buffer per layer for keys and one for values, [1, nKv, capacity,
   * hd], fed as the past every step (onnxruntime-node reads it where it is); the step returns
   * only its new rows, copied in after `length`. Truncating is setting the length: the graph
   * masks every row from position_ids[0] on.
   */
  private openAppend(): ShardSession {
    const { shard, config: c } = this
    const [start, end] = shard.layers
    const hd = headDim(c)
    const cache = new KvBuffers(this.Tensor, c.nKvHeads, hd, c.maxSeqLen, start, end)
    let closed = false

    const forward = async (input: HopInput): Promise<HopOutput> => {
      if (closed) throw new InputError('session is closed')
      const { feeds, seq } = this.stepFeeds(input, cache.length)
      for (const [name, t] of cache.tensors) feeds[name] = t
      const out = await this.run(feeds)
      cache.reserve(cache.length + seq)
      for (let l = start; l < end; l++) {
        cache.write(io.pastKey(l), out[io.newKey(l)].data as Float32Array, seq)
        cache.write(io.pastValue(l), out[io.newValue(l)].data as Float32Array, seq)
      }
      cache.length += seq
      return this.hopOutput(out, seq)
    }

    return {
      get length() {
        return cache.length
      },
      forward,
      truncate(n: number) {
        if (!Number.isInteger(n) || n < 0 || n > cache.length) throw new InputError(`cannot truncate a ${cache.length}-token cache to ${n}`)
        cache.length = n
      },
      close() {
        closed = true
        cache.tensors.clear()
      }
    }
  }

  /** The step's inputs other than the cache: ids or hidden states, and positions from `length` on. */
  private stepFeeds(input: HopInput, length: number): { feeds: Record<string, Tensor>; seq: number } {
    const { shard, config: c, Tensor } = this
    const [start, end] = shard.layers
    const first = start === 0
    const feeds: Record<string, Tensor> = {}
    let seq: number
    if ('tokens' in input) {
      if (!first) throw new InputError(`shard ${start}-${end} takes hidden states, not token ids`)
      seq = input.tokens.length
      for (const t of input.tokens) {
        if (!Number.isInteger(t) || t < 0 || t >= c.vocabSize) throw new InputError(`token id ${t} is outside the vocabulary [0, ${c.vocabSize})`)
      }
      feeds[io.INPUT_IDS] = new Tensor('int64', BigInt64Array.from(input.tokens, BigInt), [1, seq])
    } else {
      if (first) throw new InputError(`shard ${start}-${end} takes token ids, not hidden states`)
      seq = input.seq
      if (input.hidden.length !== seq * c.dim) throw new InputError(`hidden states hold ${input.hidden.length} values; expected ${seq} × ${c.dim}`)
      feeds[io.HIDDEN_IN] = new Tensor('float32', input.hidden, [1, seq, c.dim])
    }
    if (seq < 1) throw new InputError('a step needs at least one token')
    if (length + seq > c.maxSeqLen) throw new InputError(`context of ${length + seq} tokens exceeds the model's ${c.maxSeqLen}`)
    const positions = new BigInt64Array(seq)
    for (let i = 0; i < seq; i++) positions[i] = BigInt(length + i)
    feeds[io.POSITION_IDS] = new Tensor('int64', positions, [1, seq])
    return { feeds, seq }
  }

  /** The hop's result from a run's outputs. */
  private hopOutput(out: InferenceSession.OnnxValueMapType, seq: number): HopOutput {
    const { shard, config: c } = this
    const [start, end] = shard.layers
    const last = end === c.nLayers
    const result = out[last ? io.LOGITS : io.HIDDEN_OUT]
    const layers = this.session.outputNames.includes(io.layerOut(start))
      ? Array.from({ length: end - start }, (_, i) => out[io.layerOut(start + i)].data as Float32Array)
      : undefined
    return {
      data: result.data as Float32Array,
      seq,
      width: last ? c.vocabSize : c.dim,
      kind: last ? 'logits' : 'hidden',
      ...(layers !== undefined ? { layers } : {})
    }
  }

  /**
   * A GroupQueryAttention session: one buffer per layer for keys and one for values,
   * [1, nKv, capacity, hd], that the op updates in place where the runtime allows; positions past
   * `length` are never read, so truncating is setting the length.
   */
  private openGqa(): ShardSession {
    const { shard, config: c, Tensor } = this
    const [start, end] = shard.layers
    const hd = headDim(c)
    // In place: the session's own buffers, fed as past and bound as present. Elsewhere each step's
    // present is fed back as the next past, starting from none.
    const buffers = this.traits.kvInPlace ? new KvBuffers(Tensor, c.nKvHeads, hd, c.maxSeqLen, start, end) : undefined
    let cache = buffers?.tensors ?? new Map<string, Tensor>()
    if (buffers === undefined) {
      const empty = new Tensor('float32', new Float32Array(0), [1, c.nKvHeads, 0, hd])
      for (let l = start; l < end; l++) {
        cache.set(io.pastKey(l), empty)
        cache.set(io.pastValue(l), empty)
      }
    }
    let length = 0
    let closed = false

    const forward = async (input: HopInput): Promise<HopOutput> => {
      if (closed) throw new InputError('session is closed')
      const { feeds, seq } = this.stepFeeds(input, length)
      const total = length + seq
      if (buffers !== undefined) {
        buffers.length = length
        buffers.reserve(total)
      }
      for (const [name, t] of cache) feeds[name] = t
      feeds[io.SEQLENS_K] = new Tensor('int32', Int32Array.of(total - 1), [1])
      feeds[io.TOTAL_SEQUENCE_LENGTH] = new Tensor('int32', Int32Array.of(total), [])
      let out: InferenceSession.OnnxValueMapType
      if (buffers !== undefined) {
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
    const result = this.queue.then(async () => await (fetches === undefined ? session.run(feeds) : session.run(feeds, fetches)))
    this.queue = result.catch(() => {})
    return await result
  }

  async dispose(): Promise<void> {
    await this.queue
    for (const p of this.parts.values())
      await p.then(
        async (s) => await s.release(),
        () => {}
      )
    await this.session.release()
  }
}

/**
 * A session's KV cache as buffers it owns: per layer, keys and values [1, nKv, capacity, hd];
 * the first `length` rows of each head are the cache. Capacity starts at KV_FIRST_CAPACITY and
 * doubles (up to the model's context), the valid rows copied over.
 */
class KvBuffers {
  readonly tensors = new Map<string, Tensor>()
  length = 0
  private capacity = 0

  constructor(
    private readonly Tensor: OrtTensorCtor,
    private readonly heads: number,
    private readonly hd: number,
    private readonly maxSeqLen: number,
    start: number,
    end: number
  ) {
    // Never empty: WebGPU cannot bind a zero-sized buffer, and the graph masks rows past `length` anyway.
    this.capacity = Math.min(KV_FIRST_CAPACITY, maxSeqLen)
    for (let l = start; l < end; l++) {
      this.tensors.set(io.pastKey(l), this.fresh(this.capacity))
      this.tensors.set(io.pastValue(l), this.fresh(this.capacity))
    }
  }

  private fresh(capacity: number): Tensor {
    return new this.Tensor('float32', new Float32Array(this.heads * capacity * this.hd), [1, this.heads, capacity, this.hd])
  }

  /** Room for `total` rows. */
  reserve(total: number): void {
    if (total <= this.capacity) return
    let next = Math.max(KV_FIRST_CAPACITY, this.capacity)
    while (next < total) next *= 2
    next = Math.min(next, this.maxSeqLen)
    const { heads, hd, capacity, length } = this
    for (const [name, old] of this.tensors) {
      const t = this.fresh(next)
      const from = old.data as Float32Array
      const to = t.data as Float32Array
      for (let h = 0; h < heads; h++) to.set(from.subarray(h * capacity * hd, (h * capacity + length) * hd), h * next * hd)
      this.tensors.set(name, t)
    }
    this.capacity = next
  }

  /** Copies `seq` new rows per head ([nKv, seq, hd]) in after `length`. */
  write(name: string, rows: Float32Array, seq: number): void {
    const to = this.tensors.get(name)!.data as Float32Array
    const { heads, hd, capacity, length } = this
    for (let h = 0; h < heads; h++) to.set(rows.subarray(h * seq * hd, (h + 1) * seq * hd), (h * capacity + length) * hd)
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
