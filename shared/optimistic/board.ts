/**
 * Optimistic verification's claim board: the lifecycle of claims. A generation served by one peer
 * per hop is accepted at once and posted here as a claim (claim.ts). Until its window closes,
 * watchers audit each hop (audit.ts); a mismatch becomes a challenge (challenge.ts). A proven
 * fault overturns the claim at once; a claim nobody overturns within its window is final. The
 * board keeps claims in a store (so a restart resumes them), tells waiters and webhooks how each
 * settled, and counts for the pages.
 *
 * It needs only a dialer, the peers and a ledger link, so it runs anywhere the client does; in
 * the embedded setup it lives with the relay.
 */
import type { Capability } from '../protocol/capability.js'
import { InputError } from '../errors.js'
import { logger } from '../log.js'
import type { LedgerLink } from '../client/ledger-link.js'
import type { Dialer, HopTimeouts } from '../client/remote-hop.js'
import type { ChallengeReport, Settlement } from '../client/types.js'
import { auditHop } from './audit.js'
import type { Claim, ClaimSink, ClaimStatus, ClaimStore } from './claim.js'
import { BOARD_DEFAULTS, type BoardDefaults } from './config.js'
import type { BoardContext } from './context.js'
import { boardStats, type BoardStats } from './stats.js'
import { postWebhook } from './webhook.js'

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
}

type Correct = (challenges: ChallengeReport[]) => Promise<number[]>

export class ClaimBoard implements ClaimSink {
  private readonly claims = new Map<string, ClaimStatus>()
  private readonly waiters = new Map<string, Array<(s: Settlement) => void>>()
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
      auditRate: options.auditRate ?? d.auditRate
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

  /** Posts a claim; resolves when it is overturned (as soon as proven, after `correct` made the corrected tokens) or final. */
  async submit(claim: Claim, correct?: Correct): Promise<Settlement> {
    if (this.claims.has(claim.id) || this.o.store?.get(claim.id) !== undefined) throw new InputError(`claim ${claim.id} was already posted`)
    const submittedAt = Date.now()
    this.o.store?.put(claim, submittedAt)
    return await this.run(claim, { submittedAt, resumed: false, correct })
  }

  /**
   * Takes up the claims a previous run of the board accepted and never settled (the relay
   * restarted): their windows go on from when they were posted, and one whose window passed
   * meanwhile settles when its audit ends, not before: it was never audited. Corrected tokens
   * are not regenerated for them (the client that could is gone); webhooks are sent.
   */
  resume(): number {
    const pending = this.o.store?.pending() ?? []
    for (const p of pending) {
      if (this.claims.has(p.claim.id)) continue
      if (p.webhook !== undefined) this.hooks.set(p.claim.id, p.webhook)
      this.run(p.claim, { submittedAt: p.submittedAt, resumed: true }).catch((err: Error) => {
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
    return await new Promise((resolve) => {
      this.waiters.set(id, [...(this.waiters.get(id) ?? []), resolve])
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

  private async run(claim: Claim, r: { submittedAt: number; resumed: boolean; correct?: Correct }): Promise<Settlement> {
    this.claims.set(claim.id, { claim: claim.id, status: 'pending', window: claim.window, submittedAt: r.submittedAt })
    this.trim()
    const audits: Settlement['audits'] = []
    const challenges: ChallengeReport[] = []
    const elapsed = (): number => Date.now() - r.submittedAt
    // Timers may fire a millisecond early by the wall clock: a claim is never final before its window.
    const windowEnds = (async (): Promise<'window'> => {
      while (elapsed() < claim.window && !this.closing.signal.aborted) await this.sleep(claim.window - elapsed() + 1)
      return 'window'
    })()
    const audit = this.audit(claim, { resumed: r.resumed, audits, challenges })
    // A proven fault ends the claim at once; otherwise it is final when the window closes
    // (an audit still running then came too late: that is the optimistic bargain).
    const first = r.resumed && elapsed() >= claim.window ? await audit : await Promise.race([audit, windowEnds])
    if (first === 'clean') await windowEnds
    // A board closed meanwhile settles nothing: its store keeps the claim pending for the next run to resume.
    if (this.closing.signal.aborted) return await new Promise<never>(() => {})
    const s: Settlement = { claim: claim.id, status: first === 'overturned' ? 'overturned' : 'final', afterMs: elapsed(), audits, challenges }
    if (s.status === 'overturned' && r.correct !== undefined) {
      try {
        s.tokens = await r.correct(challenges)
      } catch (err) {
        log.warn(`claim ${claim.id}: could not regenerate the corrected tokens: ${(err as Error).message}`)
      }
    }
    return this.settle(s)
  }

  /** Audits the claim's hops in turn (as the audit policy samples them); the first overturned one ends it. */
  private async audit(claim: Claim, a: { resumed: boolean; audits: Settlement['audits']; challenges: ChallengeReport[] }): Promise<'overturned' | 'clean'> {
    for (const [index, hop] of claim.hops.entries()) {
      if (this.ctx.random() >= this.o.auditRate) {
        a.audits.push({ layers: hop.layers, ok: true, note: 'not sampled by the audit policy' })
        continue
      }
      try {
        const challenge = await auditHop(this.ctx, { claim, index, waitMs: a.resumed ? this.o.resumeWaitMs : 0, audits: a.audits })
        if (challenge !== undefined) a.challenges.push(challenge)
        if (challenge?.outcome === 'overturned') return 'overturned'
      } catch (err) {
        a.audits.push({ layers: hop.layers, ok: false, note: `audit failed: ${(err as Error).message}` })
      }
    }
    return 'clean'
  }

  /** Records how the claim ended (once), and tells the store, the waiters and the webhook. */
  private settle(s: Settlement): Settlement {
    const entry = this.claims.get(s.claim)
    if (entry === undefined || entry.status !== 'pending') return entry?.settlement ?? s
    entry.status = s.status
    entry.settlement = s
    if (!this.closing.signal.aborted) this.o.store?.settle(s)
    for (const w of this.waiters.get(s.claim) ?? []) w(s)
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
