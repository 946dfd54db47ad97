/**
 * A draft model for simulated speculative decoding: the client's real speculation code (the
 * draft's proposals, the route's γ + 1-row check, the rewinds, the adaptive γ) over a draft whose
 * quality is a parameter. It runs a shadow copy of the simulated model (the same deterministic
 * shards, at no virtual cost), so it knows the target's greedy token; it proposes that token with
 * probability α and another otherwise, each after `msPerToken` of virtual time on the client: what
 * a real draft of acceptance rate α and that speed would do (Leviathan et al. 2023's model, each
 * token kept independently).
 */
import { modelDraft, type Draft } from '../shared/client/draft.js'
import type { ShardEntry } from '../shared/manifest.js'
import { mulberry32 } from '../shared/rng.js'
import { modelRunner, type ModelShape } from './model.js'
import type { Draft as DraftModel } from './whatif.js'

export function simDraft(shape: ModelShape, bounds: number[], d: DraftModel, seed = 1): Draft & { close(): void } {
  const machine = { busyUntil: 0, hold: { at: -1, until: 0 } } // its own: the shadow's compute is free, its cost is msPerToken below
  const shards = bounds.slice(1).map((end, i): ShardEntry => ({ index: i, layers: [bounds[i], end], dtype: 'int4', files: [], sha256: '', bytes: 0 }))
  const shadow = modelDraft(shards.map((s) => modelRunner(s, shape, { msPerLayer: 0, msPerPrefillRowLayer: 0 }, 'cpu', machine)))
  const rand = mulberry32(seed)
  return {
    async propose(context, n, pick) {
      const target = await shadow.propose(context, n, pick)
      await new Promise((r) => setTimeout(r, Math.round(n * d.msPerToken)))
      // Past a wrong guess the shadow's own continuation stands: the target rejects it anyway.
      return target.map((t) => (rand() < d.acceptance ? t : (t + 1 + Math.floor(rand() * (shape.vocab - 1))) % shape.vocab))
    },
    close() {
      shadow.close()
    }
  }
}
