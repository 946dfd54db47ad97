/** The claim board's knobs, each with why it has its value; resolved once when a board is made. */
export interface BoardDefaults {
  revealMs: number
  webhookMs: number
  resumeWaitMs: number
  keep: number
  auditRate: number
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
  auditRate: 1
}
