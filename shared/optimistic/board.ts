/**
 * Optimistic verification's claim board: the lifecycle of claims. A generation served by one peer
 * per hop is accepted at once and posted here as a claim (claim.ts). Until its window closes,
 * watchers audit each hop (audit.ts); a mismatch becomes a challenge (challenge.ts). A proven
 * fault overturns the claim at once. Otherwise a claim settles when its window has closed and
 * every audit and challenge of it has ended: final only when every hop was re-executed by a
 * watcher and every challenge went the accused's way; unverified when a hop went unaudited, a
 * challenge was left undecided, or the audits outlasted the window by auditMs. Every receipt is
 * checked when the claim is posted (a forged one is refused), and a board holds at most
 * maxPending claims. The board keeps claims in a store (so a restart resumes them, audited
 * before they settle), tells waiters and webhooks how each settled (one frozen settlement, the
 * same everywhere), and counts for the pages.
 *
 * It needs only a dialer, the peers and a ledger link, so it runs anywhere the client does; in
 * the embedded setup it lives with the relay.
 */
import type { Capability } from '../protocol/capability.js'
import { InputError, TesseraError } from '../errors.js'
import { logger } from '../log.js'
import type { LedgerLink } from '../client/ledger-link.js'
import type { Dialer, HopTimeouts } from '../client/remote-hop.js'
import type { ChallengeReport, Settlement } from '../client/types.js'
import type { ReceiptBody } from '../verify/receipt.js'
import { auditHop } from './audit.js'
import { checkClaim, type Claim, type ClaimSink, type ClaimStatus, type ClaimStore } from './claim.js'
import { BOARD_DEFAULTS, type BoardDefaults } from './config.js'
import type { BoardContext } from './context.js'
import { boardStats, type BoardStats } from './stats.js'
import { postWebhook } from './webhook.js'
import { mulberry32 } from '../rng.js'
import { newSha256 } from '../hash.js'

export type { Claim, ClaimSink, ClaimStatus, ClaimStore, HopClaim, StoredClaim } from './claim.js'

const log = logger('tessera:board')

export interface BoardOptions {
  dialer: Dialer
  peers: () => Promise<Capability[]>
  /** Finds a peer's record even when it is left out of `peers` (blacklisted meanwhile); default: search `peers`. */
  find?: (peer: string) => Promise<Capability | undefined>
  ledger: LedgerLink
  timeouts: HopTimeouts
  /** How long a party has to answer each reveal of a dispute (ms). */
  revealMs?: number
  /** Audit policy: the chance that a hop of a claim is audited (1 = every hop). */
  auditRate?: number
  random?: () => number
  /** Settled claims kept in memory for GET /api/claims/:id (the store keeps them all). */
  keep?: number
  /** Where claims outlive a restart (relay/claims-sqlite.ts); without one they live in memory only. */
  store?: ClaimStore
  /** How long a resumed claim's audit waits for a watcher and a referee to (re)appear (ms). */
  resumeWaitMs?: number
  /** Watchers drawn for each hop (config.ts). */
  watchers?: number
  /** How long after its window a claim's audits may run before it ends unverified (ms). */
  auditMs?: number
  /** Claims pending at once; more are refused (BUSY, 503). */
  maxPending?: number
  /**
   * Draw each claim's audits and watchers from a seed of the claim itself (its id and receipts)
   * instead of `random`: boards that hold the same claim (federated relays) and see the same peers
   * and standings then draw the same watchers. A function is asked at each claim (a relay seeds
   * once it is federated).
   */
  seededDraws?: boolean | (() => boolean)
  /** A claim posted here (not a replica from another board) was accepted: a federation passes it on. */
  onPosted?: (claim: Claim) => void
}

type Correct = (challenges: ChallengeReport[]) => Promise<number[]>

export class ClaimBoard implements ClaimSink {
  private readonly claims = new Map<string, ClaimStatus>()
  private readonly waiters = new Map<string, Array<{ resolve: (s: Settlement) => void; reject: (err: Error) => void }>>()
  private readonly hooks = new Map<string, string>()
  private readonly closing = new AbortController()
  private readonly ctx: BoardContext
  private readonly o: BoardOptions & BoardDefaults

  constructor(options: BoardOptions) {
    // Each default resolved once; an option given as undefined keeps its default.
    const d = BOARD_DEFAULTS
    this.o = {
      ...options,
      revealMs: options.revealMs ?? d.revealMs,
      webhookMs: d.webhookMs,
      resumeWaitMs: options.resumeWaitMs ?? d.resumeWaitMs,
      keep: options.keep ?? d.keep,
      auditRate: options.auditRate ?? d.auditRate,
      watchers: options.watchers ?? d.watchers,
      auditMs: options.auditMs ?? d.auditMs,
      maxPending: options.maxPending ?? d.maxPending
    }
    const { dialer, peers, ledger, timeouts, revealMs } = this.o
    this.ctx = {
      dialer,
      peers,
      ledger,
      timeouts,
      revealMs,
      find: options.find ?? (async (peer) => (await peers()).find((p) => p.peer === peer)),
      random: options.random ?? Math.random,
      sleep: async (ms) => {
        await this.sleep(ms)
      }
    }
  }

  /** Posts a claim; resolves when it settles: overturned (as soon as proven, after `correct` made the corrected tokens), final or unverified. */
  async submit(claim: Claim, correct?: Correct): Promise<Settlement> {
    return await (await this.post(claim, correct)).settled
  }

  /**
   * Accepts a claim, or refuses it: already posted (INPUT), a receipt that does not check
   * (BAD_CLAIM), the board full (BUSY). Once accepted it is stored and audited; `settled` says how it ended.
   */
  async post(claim: Claim, correct?: Correct, o: { replica?: boolean } = {}): Promise<{ settled: Promise<Settlement> }> {
    const known = (): boolean => this.claims.has(claim.id) || this.o.store?.get(claim.id) !== undefined
    if (known()) throw new InputError(`claim ${claim.id} was already posted`)
    if (this.pending() >= this.o.maxPending)
      throw new TesseraError('BUSY', `the claim board holds ${this.o.maxPending} pending claims: try again when some have settled`)
    // Listed at once (pending) while its receipts are checked, so a webhook asked for right away finds it; dropped if refused.
    const submittedAt = Date.now()
    this.claims.set(claim.id, { claim: claim.id, status: 'pending', window: claim.window, submittedAt })
    let bodies: ReceiptBody[][]
    try {
      bodies = await checkClaim(claim)
    } catch (err) {
      this.claims.delete(claim.id)
      this.hooks.delete(claim.id)
      for (const w of this.waiters.get(claim.id) ?? []) w.reject(err as Error)
      this.waiters.delete(claim.id)
      throw err
    }
    this.o.store?.put(claim, submittedAt)
    // A webhook asked for while the receipts were checked is stored now, so a restart still sends it.
    const hook = this.hooks.get(claim.id)
    if (hook !== undefined) this.o.store?.webhook(claim.id, hook)
    if (o.replica !== true) this.o.onPosted?.(claim)
    return { settled: this.run(claim, bodies, { submittedAt, resumed: false, correct }) }
  }

  /** Claims accepted and not settled. */
  pending(): number {
    let n = 0
    for (const c of this.claims.values()) if (c.status === 'pending') n++
    return n
  }

  /**
   * Takes up the claims a previous run of the board accepted and never settled (the relay
   * restarted): their windows go on from when they were posted, and one whose window passed
   * meanwhile settles when its audit ends, not before: it was never audited (and one no watcher
   * can audit ends unverified, never final). Corrected tokens are not regenerated for them (the
   * client that could is gone); webhooks are sent.
   */
  resume(): number {
    const pending = this.o.store?.pending() ?? []
    for (const p of pending) {
      if (this.claims.has(p.claim.id)) continue
      if (p.webhook !== undefined) this.hooks.set(p.claim.id, p.webhook)
      checkClaim(p.claim)
        .then(async (bodies) => await this.run(p.claim, bodies, { submittedAt: p.submittedAt, resumed: true }))
        .catch((err: Error) => {
          log.warn(`claim ${p.claim.id}: ${err.message}`)
        })
    }
    if (pending.length > 0) log.info(`resumed ${pending.length} pending claim(s)`)
    return pending.length
  }

  /** POST the claim's settlement to `url` once it settles (at once if it has). */
  notify(id: string, url: string): void {
    const c = this.get(id)
    if (c === undefined) throw new InputError(`no claim ${id} on this board`)
    this.o.store?.webhook(id, url)
    if (c.settlement !== undefined) void postWebhook(url, c.settlement, this.o.webhookMs)
    else this.hooks.set(id, url)
  }

  get(id: string): ClaimStatus | undefined {
    const c = this.claims.get(id)
    if (c !== undefined) return c
    const stored = this.o.store?.get(id)
    if (stored === undefined) return undefined
    return {
      claim: id,
      status: stored.status,
      window: stored.claim.window,
      submittedAt: stored.submittedAt,
      ...(stored.settlement !== undefined ? { settlement: stored.settlement } : {})
    }
  }

  /** Resolves when the claim settles (at once if it has). */
  async settled(id: string): Promise<Settlement> {
    const c = this.get(id)
    if (c === undefined) throw new InputError(`no claim ${id} on this board`)
    if (c.settlement !== undefined) return c.settlement
    return await new Promise((resolve, reject) => {
      this.waiters.set(id, [...(this.waiters.get(id) ?? []), { resolve, reject }])
    })
  }

  /** Counts for the pages (stats.ts). */
  stats(): BoardStats {
    return boardStats([...this.claims.values()])
  }

  /** Stops settling claims (the relay is stopping); those pending stay pending in the store. */
  close(): void {
    this.closing.abort()
  }

  private async run(claim: Claim, bodies: ReceiptBody[][], r: { submittedAt: number; resumed: boolean; correct?: Correct }): Promise<Settlement> {
    this.claims.set(claim.id, { claim: claim.id, status: 'pending', window: claim.window, submittedAt: r.submittedAt })
    this.trim()
    const audits: Settlement['audits'] = []
    const challenges: ChallengeReport[] = []
    const elapsed = (): number => Date.now() - r.submittedAt
    // Timers may fire a millisecond early by the wall clock: nothing settles before its time.
    const until = async <T>(ms: number, v: T): Promise<T> => {
      while (elapsed() < ms && !this.closing.signal.aborted) await this.sleep(ms - elapsed() + 1)
      return v
    }
    const seeded = typeof this.o.seededDraws === 'function' ? this.o.seededDraws() : this.o.seededDraws === true
    const ctx = seeded ? { ...this.ctx, random: mulberry32(claimSeed(claim)) } : this.ctx
    const audit = this.audit(ctx, claim, bodies, { resumed: r.resumed, audits, challenges })
    // A proven fault ends the claim at once. Otherwise it waits for its window and for every audit
    // and challenge: one still open auditMs after the window leaves the claim unverified (a party
    // that stalls gains nothing: its claim is never final).
    const deadline = (r.resumed ? Math.max(claim.window, elapsed()) : claim.window) + this.o.auditMs
    let verdict = await Promise.race([audit, until(deadline, 'late' as const)])
    if (verdict !== 'overturned') await until(claim.window, undefined)
    // A board closed meanwhile settles nothing: its store keeps the claim pending for the next run to resume.
    if (this.closing.signal.aborted) return await new Promise<never>(() => {})
    if (verdict === 'late') {
      audits.push({ layers: claim.hops[0].layers, ok: false, note: `the audits did not end within ${this.o.auditMs} ms of the window` })
      verdict = 'unverified'
    }
    const status = verdict === 'overturned' ? 'overturned' : verdict === 'clean' ? 'final' : 'unverified'
    // Frozen: what the API, the store, the waiters and the webhook see is this one copy, however the audits go on.
    const s = JSON.parse(JSON.stringify({ claim: claim.id, status, afterMs: elapsed(), audits, challenges })) as Settlement
    if (s.status === 'overturned' && r.correct !== undefined) {
      try {
        s.tokens = await r.correct(s.challenges)
      } catch (err) {
        log.warn(`claim ${claim.id}: could not regenerate the corrected tokens: ${(err as Error).message}`)
      }
    }
    return this.settle(s)
  }

  /**
   * Audits the claim's hops in turn (as the audit policy samples them); the first overturned one
   * ends it. Clean only when every hop is: one not sampled, not audited or left undecided makes
   * the claim unverified.
   */
  private async audit(
    ctx: BoardContext,
    claim: Claim,
    bodies: ReceiptBody[][],
    a: { resumed: boolean; audits: Settlement['audits']; challenges: ChallengeReport[] }
  ): Promise<'overturned' | 'clean' | 'unverified'> {
    let clean = true
    for (const [index, hop] of claim.hops.entries()) {
      if (ctx.random() >= this.o.auditRate) {
        a.audits.push({ layers: hop.layers, ok: false, note: 'not sampled by the audit policy: unaudited' })
        clean = false
        continue
      }
      try {
        const waitMs = a.resumed ? this.o.resumeWaitMs : 0
        const r = await auditHop(ctx, { claim, index, bodies: bodies[index], watchers: this.o.watchers, waitMs, audits: a.audits })
        a.challenges.push(...r.challenges)
        if (r.verdict === 'overturned') return 'overturned'
        if (r.verdict !== 'clean') clean = false
      } catch (err) {
        a.audits.push({ layers: hop.layers, ok: false, note: `audit failed: ${(err as Error).message}` })
        clean = false
      }
    }
    return clean ? 'clean' : 'unverified'
  }

  /** Records how the claim ended (once), and tells the store, the waiters and the webhook. */
  private settle(s: Settlement): Settlement {
    const entry = this.claims.get(s.claim)
    if (entry === undefined || entry.status !== 'pending') return entry?.settlement ?? s
    entry.status = s.status
    entry.settlement = s
    if (!this.closing.signal.aborted) this.o.store?.settle(s)
    for (const w of this.waiters.get(s.claim) ?? []) w.resolve(s)
    this.waiters.delete(s.claim)
    const hook = this.hooks.get(s.claim)
    this.hooks.delete(s.claim)
    if (hook !== undefined) void postWebhook(hook, s, this.o.webhookMs)
    return s
  }

  private async sleep(ms: number): Promise<void> {
    const signal = this.closing.signal
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(t)
        signal.removeEventListener('abort', done)
        resolve()
      }
      const t = setTimeout(done, ms)
      signal.addEventListener('abort', done)
    })
  }

  private trim(): void {
    for (const [id, c] of this.claims) {
      if (this.claims.size <= this.o.keep) break
      if (c.status !== 'pending') this.claims.delete(id)
    }
  }
}

/**
 * A claim's own seed: the first 32 bits of sha256 over its id and every receipt. Public, so every
 * board draws alike; a party could grind its receipts for a draw it likes, and gains only peers of
 * the standing the draw weighs them by.
 */
export function claimSeed(claim: Claim): number {
  const h = newSha256().update(new TextEncoder().encode(claim.id))
  for (const hop of claim.hops) for (const e of hop.entries) h.update(e.receipt)
  const d = h.digest()
  return ((d[0] << 24) | (d[1] << 16) | (d[2] << 8) | d[3]) >>> 0
}
