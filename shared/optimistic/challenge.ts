/**
 * One challenge of an optimistic claim, as one object: the watcher replays the rows up to the
 * disputed step and signs it (keeping each block's output); bisection over the per-layer
 * commitments both signed finds the first block where they part ways (dispute.ts); a referee
 * drawn from a hash of both receipts (so neither party picks it) re-executes that one block; the
 * reputation-weighted vote of the three decides, and the minority is slashed through the ledger
 * with its receipt as evidence: the accused (the claim is overturned) or the challenger (a
 * frivolous challenge costs it its stake, which is its bond). Where no block can be singled out
 * (a party timed out, shards without commitments, no referee able to run single blocks) the
 * referee replays the whole hop instead.
 */
import type { Capability } from '../protocol/capability.js'
import type { HopInput } from '../runner.js'
import { newSha256 } from '../hash.js'
import { logger } from '../log.js'
import type { Evidence } from '../ledger/types.js'
import type { ChallengeReport } from '../client/types.js'
import { decodeFingerprint, tailFingerprint, type Fingerprint } from '../verify/fingerprint.js'
import { disputeEvidence, type Opening } from '../verify/dispute.js'
import { mismatchEvidence, MIN_WITNESSES } from '../verify/evidence.js'
import { openReceipt } from '../verify/receipt.js'
import { tally, type Claim as Vote } from '../verify/vote.js'
import { prefixRows, type Claim, type HopClaim } from './claim.js'
import { holders, prefill, type BoardContext, type Prefilled } from './context.js'
import { execute, keptState, locate, reveal, type Party } from './dispute.js'

const log = logger('tessera:board')

export interface Disputed {
  claim: Claim
  /** Which hop of the claim, and which of its receipts does not match the watcher's replay. */
  index: number
  entry: HopClaim['entries'][number]
  watcher: Capability
  /** The hop's peers: never its referee. */
  involved: Set<string>
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
      session: `challenge-${d.claim.id}-${d.index}`,
      layers: this.hop.layers,
      input: this.prefix,
      keep: true
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

  /** Anyone holding the two receipts computes the same referee order. */
  private get draw(): number {
    const seed = newSha256().update(new TextEncoder().encode(this.d.claim.id)).update(this.d.entry.receipt).update(this.replay.receipt).digest()
    return new DataView(seed.buffer, seed.byteOffset).getUint32(0)
  }

  private get exclude(): Set<string> {
    return new Set([...this.d.involved, this.d.watcher.peer])
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
   * Block `layer` (the head when it is the hop's end) re-executed alone by a referee, on what
   * entered it: the hop's input for its first block, else block layer-1's output as the watcher
   * kept it (checked against the watcher's commitment, which the accused's agrees with).
   * Returns false when no referee could do it, so the whole hop is replayed instead.
   */
  private async refereeBlock(layer: number): Promise<boolean> {
    const [a, b] = this.hop.layers
    const { ctx, accused, challenger } = this
    // What entered the block, and what each party committed it put out (over the disputed step's rows).
    let input = this.prefix
    let claimed: { accused: Fingerprint; watcher: Fingerprint }
    try {
      const out = async (p: Party, full: Fingerprint): Promise<Fingerprint> =>
        tailFingerprint(layer === b ? full : decodeFingerprint((await this.opened(p, layer)).fp), this.positions)
      claimed = { accused: await out(accused, decodeFingerprint(accused.body.output)), watcher: await out(challenger, this.replay.fp) }
      if (layer > a) {
        const committed = decodeFingerprint((await this.opened(challenger, layer - 1)).fp)
        input = await keptState(ctx.dialer, challenger.cap!, { body: challenger.body, layer: layer - 1, committed, ms: ctx.revealMs })
      }
    } catch (err) {
      // Not held against the watcher: a state too large to keep (STATE_KEEP_BYTES) ends here too. The whole-hop replay still settles it.
      this.note(`block ${layer - 1}'s output could not be handed over: ${(err as Error).message}`)
      return false
    }
    // Holders of the block (of block b-1 for the head), in the drawn order; the next if one fails.
    const block = Math.min(layer, b - 1)
    const pool = (await ctx.peers())
      .filter((p) => p.layers[0] <= block && block < p.layers[1] && !this.exclude.has(p.peer) && !ctx.ledger.excluded(p.peer))
      .sort((x, y) => (x.peer < y.peer ? -1 : 1))
    for (let t = 0; t < Math.min(2, pool.length); t++) {
      const referee = pool[(this.draw + t) % pool.length]
      let part: Awaited<ReturnType<typeof execute>>
      try {
        part = await execute(ctx.dialer, referee, { root: this.d.claim.root, hop: this.hop.layers, layer, input, ms: ctx.revealMs })
      } catch (err) {
        log.info(`claim ${this.d.claim.id}: referee ${referee.peer.slice(-8)} could not re-execute block ${layer}: ${(err as Error).message}`)
        ctx.ledger.observe(referee.peer, false)
        continue
      }
      this.report.referee = referee.peer
      this.report.reexecuted = { layers: 1, of: b - a, what: layer === b ? 'head' : `block ${layer}` }
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
    const pool = await holders(ctx, this.hop.layers, this.exclude)
    if (pool.length === 0) {
      this.report.reason = 'no referee holds these layers'
      return
    }
    pool.sort((a, b) => (a.peer < b.peer ? -1 : 1))
    const referee = pool[this.draw % pool.length]
    const n = this.hop.layers[1] - this.hop.layers[0]
    this.report.referee = referee.peer
    this.report.reexecuted = { layers: n, of: n, what: 'the whole hop' }
    const r = await prefill(ctx, referee, { root: d.claim.root, session: `referee-${d.claim.id}-${d.index}`, layers: this.hop.layers, input: this.prefix })
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
    const loser = t.losers[0]
    const referee = votes[2].peer
    this.report.outcome = loser.peer === this.d.entry.peer ? 'overturned' : 'frivolous'
    const outcome = await this.ctx.ledger.report(evidence(loser, t.winner.find((v) => v.peer !== referee)!, t.winner))
    this.report.reason = outcome.reason
    if (outcome.slashed) this.report.slashed = { peer: loser.peer, amount: outcome.amount }
    const what = this.report.reexecuted?.what ?? 'nothing'
    const slash = outcome.slashed ? `slashed ${outcome.amount}` : `not slashed: ${outcome.reason}`
    log.info(
      `claim ${this.d.claim.id} hop [${this.hop.layers.join(',')}): ${this.report.outcome}, the referee re-executed ${what} (${loser.peer.slice(-8)} ${slash})`
    )
  }
}
