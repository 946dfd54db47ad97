/**
 * Each verifier's decision table, directly: answers made up from seeded hidden states (two
 * answers agree when their rows are the same), a referee that answers as told, a ledger that
 * records what it is handed. No network, no runtime: the rules alone.
 */
import { describe, expect, it } from 'vitest'
import { fingerprint } from '../../shared/verify/fingerprint.js'
import { fillNormal, mulberry32 } from '../../shared/rng.js'
import { VerificationError } from '../../shared/errors.js'
import type { Evidence } from '../../shared/ledger/types.js'
import type { LedgerLink } from '../../shared/client/ledger-link.js'
import type { RemoteHop } from '../../shared/client/remote-hop.js'
import { SessionReport } from '../../shared/client/report.js'
import { normalizeVerification, verifierFor, type Answer, type OptimisticVerifier, type StepContext } from '../../shared/client/verifiers/index.js'

const SEQ = 2
const WIDTH = 64

/** Rows of hidden state from a seed: the same seed is the same output. */
function rows(seed: number): Float32Array {
  return fillNormal(new Float32Array(SEQ * WIDTH), mulberry32(seed), 1)
}

function answer(peer: string, seed: number, weight = 0.5): Answer {
  const data = rows(seed)
  const hop = { peer: { peer }, layers: [0, 2], device: 'cpu' } as unknown as RemoteHop
  return {
    hop,
    peer,
    weight,
    out: { data, seq: SEQ, width: WIDTH, kind: 'hidden', ms: 1, nodeMs: 1 },
    receipt: new TextEncoder().encode(`receipt of ${peer}`),
    fp: fingerprint(data, SEQ, WIDTH)
  }
}

interface Harness {
  ctx: StepContext
  reports: Evidence[]
  banned: string[]
  refereeAsked: string[][]
}

/** `matches`: a ledger that re-executes (the relay): it names the peers whose receipts match its own run. */
function harness(referee?: Answer, matches?: string[]): Harness {
  const reports: Evidence[] = []
  const banned: string[] = []
  const refereeAsked: string[][] = []
  const ledger: LedgerLink = {
    weight: () => 0.5,
    excluded: () => false,
    observe: () => {},
    report: async (e) => {
      reports.push(e)
      if (matches === undefined) return { slashed: true, amount: 50, reason: 'slashed' }
      const right = matches.includes(e.accused)
      return { slashed: !right, amount: right ? 0 : 50, reason: right ? 'the re-execution agrees with the accused' : 'slashed', matches }
    }
  }
  const ctx: StepContext = {
    layers: [0, 2],
    step: 3,
    session: 's1',
    position: 5,
    ledger,
    report: new SessionReport(),
    ban: (p) => {
      banned.push(p)
    },
    inputs: () => ({ tokens: [1, 2, 3, 4, 5, 6, 7], seq: 7 }),
    referee: async (involved) => {
      refereeAsked.push(involved)
      return referee
    }
  }
  return { ctx, reports, banned, refereeAsked }
}

const verifier = (mode: 'none' | 'redundant' | 'spot' | 'optimistic', random = () => 0): ReturnType<typeof verifierFor> =>
  verifierFor(normalizeVerification({ mode, k: 2, p: 0.2 }), random)

describe('none', () => {
  it('takes the primary as it is: unchecked, nobody compared, nothing reported', async () => {
    const v = verifier('none')
    expect({ lanes: v.lanes, recut: v.recut, sample: v.sample() }).toEqual({ lanes: 1, recut: true, sample: false })
    const h = harness()
    const d = await v.decide([answer('A', 1)], h.ctx)
    expect(d).toMatchObject({ verdict: 'unchecked', checkedBy: [], losers: [] })
    expect(d.used.peer).toBe('A')
    expect(h.ctx.report.checks).toBe(0)
  })
})

describe('redundant (k = 2): the vote', () => {
  const v = verifier('redundant')
  it('keeps k lanes in step and never re-cuts a slot', () => {
    expect({ lanes: v.lanes, recut: v.recut, sample: v.sample() }).toEqual({ lanes: 2, recut: false, sample: false })
  })

  it('agreeing lanes: agreed, the primary used, both vouched, no referee asked', async () => {
    const h = harness()
    const d = await v.decide([answer('A', 1), answer('B', 1)], h.ctx)
    expect(d.verdict).toBe('agreed')
    expect(d.used.peer).toBe('A')
    expect(d.checkedBy).toEqual(['B'])
    expect(d.losers).toEqual([])
    expect(h.refereeAsked).toEqual([])
    expect([...h.ctx.report.vouched].sort()).toEqual(['A', 'B'])
    expect(h.ctx.report).toMatchObject({ checks: 1, mismatches: 0 })
    expect(h.ctx.report.closest.minOverlap).toBe(1)
  })

  it('a lane outvoted with the referee: overruled, the loser banned and reported with two witnesses', async () => {
    const h = harness(answer('R', 1))
    const d = await v.decide([answer('A', 1), answer('B', 2)], h.ctx)
    expect(h.refereeAsked).toEqual([['A', 'B']])
    expect(d.verdict).toBe('overruled')
    expect(d.used.peer).toBe('A')
    expect(d.losers.map((a) => a.peer)).toEqual(['B'])
    expect(d.referee?.peer).toBe('R')
    expect(d.checkedBy.sort()).toEqual(['B', 'R'])
    expect(h.banned).toEqual(['B'])
    expect(h.reports).toHaveLength(1)
    expect(h.reports[0]).toMatchObject({ kind: 'redundant', accused: 'B', detail: { layers: [0, 2], step: 3, session: 's1', witnesses: ['A', 'R'] } })
    expect(h.reports[0].receipts).toHaveLength(3)
    expect(h.ctx.report.faults).toMatchObject([{ accused: 'B', witnesses: ['A', 'R'], slashed: true, amount: 50, step: 3 }])
    expect(h.ctx.report).toMatchObject({ checks: 1, mismatches: 1 })
    expect([...h.ctx.report.vouched].sort()).toEqual(['A', 'R'])
  })

  it("the primary outvoted: the other lane's output goes on", async () => {
    const h = harness(answer('R', 2))
    const d = await v.decide([answer('A', 1), answer('B', 2)], h.ctx)
    expect(d.used.peer).toBe('B')
    expect(d.losers.map((a) => a.peer)).toEqual(['A'])
    expect(h.reports.map((e) => e.accused)).toEqual(['A'])
  })

  it('a disagreement with no referee: VERIFICATION_FAILED, both banned, nobody convicted', async () => {
    const h = harness(undefined)
    const err = await v.decide([answer('A', 1), answer('B', 2)], h.ctx).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(VerificationError)
    expect((err as Error).message).toMatch(/disagree on layers \[0,2\) at step 3, and no referee is available: no result is returned/)
    expect(h.banned.sort()).toEqual(['A', 'B'])
    // The evidence went to the ledger (one that re-executes could have settled it), but nothing came of a 1-against-1.
    expect(h.ctx.report.faults).toEqual([])
  })

  it('a referee that agrees with neither: no majority, VERIFICATION_FAILED', async () => {
    const h = harness(answer('R', 3))
    await expect(v.decide([answer('A', 1), answer('B', 2)], h.ctx)).rejects.toThrow(/no majority formed/)
    expect(h.ctx.report.faults).toEqual([])
  })

  it('evidence carries every row the slot was fed, so the ledger can re-execute the hop', async () => {
    const h = harness(answer('R', 1))
    await v.decide([answer('A', 1), answer('B', 2)], h.ctx)
    expect(h.reports[0].inputs).toEqual({ tokens: [1, 2, 3, 4, 5, 6, 7], seq: 7 })
  })

  it('a colluding majority loses to the re-execution: the honest minority goes on, the pair is convicted, the honest peer untouched', async () => {
    // A is honest; B and the referee R share the same wrong weights (2 against 1).
    const h = harness(answer('R', 2), ['A'])
    const d = await v.decide([answer('A', 1), answer('B', 2)], h.ctx)
    expect(d.used.peer).toBe('A')
    expect(d.verdict).toBe('overruled')
    expect(d.losers.map((a) => a.peer).sort()).toEqual(['B', 'R'])
    expect(h.reports.map((e) => e.accused)).toEqual(['A', 'B', 'R'])
    expect(h.ctx.report.faults.map((f) => [f.accused, f.slashed])).toEqual([
      ['B', true],
      ['R', true]
    ])
    expect(h.banned.sort()).toEqual(['B', 'R'])
    expect([...h.ctx.report.vouched]).toEqual(['A'])
  })

  it('a 1-against-1 with no referee is settled by the re-execution', async () => {
    const h = harness(undefined, ['B'])
    const d = await v.decide([answer('A', 1), answer('B', 2)], h.ctx)
    expect(d.used.peer).toBe('B')
    expect(h.banned).toEqual(['A'])
  })

  it('when the re-execution matches nobody: VERIFICATION_FAILED, everyone banned', async () => {
    const h = harness(answer('R', 2), [])
    await expect(v.decide([answer('A', 1), answer('B', 2)], h.ctx)).rejects.toThrow(/as the relay's re-execution does/)
    expect([...new Set(h.banned)].sort()).toEqual(['A', 'B', 'R'])
  })

  it('when the ledger could not judge (its re-execution failed or was refused): VERIFICATION_FAILED, not the majority', async () => {
    const h = harness(answer('R', 1))
    h.ctx.ledger.report = async (e) => {
      h.reports.push(e)
      return { slashed: false, amount: 0, reason: 'the relay could not re-execute layers [0,2): queue full', unjudged: true }
    }
    // Two agreeing colluders against one: without the relay's word the two may be wrong.
    await expect(v.decide([answer('A', 1), answer('B', 2)], h.ctx)).rejects.toThrow(/could not re-execute the hop \(.*queue full\)/)
    expect([...new Set(h.banned)].sort()).toEqual(['A', 'B', 'R'])
  })

  it('reputation decides between groups of equal size', async () => {
    const h = harness(answer('R', 2, 0.05))
    // A (0.9) against B (0.2) and R (0.05): 0.9 > 0.25, so A's lone output wins, but one peer is no majority.
    await expect(v.decide([answer('A', 1, 0.9), answer('B', 2, 0.2)], h.ctx)).rejects.toThrow(VerificationError)
  })
})

describe('spot (p = 0.2)', () => {
  it('samples a step when the draw falls under p', () => {
    const draws = [0.1, 0.5, 0.19, 0.2]
    const v = verifier('spot', () => draws.shift()!)
    expect([v.sample(), v.sample(), v.sample(), v.sample()]).toEqual([true, false, true, false])
    expect({ lanes: v.lanes, recut: v.recut }).toEqual({ lanes: 1, recut: false })
  })

  it('an unsampled step (or one whose checker could not run) is unchecked; a sampled one is voted on', async () => {
    const v = verifier('spot')
    const h = harness(answer('R', 1))
    expect((await v.decide([answer('A', 1)], h.ctx)).verdict).toBe('unchecked')
    expect(h.ctx.report.checks).toBe(0)
    expect((await v.decide([answer('A', 1), answer('C', 1)], h.ctx)).verdict).toBe('agreed')
    const caught = await v.decide([answer('A', 2), answer('C', 1)], h.ctx)
    expect(caught.verdict).toBe('overruled')
    expect(caught.used.peer).toBe('C')
    expect(h.reports.map((e) => [e.kind, e.accused])).toEqual([['spot', 'A']])
    expect(h.ctx.report).toMatchObject({ checks: 2, mismatches: 1 })
  })
})

describe('optimistic', () => {
  it('marks every step pending and keeps its receipt, with the row it ends at, for the claim', async () => {
    const v = verifier('optimistic') as OptimisticVerifier
    expect({ lanes: v.lanes, recut: v.recut, sample: v.sample() }).toEqual({ lanes: 1, recut: false, sample: false })
    const h = harness()
    const first = await v.decide([answer('A', 1)], { ...h.ctx, position: 0 })
    const second = await v.decide([answer('A', 2)], { ...h.ctx, position: 2 })
    expect([first.verdict, second.verdict]).toEqual(['pending', 'pending'])
    expect(h.ctx.report.checks).toBe(0)
    const claim = v.claim({
      id: 'c1',
      root: 'r',
      window: 1000,
      slots: [
        { layers: [0, 2], inputs: { tokens: [1, 2, 3, 4] } },
        { layers: [2, 5], inputs: { tokens: [] } }
      ]
    })
    expect(claim.hops[0].entries.map((e) => [e.peer, e.end])).toEqual([
      ['A', 2],
      ['A', 4]
    ])
    expect(claim.hops[1].entries).toEqual([])
    expect(claim).toMatchObject({ id: 'c1', root: 'r', window: 1000 })
  })
})

describe('normalizeVerification', () => {
  it('fills in the defaults and refuses what cannot run', () => {
    expect(normalizeVerification(undefined)).toEqual({ mode: 'none', k: 2, p: 0.2, audit: 0, window: 30_000 })
    expect(() => normalizeVerification({ mode: 'redundant', audit: 2 })).toThrow(/audit must be a number in \[0, 1\]/)
    expect(() => normalizeVerification({ mode: 'redundant', k: 9 })).toThrow(/k must be an integer from 2 to 5/)
    expect(() => normalizeVerification({ mode: 'spot', p: 0 })).toThrow(/p must be in \(0, 1\]/)
    expect(() => normalizeVerification({ mode: 'vote' as 'none' })).toThrow(/mode must be one of none, redundant, spot, optimistic/)
  })
})
