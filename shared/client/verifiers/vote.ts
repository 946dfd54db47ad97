/**
 * The decision of the checked modes (redundant, spot): the step's answers are compared; if they
 * disagree a referee outside the dispute replays the slot, and the evidence goes to the ledger.
 *
 * Who is right is not a matter of numbers where it can be helped: two peers with the same wrong
 * weights outvote one honest peer. So the evidence carries every row the hop was fed, and a
 * ledger that can re-execute the hop (the relay holds the shards) says whose receipts match its
 * own computation (`matches`): those answers win, whoever has the majority, and everyone else is
 * convicted. Only where the ledger cannot re-execute does the reputation-weighted majority decide,
 * and then only a majority of at least two peers (a referee beside one lane): otherwise nothing is
 * returned as valid.
 */
import { VerificationError } from '../../errors.js'
import { logger } from '../../log.js'
import { compareFingerprints } from '../../verify/fingerprint.js'
import { mismatchEvidence, MIN_WITNESSES } from '../../verify/evidence.js'
import { tally } from '../../verify/vote.js'
import type { SlashOutcome } from '../ledger-link.js'
import type { FaultReport, Verdict } from '../types.js'
import type { Answer, Decision, StepContext } from './verifier.js'

const log = logger('tessera:client:vote')

type Kind = 'redundant' | 'spot'

export async function vote(pool: Answer[], ctx: StepContext, kind: Kind): Promise<Decision> {
  ctx.report.checks++
  let t = tally(pool)
  if (t.unanimous) return settle(pool, t.winner, [], 'agreed', undefined, ctx)
  ctx.report.mismatches++
  const referee = await ctx.referee(pool.map((a) => a.peer))
  const all = referee === undefined ? pool : [...pool, referee]
  t = tally(all)
  // Accuse the minority first (or, with no majority, everyone but the primary): the ledger re-executes, or judges by witnesses.
  const side = t.winner.length > 0 ? t.winner : [pool[0]]
  const accused = all.filter((a) => !side.includes(a))
  const first = await Promise.all(accused.map(async (a) => ({ a, outcome: await report(ctx, kind, a, side) })))
  const matches = first.find((r) => r.outcome.matches !== undefined)?.outcome.matches
  if (matches !== undefined) {
    // The ledger ran the hop itself: its result decides.
    const right = all.filter((a) => matches.includes(a.peer))
    const wrong = all.filter((a) => !matches.includes(a.peer))
    for (const r of first) if (wrong.includes(r.a)) convicted(ctx, r.a, side, r.outcome)
    // The majority was wrong: convict it on the re-execution's word, with the right answers as witnesses.
    for (const a of wrong.filter((w) => !accused.includes(w))) convicted(ctx, a, right, await report(ctx, kind, a, right))
    if (right.length === 0) {
      for (const a of all) ctx.ban(a.peer)
      throw new VerificationError(
        `no peer computed layers [${ctx.layers.join(',')}) at step ${ctx.step} as the relay's re-execution does: no result is returned`
      )
    }
    return settle(pool, right, wrong, 'overruled', referee, ctx)
  }
  // The ledger meant to re-execute and could not: a majority is no proof (two colluders are one), so nothing is returned.
  if (first.some((r) => r.outcome.unjudged === true)) {
    for (const a of all) ctx.ban(a.peer)
    throw new VerificationError(
      `peers disagree on layers [${ctx.layers.join(',')}) at step ${ctx.step} and the relay could not re-execute the hop (${first.find((r) => r.outcome.unjudged === true)!.outcome.reason}): no result is returned`
    )
  }
  if (t.winner.length < MIN_WITNESSES) {
    for (const a of all) ctx.ban(a.peer)
    const who = pool.map((a) => a.peer.slice(-8)).join(', ')
    const why = referee === undefined ? 'no referee is available' : 'no majority formed'
    throw new VerificationError(`peers ${who} disagree on layers [${ctx.layers.join(',')}) at step ${ctx.step}, and ${why}: no result is returned`)
  }
  for (const r of first) convicted(ctx, r.a, t.winner, r.outcome)
  return settle(pool, t.winner, t.losers, 'overruled', referee, ctx)
}

/** The winners vouched for; the primary's output goes on when it is among them (its cache is the one the next step continues). */
function settle(pool: Answer[], winner: Answer[], losers: Answer[], verdict: Verdict, referee: Answer | undefined, ctx: StepContext): Decision {
  for (const a of winner) ctx.report.vouch(a.peer, compareFingerprints(winner[0].fp, a.fp))
  const used = winner.find((a) => a === pool[0]) ?? winner[0]
  const ran = referee === undefined ? pool : [...pool, referee]
  return { used, verdict, checkedBy: ran.map((a) => a.peer).filter((p) => p !== used.peer), losers, ...(referee !== undefined ? { referee } : {}) }
}

/** Sends the accused's receipt, the others' as witnesses and the hop's rows (for a re-execution) to the ledger. */
async function report(ctx: StepContext, kind: Kind, accused: Answer, witnesses: Answer[]): Promise<SlashOutcome> {
  const detail = { layers: ctx.layers, step: ctx.step, session: ctx.session, witnesses: witnesses.map((w) => w.peer) }
  const evidence = { ...mismatchEvidence(kind, accused, witnesses, detail), inputs: ctx.inputs() }
  try {
    return await ctx.ledger.report(evidence)
  } catch (err) {
    return { slashed: false, amount: 0, reason: `could not report: ${(err as Error).message}`, unjudged: true }
  }
}

/** A loser: banned, and what the ledger made of the evidence against it on record. */
function convicted(ctx: StepContext, loser: Answer, winners: Answer[], outcome: SlashOutcome): void {
  ctx.ban(loser.peer)
  const witnesses = winners.map((w) => w.peer)
  const fault: FaultReport = {
    step: ctx.step,
    layers: ctx.layers,
    accused: loser.peer,
    witnesses,
    reason: outcome.reason,
    slashed: outcome.slashed,
    amount: outcome.amount
  }
  const result = fault.slashed ? `slashed ${fault.amount}` : fault.reason
  log.info(
    `layers [${ctx.layers.join(',')}) step ${ctx.step}: ${loser.peer.slice(-8)} disagrees with ${witnesses.map((w) => w.slice(-8)).join(', ')}: ${result}`
  )
  ctx.report.faults.push(fault)
}
