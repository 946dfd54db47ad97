/**
 * A watcher's audit of one hop of a claim: it re-executes the hop over the whole sequence in one
 * prefill and compares every step's fingerprint with what the hop's peers signed. The first step
 * that does not match is challenged (challenge.ts).
 */
import type { Settlement, ChallengeReport } from '../client/types.js'
import { compareFingerprints, decodeFingerprint, fingerprint } from '../verify/fingerprint.js'
import { openReceipt } from '../verify/receipt.js'
import { Challenge } from './challenge.js'
import { checkInputs, sliceRows, type Claim } from './claim.js'
import { holders, prefill, type BoardContext } from './context.js'

export interface AuditOf {
  claim: Claim
  /** Which hop of the claim. */
  index: number
  /** A claim taken up again after a restart waits for a watcher and a referee to (re)appear, up to this long. */
  waitMs: number
  /** Where the audit's outcome goes as soon as it is known (a challenge may outlast the window). */
  audits: Settlement['audits']
}

/** Audits one hop; returns the challenge a mismatch led to, if any. */
export async function auditHop(ctx: BoardContext, a: AuditOf): Promise<ChallengeReport | undefined> {
  const hop = a.claim.hops[a.index]
  const bodies = await Promise.all(hop.entries.map(async (e) => await openReceipt(e.receipt)))
  checkInputs(hop, bodies)
  const involved = new Set(hop.entries.map((e) => e.peer))
  let watchers = await holders(ctx, hop.layers, involved)
  // After a restart peers re-announce over a few seconds: wait for a watcher and a referee (or
  // as long as waitMs), so a dispute does not end undecided for want of one.
  for (const until = Date.now() + a.waitMs; watchers.length < 2 && Date.now() < until; ) {
    await ctx.sleep(500)
    watchers = await holders(ctx, hop.layers, involved)
  }
  if (watchers.length === 0) {
    a.audits.push({ layers: hop.layers, ok: true, note: 'no watcher holds these layers' })
    return
  }
  const watcher = watchers[Math.floor(ctx.random() * watchers.length)]
  const full = await prefill(ctx, watcher, { root: a.claim.root, session: `audit-${a.claim.id}-${a.index}`, layers: hop.layers, input: hop.inputs })
  for (const [j, e] of hop.entries.entries()) {
    const claimed = decodeFingerprint(bodies[j].output)
    const rows = sliceRows(full.out, e.end - claimed.positions, e.end)
    if (compareFingerprints(claimed, fingerprint(rows.data, rows.seq, rows.width)).verdict === 'match') continue
    a.audits.push({ layers: hop.layers, watcher: watcher.peer, ok: false, note: `step ending at row ${e.end} does not match` })
    return await new Challenge(ctx, { claim: a.claim, index: a.index, entry: e, watcher, involved }).settle()
  }
  a.audits.push({ layers: hop.layers, watcher: watcher.peer, ok: true, note: `all ${hop.entries.length} steps match` })
}
