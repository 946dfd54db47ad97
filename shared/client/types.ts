/**
 * What a client offers to its callers (SDK, CLI, the relay's OpenAI API): one generation at a
 * time as a stream of tokens, then a result that says which peers served which layers.
 */
import type { SamplingOptions } from '../sampler.js'
import type { DeviceKind } from '../runner.js'

export interface GenerationRequest extends SamplingOptions {
  /** Token ids, BOS included if the model wants one. */
  prompt: number[]
  maxTokens: number
  /** Stop after emitting one of these ids (off by default). */
  stopIds?: number[]
  /** Model name or root hash; default: the one model the network fully covers. */
  model?: string
}

/** One hop of one step: who computed which layers, the round trip, and the node's own compute time. */
export interface HopTrace { peer: string, device: DeviceKind | string, layers: [number, number], ms: number, nodeMs?: number }

/** A hop that failed and what replaced it. */
export interface RouteSwitch { step: number, failed: string, layers: [number, number], reason: string, replacement: HopTrace[] }

export interface RouteTrace {
  /** The route of the last step (after any switch). */
  hops: HopTrace[]
  switches: RouteSwitch[]
}

export interface TokenEvent { id: number, index: number, hops: HopTrace[] }

export interface GenerationResult {
  model: string
  root: string
  prompt: number[]
  tokens: number[]
  finishReason: 'length' | 'stop'
  route: RouteTrace
  timings: { firstTokenMs: number, totalMs: number }
}

/** Runs generations over the network. `generate` yields tokens and returns the result. */
export interface Generator {
  generate (req: GenerationRequest, signal?: AbortSignal): AsyncGenerator<TokenEvent, GenerationResult>
}

/** What `GET /api/network` shows: every live peer, what it serves, and coverage per layer. */
export interface NetworkView {
  models: Array<{ name: string, root: string, layers: number, coverage: number[] }>
  peers: Array<{ peer: string, device: string, model: string, root: string, layers: [number, number], msPerLayer: number, memory: number, kvRoom: number, sessions: number, addrs: string[], expires: number }>
}
