/**
 * The client's circuit breaker over verification: when too many generations within a sliding
 * window end without a verified result (peers disagreeing with no majority to settle it),
 * something is wrong with the network (a coordinated attack, a broken model release) and
 * carrying on would only burn the peers' compute and the caller's time. New requests are
 * refused with a clear error until, after a cool-down, a health check passes; the next
 * generation then runs as a probe and closes the breaker if it returns a verified result.
 *
 * A cheater caught and outvoted is verification working, not failing: it does not count here
 * (the ledger deals with it).
 */
import { CircuitOpenError } from '../errors.js'
import { CLIENT_DEFAULTS } from './config.js'

export interface BreakerOptions {
  /** Sliding window over which outcomes are counted (ms). */
  windowMs: number
  /** At least this many failed generations in the window… */
  minFailures: number
  /** …making up at least this share of them, open the breaker. */
  maxFailureRate: number
  /** How long to stay open before a health check may close it (ms). */
  cooldownMs: number
}

export const DEFAULT_BREAKER: BreakerOptions = CLIENT_DEFAULTS.breaker

export type BreakerState = 'closed' | 'open' | 'half-open'

export class CircuitBreaker {
  private events: Array<{ at: number; ok: boolean }> = []
  private openedAt = 0
  private why = ''
  state: BreakerState = 'closed'

  constructor(
    private readonly o: BreakerOptions = DEFAULT_BREAKER,
    private readonly now = () => Date.now()
  ) {}

  /** Throws CircuitOpenError unless a request may go ahead now; `health` is asked once the cool-down is over. */
  async admit(health: () => Promise<{ ok: boolean; reason: string }>): Promise<void> {
    if (this.state !== 'open') return
    const wait = this.openedAt + this.o.cooldownMs - this.now()
    if (wait > 0) throw new CircuitOpenError(`requests are paused: ${this.why}; a health check runs in ${Math.ceil(wait / 1000)} s`, wait)
    const h = await health()
    if (!h.ok) {
      this.openedAt = this.now()
      throw new CircuitOpenError(
        `requests are paused: ${this.why}; the health check failed (${h.reason}); next one in ${Math.ceil(this.o.cooldownMs / 1000)} s`,
        this.o.cooldownMs
      )
    }
    this.state = 'half-open'
  }

  /** One generation's outcome: `verified` false when it ended without a result anyone could vouch for. */
  record(verified: boolean): void {
    const t = this.now()
    if (this.state === 'half-open') {
      if (verified) {
        this.state = 'closed'
        this.events = []
        return
      }
      this.trip('the probe after a pause could not be verified either')
      return
    }
    this.events = [...this.events.filter((e) => e.at > t - this.o.windowMs), { at: t, ok: verified }]
    const failed = this.events.filter((e) => !e.ok).length
    if (this.state === 'closed' && failed >= this.o.minFailures && failed >= this.o.maxFailureRate * this.events.length) {
      this.trip(`${failed} of the last ${this.events.length} generations could not be verified (within ${Math.round(this.o.windowMs / 1000)} s)`)
    }
  }

  private trip(why: string): void {
    this.state = 'open'
    this.openedAt = this.now()
    this.why = why
  }
}
