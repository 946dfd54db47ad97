/**
 * Limits every peer enforces on what it receives. Named once here so node, relay and browser
 * agree; each has a reason. The peer service's own knobs (sessions, stream caps, intervals) are
 * in shared/node/config.ts.
 */

/** Largest single message: a 2048-token prefill of hidden size 8192 in fp32 is 64 MiB. */
export const MAX_MESSAGE_BYTES = 64 * 2 ** 20
/**
 * Length-prefixed stream options for messages up to `maxBytes`: libp2p buffers unread bytes only
 * up to 4 MiB by default, which would abort any stream a larger (allowed) message arrives on.
 */
export const lpLimits = (maxBytes: number): { maxDataLength: number; maxBufferSize: number } => ({ maxDataLength: maxBytes, maxBufferSize: maxBytes + 2 ** 20 })

/** Tokens one forward step may carry (a prefill or a replayed history). */
export const MAX_STEP_TOKENS = 4096
/** Capability records expire unless refreshed (peers re-announce every TTL/3). */
export const RECORD_TTL_MS = 30_000
/** Largest capability record or announce message. */
export const MAX_RECORD_BYTES = 16 * 1024
