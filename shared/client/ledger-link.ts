/**
 * What a client needs from the ledger: reputations to weigh votes, the blacklist to route
 * around, and somewhere to send evidence. The ledger re-checks any evidence itself, so a link
 * may come from anywhere: the relay's own ledger in-process, or its HTTP API from a browser.
 */
import type { Evidence, PeerStanding } from '../ledger/types.js'
import { DEFAULT_RULES } from '../ledger/types.js'
import { logger } from '../log.js'
import { TesseraError } from '../errors.js'
import { bytesToBase64 } from '../base64.js'

const log = logger('tessera:client:ledger')

export interface SlashOutcome {
  slashed: boolean
  amount: number
  reason: string
  /** When the ledger re-executed the hop itself: the peers whose receipts match its result (verify/reexec.ts). */
  matches?: string[]
  /** The ledger could not judge the evidence now (its re-execution failed, it was busy or rate-limited): no vote may stand on it. */
  unjudged?: boolean
}

export interface LedgerLink {
  /** The peer's reputation, 0..1: its vote's weight. */
  weight(peer: string): number
  /** Blacklisted peers get no work. */
  excluded(peer: string): boolean
  /**
   * Whether the peer has standing (stake, not blacklisted): checked modes draw lanes, checkers and
   * referees among such peers first, since a fresh key costs nothing. Absent: nobody is known, all count.
   */
  standing?(peer: string): boolean
  /** Hands evidence to the ledger, which checks it before slashing anyone. */
  report(e: Evidence): Promise<SlashOutcome>
  /** A verified good or failed result, for reputation (a link that is not trusted with this ignores it). */
  observe(peer: string, ok: boolean): void
}

/** No ledger: everyone weighs the same, nobody is excluded, evidence goes nowhere. */
export const NO_LEDGER: LedgerLink = {
  weight: () => DEFAULT_RULES.initialReputation,
  excluded: () => false,
  report: async () => ({ slashed: false, amount: 0, reason: 'no ledger is attached to this client' }),
  observe: () => {}
}

/**
 * A link from standings kept fresh by `refresh` (sync reads for routing and votes; the
 * backend is async). `slash` and `observe` go to whatever ledger or API backs it.
 */
export function cachedLedgerLink(o: {
  standings: () => Promise<PeerStanding[]>
  slash: (e: Evidence) => Promise<SlashOutcome>
  observe?: (peer: string, ok: boolean) => Promise<unknown>
}): LedgerLink & { refresh: () => Promise<void> } {
  let byPeer = new Map<string, PeerStanding>()
  const refresh = async (): Promise<void> => {
    try {
      byPeer = new Map((await o.standings()).map((s) => [s.peer, s]))
    } catch (err) {
      log.debug(`could not read standings: ${(err as Error).message}`)
    }
  }
  return {
    refresh,
    weight: (peer) => byPeer.get(peer)?.reputation ?? DEFAULT_RULES.initialReputation,
    excluded: (peer) => byPeer.get(peer)?.blacklisted === true,
    standing: (peer) => {
      const s = byPeer.get(peer)
      return s !== undefined && s.stake > 0 && !s.blacklisted
    },
    async report(e) {
      const r = await o.slash(e)
      await refresh()
      return r
    },
    observe(peer, ok) {
      if (o.observe === undefined) return
      void o.observe(peer, ok).then(refresh, (err: Error) => {
        log.debug(`observe failed: ${err.message}`)
      })
    }
  }
}

/**
 * A link over the relay's HTTP API (`GET /api/ledger`, `POST /api/evidence`): for the SDK and the
 * CLI. `reporter` (the client's peer id) is credited with the reward when its evidence slashes.
 */
export function httpLedgerLink(base: string, reporter?: string, fetchFn: typeof fetch = fetch): LedgerLink & { refresh: () => Promise<void> } {
  return cachedLedgerLink({
    standings: async () => {
      const r = await fetchFn(new URL('/api/ledger', base))
      if (!r.ok) throw new TesseraError('UNREACHABLE', `GET /api/ledger: HTTP ${r.status}`)
      return ((await r.json()) as { standings: PeerStanding[] }).standings
    },
    slash: async (e) => {
      const r = await fetchFn(new URL('/api/evidence', base), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...e, receipts: e.receipts.map(bytesToBase64), reporter })
      })
      const body = (await r.json()) as SlashOutcome & { error?: { message: string } }
      // Rate-limited or failing, the relay judged nothing; a 4xx other than 429 is a judgement (the evidence is malformed).
      const unjudged = r.status === 429 || r.status >= 500
      if (!r.ok) return { slashed: false, amount: 0, reason: body.error?.message ?? `HTTP ${r.status}`, ...(unjudged ? { unjudged } : {}) }
      return body
    }
  })
}
