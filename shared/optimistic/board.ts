/**
 * Optimistic verification's claim board: a generation served by one peer per hop is accepted at
 * once and posted here as a claim (the receipts each hop signed, and the inputs each hop was
 * fed). Until its window closes, watchers (other peers holding the same layers, drawn by the
 * audit policy) re-execute each hop over the whole sequence in one prefill and compare every
 * step's fingerprint. On a mismatch, bisection over the per-layer commitments both parties
 * signed finds the first layer where they part ways (a party that does not answer a reveal in
 * time loses it), and the challenge is settled by a referee drawn from the receipts themselves
 * (so neither party picks it); the minority of the three is slashed
 * through the ledger with its receipt as evidence: the accused (the claim is overturned) or the
 * challenger (a frivolous challenge costs it its stake, which is its bond). A claim nobody
 * overturns within its window is final.
 *
 * The board lives with the relay in the embedded setup; it needs only a dialer, the peers and a
 * ledger link, so it runs anywhere the client does.
 */
import type { Capability } from '../protocol/capability.js'
import { seqOf, type HopInput, type HopOutput } from '../runner.js'
import { HopError, InputError, TesseraError } from '../errors.js'
import { bytesToHex, newSha256 } from '../hash.js'
import { logger } from '../log.js'
import { compareFingerprints, decodeFingerprint, fingerprint, tailFingerprint, type Fingerprint } from '../verify/fingerprint.js'
import { bytesOf } from '../protocol/infer.js'
import type { Evidence } from '../ledger/types.js'
import { disputeEvidence, type Opening } from '../verify/dispute.js'
import { execute, keptState, locate, reveal, type Party } from './dispute.js'
import { mismatchEvidence, MIN_WITNESSES } from '../verify/evidence.js'
import { chainRows, EMPTY_CHAIN, openReceipt } from '../verify/receipt.js'
import { tally, type Claim as Vote } from '../verify/vote.js'
import type { LedgerLink } from '../client/ledger-link.js'
import { openRemoteHop, type Dialer, type HopTimeouts } from '../client/remote-hop.js'
import { serversOf, DEFAULT_COSTS } from '../route/route.js'
import type { ChallengeReport, Settlement } from '../client/types.js'

const log = logger('tessera:board')

/** One hop of a claim: who computed which steps (each receipt's output ends at row `end`), and every row it was fed. */
export interface HopClaim {
  layers: [number, number]
  entries: Array<{ peer: string, receipt: Uint8Array, end: number }>
  inputs: HopInput
}

export interface Claim {
  id: string
  root: string
  /** ms during which the claim may be challenged. */
  window: number
  hops: HopClaim[]
}

export interface BoardOptions {
  /** How long a party has to answer each reveal of a dispute (ms; default 5000). */
  revealMs?: number
  dialer: Dialer
  peers: () => Promise<Capability[]>
  /** Finds a peer's record even when it is left out of `peers` (blacklisted meanwhile); default: search `peers`. */
  find?: (peer: string) => Promise<Capability | undefined>
  ledger: LedgerLink
  timeouts: HopTimeouts
  /** Audit policy: the chance that a hop of a claim is audited (1 = every hop). */
  auditRate?: number
  random?: () => number
  /** Settled claims kept in memory for GET /api/claims/:id (the store keeps them all). */
  keep?: number
  /** Where claims outlive a restart (relay/claims-sqlite.ts); without one they live in memory only. */
  store?: ClaimStore
  /** How long a resumed claim's audit waits for a watcher and a referee to (re)appear (ms; default 60000). */
  resumeWaitMs?: number
}

/** A claim as a store keeps it. */
export interface StoredClaim { claim: Claim, submittedAt: number, status: ClaimStatus['status'], settlement?: Settlement, webhook?: string }

export interface ClaimStore {
  put (claim: Claim, submittedAt: number): void
  settle (s: Settlement): void
  webhook (id: string, url: string): void
  get (id: string): StoredClaim | undefined
  /** Claims posted and never settled: a restart cut their audits short. */
  pending (): StoredClaim[]
}

/** Where a client posts its optimistic claims: the relay's board in-process, or over HTTP (claim-sink.ts). */
export interface ClaimSink {
  submit (claim: Claim, rerun?: (challenges: ChallengeReport[]) => Promise<number[]>): Promise<Settlement>
}

export interface ClaimStatus { claim: string, status: 'pending' | 'final' | 'overturned', window: number, submittedAt: number, settlement?: Settlement }

export class ClaimBoard implements ClaimSink {
  private readonly claims = new Map<string, ClaimStatus>()
  private readonly waiters = new Map<string, Array<(s: Settlement) => void>>()
  private readonly hooks = new Map<string, string>()
  private readonly closing = new AbortController()
  private readonly random: () => number

  constructor (private readonly o: BoardOptions) {
    this.random = o.random ?? Math.random
  }

  /**
   * Posts a claim; resolves when it is overturned (as soon as proven, after `rerun` has produced
   * the corrected tokens) or final (when its window closes).
   */
  async submit (claim: Claim, rerun?: (challenges: ChallengeReport[]) => Promise<number[]>): Promise<Settlement> {
    if (this.claims.has(claim.id) || this.o.store?.get(claim.id) !== undefined) throw new InputError(`claim ${claim.id} was already posted`)
    const submittedAt = Date.now()
    this.o.store?.put(claim, submittedAt)
    return await this.run(claim, submittedAt, false, rerun)
  }

  /**
   * Takes up the claims a previous run of the board accepted and never settled (the relay
   * restarted): their windows go on from when they were posted, and one whose window passed
   * meanwhile settles when its audit ends, not before: it was never audited. Corrected tokens
   * are not regenerated for them (the client that could is gone); webhooks are sent.
   */
  resume (): number {
    const pending = this.o.store?.pending() ?? []
    for (const p of pending) {
      if (this.claims.has(p.claim.id)) continue
      if (p.webhook !== undefined) this.hooks.set(p.claim.id, p.webhook)
      this.run(p.claim, p.submittedAt, true).catch((err: Error) => { log.warn(`claim ${p.claim.id}: ${err.message}`) })
    }
    if (pending.length > 0) log.info(`resumed ${pending.length} pending claim(s)`)
    return pending.length
  }

  /** POST the claim's settlement to `url` once it settles (at once if it has). */
  notify (id: string, url: string): void {
    const c = this.get(id)
    if (c === undefined) throw new InputError(`no claim ${id} on this board`)
    this.o.store?.webhook(id, url)
    if (c.settlement !== undefined) void postWebhook(url, c.settlement)
    else this.hooks.set(id, url)
  }

  private async run (claim: Claim, submittedAt: number, resumed: boolean, rerun?: (challenges: ChallengeReport[]) => Promise<number[]>): Promise<Settlement> {
    this.claims.set(claim.id, { claim: claim.id, status: 'pending', window: claim.window, submittedAt })
    this.trim()
    const audits: Settlement['audits'] = []
    const challenges: ChallengeReport[] = []
    const settle = async (status: Settlement['status']): Promise<Settlement> => {
      const s: Settlement = { claim: claim.id, status, afterMs: Date.now() - submittedAt, audits, challenges }
      if (status === 'overturned' && rerun !== undefined) {
        try { s.tokens = await rerun(challenges) } catch (err) { log.warn(`claim ${claim.id}: could not regenerate the corrected tokens: ${(err as Error).message}`) }
      }
      const entry = this.claims.get(claim.id)
      if (entry !== undefined && entry.status === 'pending') {
        entry.status = status
        entry.settlement = s
        if (!this.closing.signal.aborted) this.o.store?.settle(s)
        for (const w of this.waiters.get(claim.id) ?? []) w(s)
        this.waiters.delete(claim.id)
        const hook = this.hooks.get(claim.id)
        this.hooks.delete(claim.id)
        if (hook !== undefined) void postWebhook(hook, s)
      }
      return entry?.settlement ?? s
    }
    // Timers may fire a millisecond early by the wall clock: a claim is never final before its window.
    const windowEnds = (async (): Promise<'window'> => {
      while (Date.now() - submittedAt < claim.window && !this.closing.signal.aborted) await this.sleep(claim.window - (Date.now() - submittedAt) + 1)
      return 'window'
    })()
    const audit = (async (): Promise<'overturned' | 'clean'> => {
      for (const [i, hop] of claim.hops.entries()) {
        if (this.random() >= (this.o.auditRate ?? 1)) { audits.push({ layers: hop.layers, ok: true, note: 'not sampled by the audit policy' }); continue }
        const r = await this.auditHop(claim, i, hop, audits, challenges, resumed).catch((err: Error) => {
          audits.push({ layers: hop.layers, ok: false, note: `audit failed: ${err.message}` })
          return 'clean' as const
        })
        if (r === 'overturned') return r
      }
      return 'clean'
    })()
    // A proven fault ends the claim at once; otherwise it is final when the window closes
    // (an audit still running then came too late: that is the optimistic bargain).
    const first = resumed && Date.now() - submittedAt >= claim.window ? await audit : await Promise.race([audit, windowEnds])
    // A board closed meanwhile settles nothing: its store keeps the claim pending for the next run to resume.
    if (this.closing.signal.aborted) return await new Promise<never>(() => {})
    if (first === 'overturned') return await settle('overturned')
    if (first === 'clean') await windowEnds
    if (this.closing.signal.aborted) return await new Promise<never>(() => {})
    return await settle('final')
  }

  /** Stops settling claims (the relay is stopping); those pending stay pending in the store. */
  close (): void { this.closing.abort() }

  private async sleep (ms: number): Promise<void> {
    const signal = this.closing.signal
    await new Promise<void>((resolve) => {
      const done = (): void => { clearTimeout(t); signal.removeEventListener('abort', done); resolve() }
      const t = setTimeout(done, ms)
      signal.addEventListener('abort', done)
    })
  }

  get (id: string): ClaimStatus | undefined {
    const c = this.claims.get(id)
    if (c !== undefined) return c
    const stored = this.o.store?.get(id)
    return stored === undefined ? undefined : { claim: id, status: stored.status, window: stored.claim.window, submittedAt: stored.submittedAt, ...(stored.settlement !== undefined ? { settlement: stored.settlement } : {}) }
  }

  private get revealMs (): number { return this.o.revealMs ?? 5000 }

  /** Resolves when the claim settles (at once if it has). */
  async settled (id: string): Promise<Settlement> {
    const c = this.get(id)
    if (c === undefined) throw new InputError(`no claim ${id} on this board`)
    if (c.settlement !== undefined) return c.settlement
    return await new Promise((resolve) => { this.waiters.set(id, [...(this.waiters.get(id) ?? []), resolve]) })
  }

  /** Counts for the pages: claims by state, challenges by outcome, mean time to settle, referees' work. */
  stats (): { pending: number, final: number, overturned: number, challenges: number, frivolous: number, meanFinalMs: number, refereeBlocks: { ran: number, of: number } } {
    const all = [...this.claims.values()]
    const settled = all.filter((c) => c.settlement !== undefined)
    const finals = settled.filter((c) => c.status === 'final')
    const ch = settled.flatMap((c) => c.settlement!.challenges)
    return {
      pending: all.filter((c) => c.status === 'pending').length,
      final: finals.length,
      overturned: settled.length - finals.length,
      challenges: ch.length,
      frivolous: ch.filter((c) => c.outcome === 'frivolous').length,
      meanFinalMs: finals.length === 0 ? 0 : finals.reduce((s, c) => s + c.settlement!.afterMs, 0) / finals.length,
      // Blocks referees re-executed, against the blocks of the hops they judged (a whole-hop replay runs them all).
      refereeBlocks: { ran: ch.reduce((n, c) => n + (c.reexecuted?.layers ?? 0), 0), of: ch.reduce((n, c) => n + (c.reexecuted?.of ?? 0), 0) }
    }
  }

  private trim (): void {
    const keep = this.o.keep ?? 1000
    for (const [id, c] of this.claims) {
      if (this.claims.size <= keep) break
      if (c.status !== 'pending') this.claims.delete(id)
    }
  }

  /** Re-executes one hop on a watcher; on the first step that does not match, settles a challenge. */
  private async auditHop (claim: Claim, i: number, hop: HopClaim, audits: Settlement['audits'], challenges: ChallengeReport[], resumed: boolean): Promise<'overturned' | 'clean'> {
    const bodies = await Promise.all(hop.entries.map(async (e) => await openReceipt(e.receipt)))
    // The claim's inputs must be what the peers signed for: a client cannot frame a peer.
    let chain: Uint8Array = EMPTY_CHAIN
    let at = 0
    for (const [j, e] of hop.entries.entries()) {
      if (e.end < at) throw new TesseraError('BAD_CLAIM', `hop [${hop.layers.join(',')}): receipts out of order`)
      if (e.end > at) { chain = chainRows(chain, rowBytes(hop.inputs, at, e.end), e.end - at); at = e.end }
      if (bytesToHex(chain) !== bytesToHex(bodies[j].input)) throw new TesseraError('BAD_CLAIM', `hop [${hop.layers.join(',')}): the inputs do not match ${e.peer.slice(-8)}'s receipt`)
    }
    const involved = new Set(hop.entries.map((e) => e.peer))
    let watchers = await this.candidates(hop.layers, involved)
    // After a restart peers re-announce over a few seconds: a resumed claim waits for a watcher
    // and a referee (or as long as resumeWaitMs), so a dispute does not end undecided for want of one.
    for (const until = Date.now() + (resumed ? this.o.resumeWaitMs ?? 60_000 : 0); watchers.length < 2 && Date.now() < until;) {
      await this.sleep(500)
      watchers = await this.candidates(hop.layers, involved)
    }
    if (watchers.length === 0) { audits.push({ layers: hop.layers, ok: true, note: 'no watcher holds these layers' }); return 'clean' }
    const watcher = watchers[Math.floor(this.random() * watchers.length)]
    const full = await this.prefill(watcher, claim, `audit-${claim.id}-${i}`, hop.layers, hop.inputs)
    for (const [j, e] of hop.entries.entries()) {
      const claimed = decodeFingerprint(bodies[j].output)
      const rows = sliceRows(full.out, e.end - claimed.positions, e.end)
      if (compareFingerprints(claimed, fingerprint(rows.data, rows.seq, rows.width)).verdict === 'match') continue
      audits.push({ layers: hop.layers, watcher: watcher.peer, ok: false, note: `step ending at row ${e.end} does not match` })
      const c = await this.challenge(claim, i, hop, e, watcher, involved)
      challenges.push(c)
      return c.outcome === 'overturned' ? 'overturned' : 'clean'
    }
    audits.push({ layers: hop.layers, watcher: watcher.peer, ok: true, note: `all ${hop.entries.length} steps match` })
    return 'clean'
  }

  /**
   * The watcher replays the rows up to the disputed step and signs it (keeping each block's
   * output); bisection finds the first block where it and the accused part ways; a referee drawn
   * from a hash of both receipts re-executes that one block; the vote of the three decides who
   * is slashed. Where no block can be singled out (a party timed out, shards without
   * commitments, no referee able to run single blocks) the referee replays the whole hop instead.
   */
  private async challenge (claim: Claim, i: number, hop: HopClaim, e: HopClaim['entries'][number], watcher: Capability, involved: Set<string>): Promise<ChallengeReport> {
    const prefix = prefixRows(hop.inputs, e.end)
    const w = await this.prefill(watcher, claim, `challenge-${claim.id}-${i}`, hop.layers, prefix, true)
    const report: ChallengeReport = { layers: hop.layers, accused: e.peer, challenger: watcher.peer, outcome: 'undecided', reason: '' }
    const acc = await openReceipt(e.receipt)
    const accused: Party = { who: 'accused', cap: this.o.find !== undefined ? await this.o.find(e.peer) : (await this.o.peers()).find((p) => p.peer === e.peer), body: acc }
    const wat: Party = { who: 'watcher', cap: watcher, body: await openReceipt(w.receipt) }
    const positions = decodeFingerprint(acc.output).positions
    const located = await locate(this.o.dialer, hop.layers, accused, wat, positions, this.revealMs)
    const { openings, ...shown } = located
    report.located = shown
    if (located.timedOut !== undefined) this.o.ledger.observe(located.timedOut, false)
    // Anyone holding the two receipts computes the same referee order.
    const seed = newSha256().update(new TextEncoder().encode(claim.id)).update(e.receipt).update(w.receipt).digest()
    const draw = new DataView(seed.buffer, seed.byteOffset).getUint32(0)
    const exclude = new Set([...involved, watcher.peer])
    if (located.layer !== undefined && located.timedOut === undefined) {
      const settled = await this.refereeBlock(claim, hop, e, accused, wat, w, located.layer, openings, prefix, draw, exclude, report)
      if (settled) return report
    }
    return await this.refereeHop(claim, i, hop, e, watcher, w, prefix, draw, exclude, report)
  }

  /**
   * Block `layer` (the head when it is the hop's end) re-executed alone by a referee, on what
   * entered it: the hop's input for its first block, else block layer-1's output as the watcher
   * kept it (checked against the watcher's commitment, which the accused's agrees with).
   * Returns false when no referee could do it, so the whole hop is replayed instead.
   */
  private async refereeBlock (claim: Claim, hop: HopClaim, e: HopClaim['entries'][number], accused: Party, watcher: Party, w: { receipt: Uint8Array, fp: Fingerprint }, layer: number, openings: Opening[], prefix: HopInput, draw: number, exclude: Set<string>, report: ChallengeReport): Promise<boolean> {
    const [a, b] = hop.layers
    const positions = decodeFingerprint(accused.body.output).positions
    const opened = async (p: Party, l: number): Promise<Opening> => {
      const have = openings.find((o) => o.peer === p.body.peer && o.layer === l)
      if (have !== undefined) return have
      const o = await reveal(this.o.dialer, p.cap!, p.body, l, a, this.revealMs)
      openings.push(o)
      return o
    }
    // What entered the block, and what each party committed it put out (over the disputed step's
    // rows; bisection revealed blocks layer-1 and layer of both already).
    let input = prefix
    let claimed: { accused: Fingerprint, watcher: Fingerprint }
    try {
      const out = async (p: Party, full: Fingerprint): Promise<Fingerprint> => tailFingerprint(layer === b ? full : decodeFingerprint((await opened(p, layer)).fp), positions)
      claimed = { accused: await out(accused, decodeFingerprint(accused.body.output)), watcher: await out(watcher, w.fp) }
      if (layer > a) input = await keptState(this.o.dialer, watcher.cap!, watcher.body, layer - 1, decodeFingerprint((await opened(watcher, layer - 1)).fp), this.revealMs)
    } catch (err) {
      // Not held against the watcher: a state too large to keep (STATE_KEEP_BYTES) ends here too. The whole-hop replay still settles it.
      report.located = { ...report.located!, note: `${report.located!.note}; block ${layer - 1}'s output could not be handed over: ${(err as Error).message}` }
      return false
    }
    // Holders of the block (of block b-1 for the head), in the drawn order; the next if one fails.
    const holds = (p: Capability): boolean => p.layers[0] <= Math.min(layer, b - 1) && Math.min(layer, b - 1) < p.layers[1]
    const pool = (await this.o.peers()).filter((p) => holds(p) && !exclude.has(p.peer) && !this.o.ledger.excluded(p.peer)).sort((x, y) => x.peer < y.peer ? -1 : 1)
    for (let t = 0; t < Math.min(2, pool.length); t++) {
      const referee = pool[(draw + t) % pool.length]
      let part: Awaited<ReturnType<typeof execute>>
      try {
        part = await execute(this.o.dialer, referee, claim.root, hop.layers, layer, input, this.revealMs)
      } catch (err) {
        log.info(`claim ${claim.id}: referee ${referee.peer.slice(-8)} could not re-execute block ${layer}: ${(err as Error).message}`)
        this.o.ledger.observe(referee.peer, false)
        continue
      }
      report.referee = referee.peer
      report.reexecuted = { layers: 1, of: b - a, what: layer === b ? 'head' : `block ${layer}` }
      const votes: Array<Vote & { receipt: Uint8Array }> = [
        { peer: accused.body.peer, fp: claimed.accused, weight: this.o.ledger.weight(accused.body.peer), receipt: e.receipt },
        { peer: watcher.body.peer, fp: claimed.watcher, weight: this.o.ledger.weight(watcher.body.peer), receipt: w.receipt },
        { peer: referee.peer, fp: tailFingerprint(decodeFingerprint(part.body.output), positions), weight: this.o.ledger.weight(referee.peer), receipt: part.statement }
      ]
      await this.settleVote(claim, hop, e, report, votes, (loser, winner) => disputeEvidence(loser, winner, part.statement, layer, openings.filter((o) => o.layer === layer || o.layer === layer - 1), {
        claim: claim.id, layers: hop.layers, end: e.end, layer, challenger: watcher.body.peer, referee: referee.peer
      }))
      return true
    }
    report.located = { ...report.located!, note: `${report.located!.note}; no referee re-executed block ${layer} (${pool.length} hold it)` }
    return false
  }

  /** The fallback: a referee replays the whole hop up to the disputed step. */
  private async refereeHop (claim: Claim, i: number, hop: HopClaim, e: HopClaim['entries'][number], watcher: Capability, w: { receipt: Uint8Array, fp: Fingerprint }, prefix: HopInput, draw: number, exclude: Set<string>, report: ChallengeReport): Promise<ChallengeReport> {
    const pool = await this.candidates(hop.layers, exclude)
    if (pool.length === 0) { report.reason = 'no referee holds these layers'; return report }
    pool.sort((a, b) => a.peer < b.peer ? -1 : 1)
    const referee = pool[draw % pool.length]
    report.referee = referee.peer
    report.reexecuted = { layers: hop.layers[1] - hop.layers[0], of: hop.layers[1] - hop.layers[0], what: 'the whole hop' }
    const r = await this.prefill(referee, claim, `referee-${claim.id}-${i}`, hop.layers, prefix)
    const claimed = decodeFingerprint((await openReceipt(e.receipt)).output)
    await this.settleVote(claim, hop, e, report, [
      { peer: e.peer, fp: claimed, weight: this.o.ledger.weight(e.peer), receipt: e.receipt },
      { peer: watcher.peer, fp: tailFingerprint(w.fp, claimed.positions), weight: this.o.ledger.weight(watcher.peer), receipt: w.receipt },
      { peer: referee.peer, fp: tailFingerprint(r.fp, claimed.positions), weight: this.o.ledger.weight(referee.peer), receipt: r.receipt }
    ], (loser, winner, all) => mismatchEvidence('optimistic', loser, all, { claim: claim.id, layers: hop.layers, end: e.end, challenger: watcher.peer, referee: referee.peer }))
    return report
  }

  /** The reputation-weighted vote of accused, watcher and referee; the minority's evidence goes to the ledger. */
  private async settleVote (claim: Claim, hop: HopClaim, e: HopClaim['entries'][number], report: ChallengeReport, votes: Array<Vote & { receipt: Uint8Array }>,
    evidence: (loser: Vote & { receipt: Uint8Array }, winner: Vote & { receipt: Uint8Array }, winners: Array<Vote & { receipt: Uint8Array }>) => Evidence): Promise<void> {
    const t = tally(votes)
    if (t.winner.length < MIN_WITNESSES) { report.reason = 'accused, challenger and referee all disagree'; return }
    const loser = t.losers[0]
    const referee = votes[2].peer
    report.outcome = loser.peer === e.peer ? 'overturned' : 'frivolous'
    const outcome = await this.o.ledger.report(evidence(loser, t.winner.find((v) => v.peer !== referee)!, t.winner))
    report.reason = outcome.reason
    if (outcome.slashed) report.slashed = { peer: loser.peer, amount: outcome.amount }
    log.info(`claim ${claim.id} hop [${hop.layers.join(',')}): ${report.outcome}, the referee re-executed ${report.reexecuted?.what ?? 'nothing'} (${loser.peer.slice(-8)} ${outcome.slashed ? `slashed ${outcome.amount}` : `not slashed: ${outcome.reason}`})`)
  }

  private async candidates (layers: [number, number], exclude: Set<string>): Promise<Capability[]> {
    const peers = (await this.o.peers()).filter((p) => !exclude.has(p.peer) && !this.o.ledger.excluded(p.peer))
    return serversOf(peers, layers, DEFAULT_COSTS)
  }

  /** One prefill of `input` on `peer`: its output, receipt (checked on arrival) and the fingerprint of every row. */
  private async prefill (peer: Capability, claim: Claim, session: string, layers: [number, number], input: HopInput, keep = false): Promise<{ out: HopOutput, receipt: Uint8Array, fp: ReturnType<typeof fingerprint> }> {
    const hop = await openRemoteHop(this.o.dialer, peer, layers, claim.root, session, this.o.timeouts, { keep })
    try {
      const out = await hop.forward(input, 0)
      return { out, receipt: out.receipt, fp: out.fp }
    } catch (err) {
      if (err instanceof HopError) this.o.ledger.observe(err.peer, false)
      throw err
    } finally {
      hop.close()
    }
  }
}

/** The first `n` rows of a hop's input. */
function prefixRows (x: HopInput, n: number): HopInput {
  if (n > seqOf(x)) throw new TesseraError('BAD_CLAIM', `a receipt ends at row ${n} but the claim holds ${seqOf(x)} rows`)
  if ('tokens' in x) return { tokens: Array.from(x.tokens).slice(0, n) }
  return { hidden: x.hidden.subarray(0, n * (x.hidden.length / x.seq)), seq: n }
}

/** The bytes of rows [from, to), as the receipts' input chains hash them. */
function rowBytes (x: HopInput, from: number, to: number): Uint8Array {
  if (to > seqOf(x)) throw new TesseraError('BAD_CLAIM', `a receipt ends at row ${to} but the claim holds ${seqOf(x)} rows`)
  if ('tokens' in x) return new Uint8Array(Int32Array.from(Array.from(x.tokens).slice(from, to)).buffer)
  const w = x.hidden.length / x.seq
  return bytesOf(x.hidden.subarray(from * w, to * w))
}

function sliceRows (out: HopOutput, from: number, to: number): HopOutput {
  return { ...out, data: out.data.subarray(from * out.width, to * out.width), seq: to - from }
}

/** A settlement POSTed to a caller's webhook; a failure is logged, not retried. */
async function postWebhook (url: string, s: Settlement): Promise<void> {
  try {
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(s), signal: AbortSignal.timeout(10_000) })
    if (!res.ok) log.warn(`webhook ${url} answered HTTP ${res.status} for claim ${s.claim}`)
  } catch (err) {
    log.warn(`webhook ${url} for claim ${s.claim} failed: ${(err as Error).message}`)
  }
}
