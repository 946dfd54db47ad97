/**
 * The audit of one hop of a claim: watchers drawn independently (draw.ts) each re-execute the hop
 * over the whole sequence in one prefill and compare every step's fingerprint with what the hop's
 * peers signed. The first step a watcher finds wrong is challenged (challenge.ts); the watchers
 * that found it right vouch for the accused in that challenge's vote. A hop is clean only when a
 * watcher re-executed it and every challenge of it went the accused's way; one nobody could
 * re-execute is unaudited, and its claim can never be final.
 */
import type { Capability } from '../protocol/capability.js'
import type { Settlement, ChallengeReport } from '../client/types.js'
import { compareFingerprints, decodeFingerprint, fingerprint, type Fingerprint } from '../verify/fingerprint.js'
import type { ReceiptBody } from '../verify/receipt.js'
import { Challenge } from './challenge.js'
import { sliceRows, type Claim } from './claim.js'
import { holders, prefill, type BoardContext, type Prefilled } from './context.js'
import { hopSession } from '../client/picker.js'
import { weightedDraw } from './draw.js'

export interface AuditOf {
  claim: Claim
  /** Which hop of the claim. */
  index: number
  /** The hop's receipts, opened and checked when the claim was posted (claim.ts checkClaim). */
  bodies: ReceiptBody[]
  /** How many watchers to draw. */
  watchers: number
  /** A claim taken up again after a restart waits for watchers and a referee to (re)appear, up to this long. */
  waitMs: number
  /** Where the audit's outcome goes as soon as it is known (a challenge may outlast the window). */
  audits: Settlement['audits']
}

/** clean: re-executed and right; overturned: proven wrong; unverified: not re-executed, or a challenge left undecided. */
export type HopVerdict = 'clean' | 'overturned' | 'unverified'

/** Audits one hop; returns its verdict and the challenges it led to. */
export async function auditHop(ctx: BoardContext, a: AuditOf): Promise<{ verdict: HopVerdict; challenges: ChallengeReport[] }> {
  const hop = a.claim.hops[a.index]
  // No peer the claim names watches or referees any of its hops: the client chose them all.
  const involved = new Set(a.claim.hops.flatMap((h) => h.entries.map((e) => e.peer)))
  let pool = await holders(ctx, hop.layers, involved)
  // After a restart peers re-announce over a few seconds: wait for a watcher and a referee (or
  // as long as waitMs), so a dispute does not end undecided for want of one.
  for (const until = Date.now() + a.waitMs; pool.length < 2 && Date.now() < until; ) {
    await ctx.sleep(500)
    pool = await holders(ctx, hop.layers, involved)
  }
  const drawn = weightedDraw(ctx, pool, a.watchers)
  const challenges: ChallengeReport[] = []
  if (drawn.length === 0) {
    a.audits.push({ layers: hop.layers, ok: false, note: 'no watcher holds these layers: the hop is unaudited' })
    return { verdict: 'unverified', challenges }
  }
  const runs = await Promise.all(
    drawn.map(async (w) => {
      try {
        return { w, full: await prefill(ctx, w, { root: a.claim.root, session: hopSession(), layers: hop.layers, input: hop.inputs }) }
      } catch (err) {
        a.audits.push({ layers: hop.layers, watcher: w.peer, ok: false, note: `audit failed: ${(err as Error).message}` })
        return undefined
      }
    })
  )
  let watching = runs.filter((r): r is { w: Capability; full: Prefilled } => r !== undefined)
  if (watching.length === 0) return { verdict: 'unverified', challenges }
  for (const [j, e] of hop.entries.entries()) {
    const claimed = decodeFingerprint(a.bodies[j].output)
    const seen = watching.map((r) => {
      const rows = sliceRows(r.full.out, e.end - claimed.positions, e.end)
      const fp: Fingerprint = fingerprint(rows.data, rows.seq, rows.width)
      return { ...r, fp, match: compareFingerprints(claimed, fp).verdict === 'match' }
    })
    const against = seen.filter((s) => !s.match)
    if (against.length === 0) continue
    for (const s of seen) {
      const note = s.match ? `step ending at row ${e.end} matches: it vouches for the accused` : `step ending at row ${e.end} does not match`
      a.audits.push({ layers: hop.layers, watcher: s.w.peer, ok: s.match, note })
    }
    const challenge = await new Challenge(ctx, {
      claim: a.claim,
      index: a.index,
      entry: e,
      watcher: against[0].w,
      involved,
      vouchers: seen.filter((s) => s.match).map((s) => s.w.peer),
      seconds: against.slice(1).map((s) => s.w.peer)
    }).settle()
    challenges.push(challenge)
    if (challenge.outcome === 'overturned') return { verdict: 'overturned', challenges }
    if (challenge.outcome === 'undecided') return { verdict: 'unverified', challenges }
    // Frivolous: the watchers that found this step wrong lost; the others audit the steps left.
    watching = seen.filter((s) => s.match)
    if (watching.length === 0) {
      const left = hop.entries.length - j - 1
      if (left === 0) return { verdict: 'clean', challenges }
      a.audits.push({ layers: hop.layers, ok: false, note: `no watcher left to audit the ${left} step(s) after row ${e.end}` })
      return { verdict: 'unverified', challenges }
    }
  }
  for (const r of watching) a.audits.push({ layers: hop.layers, watcher: r.w.peer, ok: true, note: `all ${hop.entries.length} steps match` })
  return { verdict: 'clean', challenges }
}
