/** The claim board's knobs, each with why it has its value; resolved once when a board is made. */
export interface BoardDefaults {
  revealMs: number
  webhookMs: number
  resumeWaitMs: number
  keep: number
  auditRate: number
  watchers: number
  auditMs: number
  maxPending: number
}

export const BOARD_DEFAULTS: Readonly<BoardDefaults> = {
  /** How long a party has to answer each reveal of a dispute: a reveal is a table look-up, so 5 s is generous. */
  revealMs: 5000,
  /** How long a webhook may take to take a settlement (it is sent once, not retried). */
  webhookMs: 10_000,
  /** How long a claim resumed after a restart waits for a watcher and a referee to re-announce (records refresh every 10 s). */
  resumeWaitMs: 60_000,
  /** Settled claims kept in memory for GET /api/claims/:id (the store keeps them all). */
  keep: 1000,
  /** The audit policy: the chance that a hop of a claim is audited (1 = every hop). */
  auditRate: 1,
  /**
   * Watchers drawn for each hop, each re-executing it alone: two, so that one watcher in league
   * with the accused cannot vouch a wrong hop through (a hop is clean only when every one matches).
   */
  watchers: 2,
  /**
   * How long after its window a claim's audits and challenges may still run: a claim settles only
   * when they have, and one still open then ends unverified (never final). Each reveal of a dispute
   * has revealMs besides, and a party that misses it loses the bisection.
   */
  auditMs: 120_000,
  /** Claims pending at once on a board: each holds its rows until it settles, so more are refused (503) until some settle. */
  maxPending: 1000
}
