/**
 * What a peer's memory budget allows, by one rule for native nodes and tabs (shared/plan.ts):
 * how many layers to take, and how many tokens of KV cache its sessions may hold beside them.
 * The cache cap is both what serve.ts enforces (BUSY past it) and what the record advertises as
 * kvRoom, so a client's routing sees the room the peer will really grant.
 */
import type { Manifest, ShardEntry } from '../manifest.js'
import { planMemory, type MemoryPlan } from '../plan.js'

export interface MemoryBudget {
  /** Bytes this peer may use for weights and KV cache (VRAM on CUDA, RAM on CPU, what a tab's visitor allows). */
  bytes: number
  /** Held back when choosing how many layers to take; default planMemory's (10% + 512 MiB, for a native runtime). */
  reserve?: number
}

const planFor = (m: Manifest, mem: MemoryBudget): MemoryPlan => planMemory(m.config, { dtype: m.dtype, budget: mem.bytes, reserve: mem.reserve })

/** Layers to take: as many as fit with room for one session at full context, at least one, at most `max`. */
export function layersThatFit(m: Manifest, mem: MemoryBudget, max = Infinity): number {
  return Math.min(max, Math.max(1, planFor(m, mem).layers))
}

/**
 * Tokens of KV cache, over all sessions, that fit in the budget beside the weights of `shards`
 * (their blocks, and the embedding or classifier when they hold the model's ends). The reserve
 * only sizes block selection, so a budget under the runtime's reserve still serves.
 */
export function cacheCap(m: Manifest, shards: ShardEntry[], mem: MemoryBudget): number {
  const plan = planFor(m, mem)
  const [a, b] = [shards[0].layers[0], shards[shards.length - 1].layers[1]]
  const n = b - a
  const weights = n * plan.weightsPerLayer + (a === 0 ? plan.embedding : 0) + (b === m.config.nLayers ? plan.classifier : 0)
  // planMemory sizes kvPerLayer for one session at full context (maxSeqLen tokens).
  const perToken = (n * plan.kvPerLayer) / m.config.maxSeqLen
  return Math.max(0, Math.floor((mem.bytes - weights) / perToken))
}
