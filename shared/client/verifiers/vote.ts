/**
 * The decision of the checked modes (redundant, spot): the step's answers are compared; if they
 * disagree a referee outside the dispute replays the slot, and the reputation-weighted majority
 * wins. Only a majority of at least two peers settles a dispute (and makes it provable to the
 * ledger): otherwise nothing is returned as valid. Each loser's receipt, with the winners' as
 * witnesses, is the evidence.
 */
import { VerificationError } from '../../errors.js'
import { logger } from '../../log.js'
import { compareFingerprints } from '../../verify/fingerprint.js'
import { mismatchEvidence, MIN_WITNESSES } from '../../verify/evidence.js'
import { tally } from '../../verify/vote.js'
import type { FaultReport, Verdict } from '../types.js'
import type { Answer, Decision, StepContext } from './verifier.js'

const log = logger('tessera:client:vote')

export async function vote(pool: Answer[], ctx: StepContext, kind: 'redundant' | 'spot'): Promise<Decision> {
  ctx.report.checks++
  let verdict: Verdict = 'agreed'
  let t = tally(pool)
  let referee: Answer | undefined
  if (!t.unanimous) {
    ctx.report.mismatches++
    verdict = 'overruled'
    referee = await ctx.referee(pool.map((a) => a.peer))
    if (referee !== undefined) t = tally([...pool, referee])
    if (t.winner.length < MIN_WITNESSES) {
      for (const a of pool) ctx.ban(a.peer)
      const who = pool.map((a) => a.peer.slice(-8)).join(', ')
      const why = referee === undefined ? 'no referee is available' : 'no majority formed'
      throw new VerificationError(`peers ${who} disagree on layers [${ctx.layers.join(',')}) at step ${ctx.step}, and ${why}: no result is returned`)
    }
    for (const loser of t.losers) await convict(ctx, kind, loser, t.winner)
  }
  for (const a of t.winner) ctx.report.vouch(a.peer, compareFingerprints(t.winner[0].fp, a.fp))
  // The primary's output goes on when it is among the winners (its cache is the one the next step continues).
  const used = t.winner.find((a) => a === pool[0]) ?? t.winner[0]
  const ran = referee === undefined ? pool : [...pool, referee]
  return { used, verdict, checkedBy: ran.map((a) => a.peer).filter((p) => p !== used.peer), losers: t.losers, ...(referee !== undefined ? { referee } : {}) }
}

/** Sends a loser's receipt, with the winners' as witnesses, to the ledger; bans the loser. */
async function convict(ctx: StepContext, kind: 'redundant' | 'spot', loser: Answer, winners: Answer[]): Promise<void> {
  ctx.ban(loser.peer)
  const witnesses = winners.map((w) => w.peer)
  const evidence = mismatchEvidence(kind, loser, winners, { layers: ctx.layers, step: ctx.step, session: ctx.session, witnesses })
  const fault: FaultReport = { step: ctx.step, layers: ctx.layers, accused: loser.peer, witnesses, reason: '', slashed: false, amount: 0 }
  try {
    Object.assign(fault, await ctx.ledger.report(evidence))
  } catch (err) {
    fault.reason = `could not report: ${(err as Error).message}`
  }
  const outcome = fault.slashed ? `slashed ${fault.amount}` : fault.reason
  log.info(
    `layers [${ctx.layers.join(',')}) step ${ctx.step}: ${loser.peer.slice(-8)} disagrees with ${witnesses.map((w) => w.slice(-8)).join(', ')}: ${outcome}`
  )
  ctx.report.faults.push(fault)
}
