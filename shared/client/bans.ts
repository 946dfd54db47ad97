import { CLIENT_DEFAULTS } from './config.js'

/** Peers that failed recently are skipped for a while; each repeat failure doubles the wait (Petals: 15 s, doubling). */
export class BanList {
  private readonly bans = new Map<string, { until: number; ms: number }>()
  constructor(
    private readonly baseMs = CLIENT_DEFAULTS.banMs,
    private readonly maxMs = CLIENT_DEFAULTS.maxBanMs,
    private readonly now = () => Date.now()
  ) {}

  ban(peer: string): void {
    const prev = this.bans.get(peer)
    const ms = prev === undefined ? this.baseMs : Math.min(this.maxMs, prev.ms * 2)
    this.bans.set(peer, { until: this.now() + ms, ms })
  }

  isBanned(peer: string): boolean {
    const b = this.bans.get(peer)
    return b !== undefined && b.until > this.now()
  }

  /** A peer that served well again is forgiven. */
  clear(peer: string): void {
    this.bans.delete(peer)
  }
}
