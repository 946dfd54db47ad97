/**
 * A model peer's shard: what the node's protocol handler (shared/node/serve.ts) runs, with the
 * compute charged to the peer's machine in virtual time (its reply leaves when the machine is
 * done: sim/link.ts; no timer of its own) and the numbers made up, cheaply and
 * deterministically, from everything the session was fed. An honest peer's output is then a
 * function of the input history alone, as a real model's is: peers serving the same layers agree
 * (so redundant and spot checks compare real fingerprints), a replayed history gives the same
 * state (so failover is exercised as it is), and a fault changes the numbers (so checks catch it).
 */
import type { ShardEntry } from '../shared/manifest.js'
import type { DeviceKind, HopInput, HopOutput, ShardRunner, ShardSession } from '../shared/runner.js'

export interface ModelShape {
  /** Values per activation row on the simulated wire; the link charges `wireBytesPerRow` for it. */
  width: number
  vocab: number
  /** How many of the model's layers: the last shard answers logits. */
  layers: number
}

export interface ComputeCost {
  /** One token through one layer (decode). */
  msPerLayer: number
  /** Each further row of a multi-row step (a prefill) through one layer: far less than a decode step (compute-bound, batched). */
  msPerPrefillRowLayer: number
}

const FNV = 0x811c9dc5
function mix(h: number, x: number): number {
  h ^= x
  return Math.imul(h, 0x01000193) >>> 0
}
/** A row of `n` values in (-1, 1) drawn from `seed`: xorshift, cheap and the same everywhere. */
function row(seed: number, n: number, out: Float32Array, at: number): void {
  let s = seed || 1
  for (let i = 0; i < n; i++) {
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    out[at + i] = ((s >>> 0) / 0x100000000) * 2 - 1
  }
}

/** A machine's accelerator: steps of all its sessions and shards run one after another on it. */
export interface Machine {
  /** Virtual time (Date.now) when what it was given so far is computed. */
  busyUntil: number
}

export function modelRunner(shard: ShardEntry, shape: ModelShape, cost: ComputeCost, device: DeviceKind, machine: Machine): ShardRunner {
  const [a, b] = shard.layers
  const last = b === shape.layers
  const width = last ? shape.vocab : shape.width
  const open = (): ShardSession => {
    let state = mix(FNV, a) // this session's history, hashed: its "KV cache"
    let history: number[] = [] // the state after each position, so a truncation rewinds exactly
    let closed = false
    return {
      get length() {
        return history.length
      },
      async forward(input: HopInput): Promise<HopOutput> {
        const seq = 'tokens' in input ? input.tokens.length : input.seq
        if (closed) throw new Error('session closed')
        machine.busyUntil = Math.max(Date.now(), machine.busyUntil) + (b - a) * (cost.msPerLayer + (seq - 1) * cost.msPerPrefillRowLayer)
        const data = new Float32Array(seq * width)
        for (let p = 0; p < seq; p++) {
          if ('tokens' in input) state = mix(state, input.tokens[p])
          else {
            const bits = new Uint32Array(input.hidden.buffer, input.hidden.byteOffset + p * (input.hidden.byteLength / seq), input.hidden.byteLength / seq / 4)
            for (let i = 0; i < bits.length; i++) state = mix(state, bits[i])
          }
          state = mix(state, b)
          history.push(state)
          row(state, width, data, p * width)
        }
        return { data, seq, width, kind: last ? 'logits' : 'hidden' }
      },
      truncate(n: number) {
        history = history.slice(0, n)
        state = n === 0 ? mix(FNV, a) : history[n - 1]
      },
      close() {
        closed = true
      }
    }
  }
  return { shard, device, open, dispose: async () => {} }
}
