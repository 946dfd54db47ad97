/**
 * One challenge of an optimistic claim, as one object: the watcher replays the rows up to the
 * disputed step and signs it (keeping each block's output); bisection over the per-layer
 * commitments both signed finds the first block where they part ways (dispute.ts); a referee
 * drawn by the board (draw.ts: weighted by reputation, never a peer of the claim nor a watcher
 * that already vouched) re-executes that one block from the hop's own input, every block up to
 * and through it, so nothing it runs on comes from a party; the reputation-weighted vote of the
 * three decides, and the minority is slashed through the ledger with its receipt as evidence: the
 * accused (the claim is overturned) or the challenger (a frivolous challenge costs it its stake,
 * which is its bond). The hop's other watchers count too: a verdict their own re-executions
 * contradict as heavily decides nothing (undecided: the claim is never final, nobody is slashed).
 * Where no block can be singled out (a party timed out, shards without commitments, no referee
 * able to run single blocks) the referee replays the whole hop instead.
 */
import type { Capability } from '../protocol/capability.js'
import type { HopInput } from '../runner.js'
import { logger } from '../log.js'
import type { Evidence } from '../ledger/types.js'
import type { ChallengeReport } from '../client/types.js'
import { decodeFingerprint, tailFingerprint, type Fingerprint } from '../verify/fingerprint.js'
import { disputeEvidence, type Opening } from '../verify/dispute.js'
import { mismatchEvidence, MIN_WITNESSES } from '../verify/evidence.js'
import { openReceipt } from '../verify/receipt.js'
import { encodeInputs } from '../verify/reexec.js'
import { tally, type Claim as Vote } from '../verify/vote.js'
import { prefixRows, type Claim, type HopClaim } from './claim.js'
import { holders, prefill, type BoardContext, type Prefilled } from './context.js'
import { execute, locate, reveal, type Party } from './dispute.js'
import { hopSession } from '../client/picker.js'
import { weightedDraw } from './draw.js'

const log = logger('tessera:board')

/** A peer the ledger never saw still counts a little, as in the vote (verify/vote.ts). */
const MIN_WEIGHT = 0.05

export interface Disputed {
  claim: Claim
  /** Which hop of the claim, and which of its receipts does not match the watcher's replay. */
  index: number
  entry: HopClaim['entries'][number]
  watcher: Capability
  /** Every peer the claim names: never its referee. */
  involved: Set<string>
  /** The hop's other watchers that found this step right (they stand with the accused) or wrong (with the challenger). */
  vouchers: string[]
  seconds: string[]
}

type Ballot = Vote & { receipt: Uint8Array }

export class Challenge {
  private readonly hop: HopClaim
  private readonly report: ChallengeReport
  /** The hop's input rows up to the disputed step. */
  private readonly prefix: HopInput
  private replay!: Prefilled
  private accused!: Party
  private challenger!: Party
  /** Rows of the disputed step: what each vote compares. */
  private positions = 0
  private openings: Opening[] = []

  constructor(
    private readonly ctx: BoardContext,
    private readonly d: Disputed
  ) {
    this.hop = d.claim.hops[d.index]
    this.prefix = prefixRows(this.hop.inputs, d.entry.end)
    this.report = { layers: this.hop.layers, accused: d.entry.peer, challenger: d.watcher.peer, outcome: 'undecided', reason: '' }
  }

  async settle(): Promise<ChallengeReport> {
    const { ctx, d } = this
    this.replay = await prefill(ctx, d.watcher, {
      root: d.claim.root,
      session: hopSession(),
      layers: this.hop.layers,
      input: this.prefix
    })
    const acc = await openReceipt(d.entry.receipt)
    this.accused = { who: 'accused', cap: await ctx.find(d.entry.peer), body: acc }
    this.challenger = { who: 'watcher', cap: d.watcher, body: await openReceipt(this.replay.receipt) }
    this.positions = decodeFingerprint(acc.output).positions
    const located = await locate(ctx.dialer, {
      layers: this.hop.layers,
      accused: this.accused,
      watcher: this.challenger,
      positions: this.positions,
      revealMs: ctx.revealMs
    })
    const { openings, ...shown } = located
    this.openings = openings
    this.report.located = shown
    if (located.timedOut !== undefined) ctx.ledger.observe(located.timedOut, false)
    if (located.layer !== undefined && located.timedOut === undefined && (await this.refereeBlock(located.layer))) return this.report
    await this.refereeHop()
    return this.report
  }

  /** Never a referee: the claim's peers, the challenger, and the watchers that already stood with the accused. */
  private get exclude(): Set<string> {
    return new Set([...this.d.involved, this.d.watcher.peer, ...this.d.vouchers])
  }

  private note(more: string): void {
    this.report.located = { ...this.report.located!, note: `${this.report.located!.note}; ${more}` }
  }

  /** A party's opening of `layer`, revealed once. */
  private async opened(p: Party, layer: number): Promise<Opening> {
    const have = this.openings.find((o) => o.peer === p.body.peer && o.layer === layer)
    if (have !== undefined) return have
    const o = await reveal(this.ctx.dialer, p.cap!, { body: p.body, layer, first: this.hop.layers[0], ms: this.ctx.revealMs })
    this.openings.push(o)
    return o
  }

  /**
   * Block `layer` (the head when it is the hop's end) re-executed by a referee from the hop's own
   * input (bound by both receipts' input chain), every block up to and through it: nothing it
   * runs on is handed over by a party, so a watcher that crafted a state its fingerprint cannot
   * tell from the right one steers nothing. The openings of block layer-1 still go in the
   * evidence, to show both parties agreed on it. Returns false when no referee could do it, so
   * the whole hop is replayed instead.
   */
  private async refereeBlock(layer: number): Promise<boolean> {
    const [a, b] = this.hop.layers
    const { ctx, accused, challenger } = this
    const input = this.prefix
    // What each party committed the block put out (over the disputed step's rows).
    let claimed: { accused: Fingerprint; watcher: Fingerprint }
    try {
      const out = async (p: Party, full: Fingerprint): Promise<Fingerprint> =>
        tailFingerprint(layer === b ? full : decodeFingerprint((await this.opened(p, layer)).fp), this.positions)
      claimed = { accused: await out(accused, decodeFingerprint(accused.body.output)), watcher: await out(challenger, this.replay.fp) }
      if (layer > a) for (const p of [accused, challenger]) await this.opened(p, layer - 1)
    } catch (err) {
      this.note(`an opening of block ${layer} or ${layer - 1} could not be had: ${(err as Error).message}`)
      return false
    }
    // Holders of every block up to this one (to b-1 for the head), drawn by the board; the next if one fails.
    const last = Math.min(layer, b - 1)
    const holds = (p: Capability): boolean => p.layers[0] <= a && last < p.layers[1]
    const pool = (await ctx.peers()).filter((p) => holds(p) && !this.exclude.has(p.peer) && !ctx.ledger.excluded(p.peer))
    const blocks = last - a + 1
    for (const referee of weightedDraw(ctx, pool, 2)) {
      let part: Awaited<ReturnType<typeof execute>>
      try {
        part = await execute(ctx.dialer, referee, { root: this.d.claim.root, hop: this.hop.layers, layer, input, ms: ctx.revealMs * (blocks + 1) })
      } catch (err) {
        log.info(`claim ${this.d.claim.id}: referee ${referee.peer.slice(-8)} could not re-execute block ${layer}: ${(err as Error).message}`)
        ctx.ledger.observe(referee.peer, false)
        continue
      }
      this.report.referee = referee.peer
      this.report.reexecuted = { layers: blocks, of: b - a, what: layer === b ? 'head' : `block ${layer}` }
      const votes: Ballot[] = [
        this.ballot(accused.body.peer, claimed.accused, this.d.entry.receipt),
        this.ballot(challenger.body.peer, claimed.watcher, this.replay.receipt),
        this.ballot(referee.peer, tailFingerprint(decodeFingerprint(part.body.output), this.positions), part.statement)
      ]
      const openings = this.openings.filter((o) => o.layer === layer || o.layer === layer - 1)
      const detail = { claim: this.d.claim.id, layers: this.hop.layers, end: this.d.entry.end, layer, challenger: challenger.body.peer, referee: referee.peer }
      await this.vote(votes, (loser, winner) => disputeEvidence(loser, winner, part.statement, { layer, openings, detail }))
      return true
    }
    this.note(`no referee re-executed block ${layer} (${pool.length} hold it)`)
    return false
  }

  /** The fallback: a referee replays the whole hop up to the disputed step. */
  private async refereeHop(): Promise<void> {
    const { ctx, d } = this
    const [referee] = weightedDraw(ctx, await holders(ctx, this.hop.layers, this.exclude), 1)
    if (referee === undefined) {
      this.report.reason = 'no referee holds these layers'
      return
    }
    const n = this.hop.layers[1] - this.hop.layers[0]
    this.report.referee = referee.peer
    this.report.reexecuted = { layers: n, of: n, what: 'the whole hop' }
    const r = await prefill(ctx, referee, { root: d.claim.root, session: hopSession(), layers: this.hop.layers, input: this.prefix })
    const claimed = decodeFingerprint(this.accused.body.output)
    const detail = { claim: d.claim.id, layers: this.hop.layers, end: d.entry.end, challenger: d.watcher.peer, referee: referee.peer }
    await this.vote(
      [
        this.ballot(d.entry.peer, claimed, d.entry.receipt),
        this.ballot(d.watcher.peer, tailFingerprint(this.replay.fp, claimed.positions), this.replay.receipt),
        this.ballot(referee.peer, tailFingerprint(r.fp, claimed.positions), r.receipt)
      ],
      (loser, _winner, all) => mismatchEvidence('optimistic', loser, all, detail)
    )
  }

  /**
   * Why the hop's other watchers forbid the verdict, if they do: each re-executed the hop and found
   * the step right (with the accused) or wrong (with the challenger). A verdict must have more
   * reputation behind it than against it, counting them: a challenger and a referee in league
   * cannot outvote an accused that an independent watcher vouched for, nor a vouching watcher in
   * league with the accused outvote the challenger and the referee.
   */
  private watchersSplit(overturn: boolean, referee: string): string | undefined {
    const { accused, challenger } = this.report
    const withAccused = [accused, ...this.d.vouchers, ...(overturn ? [] : [referee])]
    const withChallenger = [...new Set([challenger, ...this.d.seconds, ...(overturn ? [referee] : [])])]
    const weight = (peers: string[]): number => peers.reduce((s, p) => s + Math.max(MIN_WEIGHT, this.ctx.ledger.weight(p)), 0)
    const [win, lose] = overturn ? [withChallenger, withAccused] : [withAccused, withChallenger]
    if (weight(win) > weight(lose)) return undefined
    return `the watchers disagree: ${win.length} for the verdict, ${lose.length} against it, no more weight behind it; nobody is slashed`
  }

  private ballot(peer: string, fp: Fingerprint, receipt: Uint8Array): Ballot {
    return { peer, fp, weight: this.ctx.ledger.weight(peer), receipt }
  }

  /** The reputation-weighted vote of accused, watcher and referee (in that order); the minority's evidence goes to the ledger. */
  private async vote(votes: Ballot[], evidence: (loser: Ballot, winner: Ballot, winners: Ballot[]) => Evidence): Promise<void> {
    const t = tally(votes)
    if (t.winner.length < MIN_WITNESSES) {
      this.report.reason = 'accused, challenger and referee all disagree'
      return
    }
    if (t.unanimous) {
      // Its own signed replay of the step agrees with the accused: only its audit (of the whole sequence) differed, which proves nothing here.
      this.report.outcome = 'frivolous'
      this.report.reason = "the challenge is void: the challenger's own signed replay agrees with the accused and the referee"
      return
    }
    const loser = t.losers[0]
    const referee = votes[2].peer
    const overturn = loser.peer === this.d.entry.peer
    const split = this.watchersSplit(overturn, referee)
    if (split !== undefined) {
      this.report.reason = split
      return
    }
    // The hop's rows from position 0 through the disputed step ride along, so that a relay able to re-execute them does so itself before any slash.
    const e: Evidence = { ...evidence(loser, t.winner.find((v) => v.peer !== referee)!, t.winner), inputs: encodeInputs(this.prefix) }
    const outcome = await this.ctx.ledger.report(e)
    this.report.reason = outcome.reason
    // The ledger could not judge now: the vote alone proves nothing, nothing is decided.
    if (!outcome.slashed && outcome.unjudged === true) {
      this.report.reason = `the ledger could not re-execute the hop, so the vote decides nothing: ${outcome.reason}`
      return
    }
    // The ledger re-executed the rows and found the one outvoted right: the vote was captured, nothing is decided.
    if (!outcome.slashed && outcome.matches?.includes(loser.peer) === true) {
      this.report.reason = `the ledger's re-execution agrees with ${loser.peer.slice(-8)}, not with the vote: ${outcome.reason}`
      return
    }
    this.report.outcome = overturn ? 'overturned' : 'frivolous'
    if (outcome.slashed) this.report.slashed = { peer: loser.peer, amount: outcome.amount }
    const what = this.report.reexecuted?.what ?? 'nothing'
    const slash = outcome.slashed ? `slashed ${outcome.amount}` : `not slashed: ${outcome.reason}`
    log.info(
      `claim ${this.d.claim.id} hop [${this.hop.layers.join(',')}): ${this.report.outcome}, the referee re-executed ${what} (${loser.peer.slice(-8)} ${slash})`
    )
  }
}
