/**
 * Speculative sampling (client/draft.ts acceptSampled) keeps the target's distribution exactly,
 * and γ adapts (chooseGamma). First on toy distributions with many draws, where the test is
 * sharp enough to catch a plausible wrong rule (on rejection, draw from p instead of the
 * residual); then end to end on stories260K through the real client and a node in process,
 * an int4 copy drafting: many seeds sampled at temperature 1 with and without speculation, the
 * tokens at each position compared bin by bin.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { acceptSampled, chooseGamma, modelDraft } from '../../shared/client/draft.js'
import { drawFrom, samplingDistribution } from '../../shared/sampler.js'
import { mulberry32 } from '../../shared/rng.js'
import { buildModel } from '../../host/model-store.js'
import { buildStories, modelRunners, type ModelRunners } from '../helpers/memory-model.js'
import { memoryNet } from '../helpers/memory-net.js'
import { generateAll, memoryClient } from '../helpers/memory-client.js'
import { reference, stories } from '../helpers/reference.js'
import { tempDir } from '../helpers/paths.js'

/** A random distribution over `n` ids. */
function randomDist(n: number, rand: () => number, sharp = 1): Float64Array {
  const d = Float64Array.from({ length: n }, () => rand() ** sharp)
  const sum = d.reduce((a, b) => a + b, 0)
  return d.map((x) => x / sum)
}

/**
 * Observed counts against expected probabilities: the largest deviation in standard deviations
 * of a binomial count (a bin's count is Binomial(N, p) under the null hypothesis).
 */
function worstZ(counts: number[], probs: number[], n: number): number {
  return Math.max(...counts.map((c, i) => Math.abs(c - n * probs[i]) / Math.sqrt(Math.max(n * probs[i] * (1 - probs[i]), 1e-9))))
}

/** A wrong rule a reader might write: on rejection, draw afresh from p. */
function rejectToTarget(drafts: number[], q: Array<Float64Array | undefined>, p: Float64Array[], rand: () => number): { kept: number; tokens: number[] } {
  for (let j = 0; j < drafts.length; j++) {
    if (rand() * (q[j]?.[drafts[j]] ?? 1) < p[j][drafts[j]]) continue
    return { kept: j, tokens: [...drafts.slice(0, j), drawFrom(p[j], rand())] }
  }
  return { kept: drafts.length, tokens: [...drafts, drawFrom(p[drafts.length], rand())] }
}

describe('speculative sampling, the rule', () => {
  // A first-order chain over V ids: target p(·|prev) and draft q(·|prev), unlike each other.
  const V = 6
  const rand = mulberry32(7)
  const P = Array.from({ length: V }, () => randomDist(V, rand, 2))
  const Q = Array.from({ length: V }, () => randomDist(V, rand, 0.5))
  const START = 0
  const N = 100_000

  /** Generates two tokens after START by passes of γ = 2 under `rule`; returns the joint counts. */
  function joint(rule: typeof acceptSampled, seed: number): { counts: number[]; kept: number; drafted: number } {
    const r = mulberry32(seed)
    const counts = new Array(V * V).fill(0)
    let kept = 0
    let drafted = 0
    for (let t = 0; t < N; t++) {
      const out: number[] = []
      while (out.length < 2) {
        const prev = out.length === 0 ? START : out[out.length - 1]
        const g = 2 - out.length
        const drafts: number[] = []
        const q: Float64Array[] = []
        let ctx = prev
        for (let j = 0; j < g; j++) {
          q.push(Q[ctx])
          drafts.push(drawFrom(Q[ctx], r()))
          ctx = drafts[j]
        }
        const p = [P[prev], ...drafts.map((x) => P[x])]
        const v = rule(drafts, q, p, r)
        kept += v.kept
        drafted += g
        out.push(...v.tokens)
      }
      counts[out[0] * V + out[1]]++
    }
    return { counts, kept, drafted }
  }
  const exact = Array.from({ length: V * V }, (_, k) => P[START][Math.floor(k / V)] * P[Math.floor(k / V)][k % V])

  it(`leaves the joint distribution of two tokens exactly the target's (${N.toLocaleString('en')} generations, every one of ${V * V} outcomes within 5 σ)`, () => {
    const r = joint(acceptSampled, 1)
    expect(worstZ(r.counts, exact, N)).toBeLessThan(5)
    expect(r.kept / r.drafted).toBeGreaterThan(0.2) // drafts are kept, or the test shows nothing
    // The same test catches a rule that is wrong on rejection.
    expect(worstZ(joint(rejectToTarget, 1).counts, exact, N)).toBeGreaterThan(10)
  })

  it('treats a draft that chose for certain (no distribution) as a point mass: still exact', () => {
    const r = mulberry32(3)
    const counts = new Array(V).fill(0)
    for (let t = 0; t < N; t++) {
      const v = acceptSampled([2], [undefined], [P[START], P[2]], r)
      counts[v.tokens[0]]++
    }
    expect(worstZ(counts, Array.from(P[START]), N)).toBeLessThan(5)
  })

  it('chooses γ from the acceptance rate and the costs: long when drafts are kept and cheap, short when not', () => {
    expect(chooseGamma({ kept: 90, rejections: 10 }, 300, 1, 8)).toBe(8) // slow links, a good cheap draft
    expect(chooseGamma({ kept: 1, rejections: 20 }, 300, 10, 8)).toBe(1) // drafts rarely kept
    expect(chooseGamma({ kept: 90, rejections: 10 }, 10, 20, 8)).toBe(1) // the draft costs more than a pass
    const mid = chooseGamma({ kept: 60, rejections: 40 }, 100, 5, 8)
    expect(mid).toBeGreaterThan(1)
    expect(mid).toBeLessThan(8)
  })

  it('samplingDistribution is what the sampler draws from: temperature and top-p', () => {
    const logits = Float32Array.from([2, 1, 0, -1])
    const d = samplingDistribution(logits, { temperature: 1, topP: 1 })
    expect(d.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12)
    expect(d[0] / d[1]).toBeCloseTo(Math.E, 6)
    const nucleus = samplingDistribution(logits, { temperature: 1, topP: 0.7 })
    expect(Array.from(nucleus).filter((x) => x > 0).length).toBe(2)
  })
})

describe('speculative sampling through the client (stories260K, an int4 draft)', () => {
  let model: ModelRunners
  let draftModel: ModelRunners
  beforeAll(async () => {
    model = await modelRunners(await buildStories([]))
    const dir = tempDir('spec-draft')
    await buildModel(await stories(), dir, { source: 'stories260K.bin', dtype: 'int4' })
    draftModel = await modelRunners(dir)
  })
  afterAll(async () => {
    await model?.dispose()
    await draftModel?.dispose()
  })

  const SEEDS = 600
  const TOKENS = 3
  it(`samples the same distribution as without speculating: ${SEEDS} seeds each, at every position each token's count within 5 σ of the two arms' pooled rate`, async () => {
    const net = memoryNet(model)
    await net.add({ layers: [0, 5] })
    const draft = modelDraft((await draftModel.forPeer([0, 5])).runners)
    const prompt = reference()[0].prompt
    try {
      const arm = async (speculate: boolean): Promise<{ runs: number[][]; kept: number; drafted: number }> => {
        const runs: number[][] = []
        let kept = 0
        let drafted = 0
        const client = memoryClient(net, { draft })
        for (let seed = 1; seed <= SEEDS; seed++) {
          const r = await generateAll(client, { prompt, maxTokens: TOKENS, temperature: 1, seed, ...(speculate ? { speculate: { gamma: 2 } } : {}) })
          runs.push(r.tokens)
          kept += r.speculation?.kept ?? 0
          drafted += r.speculation?.drafted ?? 0
        }
        return { runs, kept, drafted }
      }
      const plain = await arm(false)
      const spec = await arm(true)
      expect(spec.drafted).toBeGreaterThan(0)
      expect(spec.kept).toBeGreaterThan(0) // the rule was exercised both ways: some drafts kept ...
      expect(spec.kept).toBeLessThan(spec.drafted) // ... and some rejected, the token drawn from the residual
      for (let pos = 0; pos < TOKENS; pos++) {
        const ids = new Set([...plain.runs, ...spec.runs].map((t) => t[pos]))
        for (const id of ids) {
          const a = plain.runs.filter((t) => t[pos] === id).length
          const b = spec.runs.filter((t) => t[pos] === id).length
          const rate = (a + b) / (2 * SEEDS)
          // The difference of two Binomial(SEEDS, rate) counts has variance 2 · SEEDS · rate · (1 − rate).
          const z = Math.abs(a - b) / Math.sqrt(2 * SEEDS * rate * (1 - rate) + 1e-9)
          expect(z, `position ${pos}, token ${id}: ${a} plain vs ${b} speculative`).toBeLessThan(5)
        }
      }
    } finally {
      draft.close()
      net.stop()
    }
  }, 300_000)
})
