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
}

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
    private readonly partLoader?: PartLoader
  ) {
    if (partLoader !== undefined) this.runPart = async (layer, input) => await this.part(layer, input)
  }

  open(): ShardSession {
    const { shard, config: c, Tensor } = this
    const [start, end] = shard.layers
    const first = start === 0
    const last = end === c.nLayers
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
      const feeds: Record<string, Tensor> = Object.fromEntries(past)
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

      const out = await this.run(feeds)
      const next = new Map<string, Tensor>()
      for (let l = start; l < end; l++) {
        next.set(io.pastKey(l), out[io.presentKey(l)])
        next.set(io.pastValue(l), out[io.presentValue(l)])
      }
      past = next
      length += seq
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

    return {
      get length() {
        return length
      },
      forward,
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
    const empty = new Tensor('float32', new Float32Array(0), [1, c.nKvHeads, 0, headDim(c)])
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

  private async run(feeds: Record<string, Tensor>, session = this.session): Promise<InferenceSession.OnnxValueMapType> {
    const result = this.queue.then(async () => await session.run(feeds))
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
