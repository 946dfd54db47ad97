/**
 * The ledger's rules as pure functions, and the audit chain's hashing: any backend (SQLite now,
 * a contract later) applies the same arithmetic and anyone holding the log can re-verify it.
 */
import { encode } from 'cborg'
import { bytesToHex, hexToBytes, newSha256 } from '../hash.js'
import { InputError } from '../errors.js'
import type { Evidence, LedgerEntry, LedgerRules, PeerStanding } from './types.js'

export const GENESIS_HASH = '0'.repeat(64)

export function initialStanding(peer: string, rules: LedgerRules): PeerStanding {
  return { peer, stake: 0, reputation: rules.initialReputation, slashed: 0, blacklisted: false }
}

/** Moving average towards 1 (a verified good result) or 0 (a failed one). */
export function emaReputation(reputation: number, ok: boolean, alpha: number): number {
  return (1 - alpha) * reputation + alpha * (ok ? 1 : 0)
}

/** Blacklisting is sticky: a peer that earned it keeps it whatever happens next. */
export function shouldBlacklist(s: PeerStanding, rules: LedgerRules): boolean {
  return s.blacklisted || s.reputation < rules.blacklistBelow || s.slashed >= rules.blacklistAfterSlashes
}

export function applyStake(s: PeerStanding, amount: number): PeerStanding {
  if (!Number.isFinite(amount) || amount <= 0) throw new InputError(`a stake must be a positive finite amount, not ${amount}`)
  return { ...s, stake: s.stake + amount }
}

export function applyObservation(s: PeerStanding, ok: boolean, rules: LedgerRules): PeerStanding {
  const next = { ...s, reputation: emaReputation(s.reputation, ok, rules.reputationAlpha) }
  return { ...next, blacklisted: shouldBlacklist(next, rules) }
}

/**
 * Standing: what a peer must have for its word to count, as a witness, referee or winner in
 * evidence, and as a reporter to be paid. The ledger must know it as a staked peer (stake > 0) and
 * not blacklisted: a key that never joined testifies to nothing and earns nothing, so evidence made
 * of fresh keys (anyone can mint them) cannot frame an honest peer. Returns why not, or undefined.
 */
export function standingRefusal(s: PeerStanding): string | undefined {
  if (s.blacklisted) return 'blacklisted'
  if (!(s.stake > 0)) return 'no stake: not a peer that joined'
  return undefined
}

export const hasStanding = (s: PeerStanding): boolean => standingRefusal(s) === undefined

/** A valid slash: the accused loses `slashFraction` of its stake and reputation; `reward` goes to the reporter, the rest is burned. */
export function applySlash(s: PeerStanding, rules: LedgerRules): { standing: PeerStanding; amount: number; reward: number } {
  const amount = s.stake * rules.slashFraction
  const next = { ...s, stake: s.stake - amount, slashed: s.slashed + 1, reputation: emaReputation(s.reputation, false, rules.reputationAlpha) }
  return { standing: { ...next, blacklisted: shouldBlacklist(next, rules) }, amount, reward: amount * rules.rewardFraction }
}

/**
 * The evidence's identity, for refusing it twice: kind, accused and the set of receipts.
 * `detail` is left out (free-form, so trivially varied) and receipts are sorted, so neither a
 * new comment nor a reordering makes old evidence new.
 */
export function evidenceHash(e: Evidence): string {
  const receipts = e.receipts.map((r) => bytesToHex(newSha256().update(r).digest())).sort()
  return bytesToHex(
    newSha256()
      .update(encode({ kind: e.kind, accused: e.accused, receipts }))
      .digest()
  )
}

/** What a stored entry's data becomes: JSON-safe, so hashing before and after storage agrees. */
export function normalizeData(data: Record<string, unknown>): Record<string, unknown> {
  return JSON.parse(JSON.stringify(data)) as Record<string, unknown>
}

/** sha256(prevHash bytes ‖ canonical CBOR of the fields); cborg sorts map keys, so the encoding is deterministic. */
export function entryHash(e: Omit<LedgerEntry, 'hash'>): string {
  const fields: Record<string, unknown> = { seq: e.seq, at: e.at, kind: e.kind, peer: e.peer, data: e.data }
  if (e.amount !== undefined) fields.amount = e.amount
  return bytesToHex(newSha256().update(hexToBytes(e.prevHash)).update(encode(fields)).digest())
}

export function makeEntry(prev: { seq: number; hash: string } | null, e: Pick<LedgerEntry, 'at' | 'kind' | 'peer' | 'amount' | 'data'>): LedgerEntry {
  const body: Omit<LedgerEntry, 'hash'> = {
    seq: (prev?.seq ?? 0) + 1,
    at: e.at,
    kind: e.kind,
    peer: e.peer,
    data: normalizeData(e.data),
    prevHash: prev?.hash ?? GENESIS_HASH
  }
  if (e.amount !== undefined) body.amount = e.amount
  return { ...body, hash: entryHash(body) }
}

/** Walks entries in seq order from genesis; the first one out of sequence, mislinked or mishashed is bad. */
export function verifyChain(entries: Iterable<LedgerEntry>): { ok: boolean; badSeq: number | null } {
  let prev = { seq: 0, hash: GENESIS_HASH }
  for (const e of entries) {
    if (e.seq !== prev.seq + 1 || e.prevHash !== prev.hash || e.hash !== entryHash(e))
      return { ok: false, badSeq: e.seq !== prev.seq + 1 ? prev.seq + 1 : e.seq }
    prev = e
  }
  return { ok: true, badSeq: null }
}
