/**
 * Which run of shards a node should serve (Petals' block selection), for native nodes and
 * tabs alike.
 */
import type { Capability } from '../protocol/capability.js'
import type { Manifest, ShardEntry } from '../manifest.js'
import { coverage } from '../route/route.js'
import { ConfigError } from '../errors.js'

/**
 * How many peers will serve each layer once the moves under way are done: a moving peer counts
 * where it goes (its `moving`), not where it is. What block selection and rebalancing decide on:
 * at 1,000 simulated peers, counting only where peers are drew most natives that checked within
 * one load time to the same gap, and coverage swung (npm run bench -- simulate).
 */
export function plannedCoverage(peers: Capability[], nLayers: number): number[] {
  return coverage(
    peers.map((p) => (p.moving === undefined ? p : { ...p, layers: p.moving })),
    nLayers
  )
}

/**
 * Block selection: the window of consecutive shards, at most `fit` layers (at least one
 * shard), whose least-covered layer is covered least by the other peers (moves under way
 * counted where they go); ties go to the longer window, then the earlier one.
 */
export function chooseShards(m: Manifest, peers: Capability[], fit: number, cov = plannedCoverage(peers, m.config.nLayers)): ShardEntry[] {
  let best: ShardEntry[] = [m.shards[0]]
  let bestScore = Infinity
  for (let i = 0; i < m.shards.length; i++) {
    for (let j = i; j < m.shards.length; j++) {
      const run = m.shards.slice(i, j + 1)
      const [a, b] = [run[0].layers[0], run[run.length - 1].layers[1]]
      if (b - a > fit && j > i) break
      const score = Math.min(...cov.slice(a, b)) * 1e6 - (b - a)
      if (score < bestScore) {
        bestScore = score
        best = run
      }
      if (b - a > fit) break
    }
  }
  return best
}

/** The shards that exactly make up `layers`; refuses ranges that cut a shard. */
export function shardsFor(m: Manifest, [a, b]: [number, number]): ShardEntry[] {
  const inside = m.shards.filter((s) => s.layers[0] >= a && s.layers[1] <= b)
  if (inside.length === 0 || inside[0].layers[0] !== a || inside[inside.length - 1].layers[1] !== b) {
    const bounds = [0, ...m.shards.map((s) => s.layers[1])].join(', ')
    throw new ConfigError(`layers ${a}-${b} do not fall on shard boundaries (${bounds}); pick a range between two of them or rebuild the model with other cuts`)
  }
  return inside
}
