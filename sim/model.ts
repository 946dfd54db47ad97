/**
 * A model peer's shard: what the node's protocol handler (shared/node/serve.ts) runs, with the
 * compute spent in virtual time on the peer's machine (one batch after another) and the numbers
 * made up, cheaply and deterministically, from everything the session was fed. An honest peer's output is then a
 * function of the input history alone, as a real model's is: peers serving the same layers agree
 * (so redundant and spot checks compare real fingerprints), a replayed history gives the same
 * state (so failover is exercised as it is), and a fault changes the numbers (so checks catch it).
 */
import type { ShardEntry } from '../shared/manifest.js'
import type { DeviceKind, HopInput, HopOutput, ShardRunner, ShardSession } from '../shared/runner.js'
import { BATCH_DEFAULTS, StepBatcher, type BatchLimits } from '../shared/batch.js'

export interface ModelShape {
  /** Values per activation row, sent as fp32 on the simulated wire (the link charges their bytes). */
  width: number
  vocab: number
  /** How many of the model's layers: the last shard answers logits. */
  layers: number
}

export interface ComputeCost {
  /** One token through one layer (decode). */
  msPerLayer: number
  /** Each further row of a multi-row step (a prefill) or a batch, through one layer: far less than a decode step (the weights are read once). */
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

/** A machine's accelerator: batches of all its sessions and shards run one after another on it. */
export interface Machine {
  /** Virtual time (Date.now) when what it was given so far is computed. */
  busyUntil: number
  /**
   * A result computed without waiting (below): sent at `at`, it may not leave before `until`. The
   * link (sim/link.ts) holds the machine's writes of that instant until then.
   */
  hold: { at: number; until: number }
}

interface SimSession {
  state: number
  history: number[]
  closed: boolean
}

/**
 * A shard's runner. Steps go through the shipped continuous batcher (shared/batch.ts), as an
 * append runner's do: one-token steps of sessions that queue together run as one batch, whose
 * compute is one decode's (the weights are read once) plus a batched row's for each further row.
 * `batch.maxRows` 1 runs every step alone.
 */
export function modelRunner(
  shard: ShardEntry,
  shape: ModelShape,
  cost: ComputeCost,
  device: DeviceKind,
  machine: Machine,
  batch: BatchLimits = BATCH_DEFAULTS,
  computeInTime = false
): ShardRunner {
  const [a, b] = shard.layers
  const last = b === shape.layers
  const width = last ? shape.vocab : shape.width
  let open = 0
  const stats = { runs: 0, rows: 0, widest: 0, idleRows: 0 }
  const compute = (s: SimSession, input: HopInput): HopOutput => {
    const seq = 'tokens' in input ? input.tokens.length : input.seq
    const data = new Float32Array(seq * width)
    for (let p = 0; p < seq; p++) {
      if ('tokens' in input) s.state = mix(s.state, input.tokens[p])
      else {
        const bits = new Uint32Array(input.hidden.buffer, input.hidden.byteOffset + p * (input.hidden.byteLength / seq), input.hidden.byteLength / seq / 4)
        for (let i = 0; i < bits.length; i++) s.state = mix(s.state, bits[i])
      }
      s.state = mix(s.state, b)
      s.history.push(s.state)
      row(s.state, width, data, p * width)
    }
    return { data, seq, width, kind: last ? 'logits' : 'hidden' }
  }
  const batcher = new StepBatcher<SimSession, HopInput, HopOutput>(
    batch,
    async (steps) => {
      const rows = steps.reduce((n, x) => n + x.seq, 0)
      const now = Date.now()
      const done = Math.max(now, machine.busyUntil) + (b - a) * (cost.msPerLayer + (rows - 1) * cost.msPerPrefillRowLayer)
      machine.busyUntil = done
      // Alone on the shard, no step could join a batch while this one runs: answer at once and let the
      // link hold the reply until the compute is done (one event fewer per shard of a hop, most of a
      // swarm's). Otherwise run for the time it takes, so that the others' steps queue and batch.
      if (open <= 1 && !computeInTime) machine.hold = { at: now, until: done }
      else await new Promise((r) => setTimeout(r, Math.ceil(done - now))) // timers tick in whole ms: never sooner than the compute
      stats.runs++
      stats.rows += steps.length
      stats.widest = Math.max(stats.widest, steps.length)
      return steps.map((x) => compute(x.owner, x.input))
    },
    () => open
  )
  return {
    shard,
    device,
    batching: stats,
    open(): ShardSession {
      const s: SimSession = { state: mix(FNV, a), history: [], closed: false } // its history, hashed: its "KV cache"
      open++
      return {
        get length() {
          return s.history.length
        },
        async forward(input: HopInput): Promise<HopOutput> {
          if (s.closed) throw new Error('session closed')
          return await batcher.submit(s, input, 'tokens' in input ? input.tokens.length : input.seq)
        },
        truncate(n: number) {
          s.history = s.history.slice(0, n)
          s.state = n === 0 ? mix(FNV, a) : s.history[n - 1]
        },
        close() {
          if (!s.closed) open--
          s.closed = true
        }
      }
    },
    dispose: async () => {}
  }
}
