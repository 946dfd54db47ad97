/**
 * Limits every peer enforces on what it receives. Named once here so node, relay and browser
 * agree; each has a reason.
 */

/** Largest single message: a 2048-token prefill of hidden size 8192 in fp32 is 64 MiB. */
export const MAX_MESSAGE_BYTES = 64 * 2 ** 20
/** Tokens one forward step may carry (a prefill or a replayed history). */
export const MAX_STEP_TOKENS = 4096
/** A session with no message for this long is dropped and its KV cache freed. */
export const SESSION_TTL_MS = 60_000
/** Sessions one node keeps at once; more are refused with "busy" so the client routes elsewhere. */
export const MAX_SESSIONS = 64
/** Capability records expire unless refreshed (nodes re-announce every TTL/3). */
export const RECORD_TTL_MS = 30_000
/** Largest capability record or announce message. */
export const MAX_RECORD_BYTES = 16 * 1024
