/**
 * The ledger of the verification layer: stakes, slashes, rewards, reputation and an append-only,
 * hash-chained audit log. A narrow interface so an embedded SQLite backend (relay/ledger-sqlite.ts)
 * and, later, an EVM contract can both stand behind it. Isomorphic: no node: imports.
 */

export interface Evidence {
  kind: 'redundant' | 'spot' | 'optimistic' | 'dispute' | 'signature' | 'proof'
  /** Peer id of the accused. */
  accused: string
  /**
   * Self-authenticating records (opaque bytes, verified by the EvidenceChecker): signed receipts from
   * the accused and from the peers whose results disagree with it; for a dispute, also the
   * referee's part statement and the Merkle openings (verify/dispute.ts).
   */
  receipts: Uint8Array[]
  /** Free-form detail for the audit log (JSON-safe). Not part of the evidence's identity. */
  detail: Record<string, unknown>
  /**
   * Every row the disputed hop was fed, so that a checker able to run the model re-executes it and
   * convicts only receipts that disagree with its own computation (verify/reexec.ts). Not part of the
   * evidence's identity either: the receipts' input chain already fixes these rows.
   */
  inputs?: EvidenceInputs
}

/**
 * A hop's input rows from position 0 through the end of the disputed step, in order: token ids for a
 * first hop, else `hidden` = base64 (shared/base64.ts) of little-endian fp32 [seq × width]. JSON-safe.
 */
export interface EvidenceInputs {
  tokens?: number[]
  hidden?: string
  seq: number
}

/** A checker's verdict; `matches` (when it re-executed the hop) names the peers whose receipts agree with its computation. */
export interface Verdict {
  valid: boolean
  reason: string
  matches?: string[]
  /** The checker meant to re-execute the hop and could not (busy, failed): nothing was decided, not even by witnesses. */
  unjudged?: boolean
}

/** Injected: re-checks evidence before any slash, so a ledger never trusts the reporter's word. */
export interface EvidenceChecker {
  check(e: Evidence): Promise<Verdict>
}

/** What a slash came to; `matches` passes the checker's on when it re-executed the hop. */
export interface SlashResult {
  slashed: boolean
  amount: number
  reason: string
  matches?: string[]
  /** Passed on from the verdict (or the checker failed): the evidence was not judged, so no vote may stand on it. */
  unjudged?: boolean
  /** A federation's ledger (relay/ledger-evm.ts): approved here, the slash waits for more arbiters' approvals. */
  pending?: { approvals: number; threshold: number }
}

export type LedgerEntryKind = 'stake' | 'slash' | 'reward' | 'reputation' | 'blacklist' | 'reject'

export interface LedgerEntry {
  /** 1, 2, 3… without gaps. */
  seq: number
  /** ms since epoch. */
  at: number
  kind: LedgerEntryKind
  peer: string
  amount?: number
  data: Record<string, unknown>
  /** The previous entry's hash; 64 zeros for seq 1. */
  prevHash: string
  /** sha256 over prevHash and the canonical CBOR of the other fields (see rules.ts). */
  hash: string
}

export interface PeerStanding {
  peer: string
  stake: number
  /** 0..1, an exponential moving average of verified results. */
  reputation: number
  /** How many times this peer has been slashed. */
  slashed: number
  /** Sticky: once set, only a new identity gets work again. */
  blacklisted: boolean
}

export interface Ledger {
  stake(peer: string, amount: number): Promise<PeerStanding>
  /**
   * Re-checks the evidence; valid → slash `slashFraction` of the accused's stake, reward `rewardFraction` of that to `reporter`
   * if it has standing (staked, not blacklisted: rules.ts `hasStanding`; else that share is burned, `data.rewardBurned` on the slash),
   * reputation down, blacklist past the threshold; invalid → a 'reject' audit entry and nothing else changes.
   */
  slash(evidence: Evidence, reporter: string): Promise<SlashResult>
  /** A verified good result (reputation up) or a failed one (down), as a moving average. */
  observe(peer: string, ok: boolean): Promise<PeerStanding>
  standing(peer: string): Promise<PeerStanding>
  standings(): Promise<PeerStanding[]>
  isBlacklisted(peer: string): Promise<boolean>
  audit(fromSeq?: number): Promise<LedgerEntry[]>
  /** Recomputes the hash chain from genesis; returns the first bad seq or null. */
  verifyAudit(): Promise<{ ok: boolean; badSeq: number | null }>
  close(): Promise<void>
}

export interface LedgerRules {
  /** Share of the accused's stake taken per valid slash. */
  slashFraction: number
  /** Share of the slashed amount paid to the reporter; the rest is burned. */
  rewardFraction: number
  /** EMA weight of the newest observation. */
  reputationAlpha: number
  /** Blacklist once reputation falls below this. */
  blacklistBelow: number
  /** Blacklist once slashed this many times. */
  blacklistAfterSlashes: number
  /** Reputation of a peer the ledger has never seen. */
  initialReputation: number
}

export const DEFAULT_RULES: LedgerRules = Object.freeze({
  slashFraction: 0.5,
  rewardFraction: 0.5,
  reputationAlpha: 0.1,
  blacklistBelow: 0.3,
  blacklistAfterSlashes: 3,
  initialReputation: 0.5
})
