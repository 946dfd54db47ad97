/**
 * The HTTP API's error replies, in OpenAI's shape `{ error: { message, type, code } }`. The status
 * of a thrown error is shared/errors.ts's httpStatus (the one mapping for every API); the type
 * follows from the status; the code is the TesseraError's, or the OpenAI string of a BadRequest.
 */
import { CircuitOpenError, httpStatus, InputError, TesseraError } from '../shared/errors.js'

/**
 * Seconds a 503 asks the caller to wait (Retry-After) when the error does not say (BUSY, NO_ROUTE):
 * a busy peer frees a session as soon as one of its generations ends, and a peer that joins is
 * routable after its first announce and the relay's next view refresh (1 s). 2 s lets a retry see
 * either, without inviting a tight loop.
 */
export const RETRY_AFTER_S = 2

/** A request the caller got wrong: a 400 whose body's `code` is an OpenAI-style string (`apiCode`). */
export class BadRequest extends InputError {
  readonly apiCode: string
  constructor(message: string, apiCode = 'invalid_request') {
    super(message)
    this.apiCode = apiCode
  }
}

export interface ErrorBody {
  error: { message: string; type: string; code: string }
}
export interface ErrorReply {
  status: number
  body: ErrorBody
  /** Seconds for a Retry-After header: set on every 503 (the network's state, which passes). */
  retryAfter?: number
}

/** Retry-After for an error answered with 503: the circuit breaker's own wait, rounded up to whole seconds, else RETRY_AFTER_S. */
export function retryAfterSeconds(err: unknown): number {
  const ms = err instanceof CircuitOpenError ? err.retryAfterMs : Number.NaN
  return Number.isFinite(ms) ? Math.max(1, Math.ceil(ms / 1000)) : RETRY_AFTER_S
}

/** OpenAI's error type for a status: the caller's fault, not found, the network's state, a peer's failure, or ours. */
export function errorType(status: number): string {
  if (status === 503) return 'service_unavailable'
  if (status === 502) return 'upstream_error'
  if (status >= 500) return 'server_error'
  return status === 404 ? 'not_found_error' : 'invalid_request_error'
}

/** The status and body for anything thrown while answering. Anything not a TesseraError is a bug (500). */
export function errorReply(err: unknown): ErrorReply {
  const status = httpStatus(err)
  if (!(err instanceof TesseraError)) {
    const message = `internal error: ${err instanceof Error ? err.message : String(err)}`
    return { status, body: { error: { message, type: errorType(status), code: 'internal_error' } } }
  }
  const code = err instanceof BadRequest ? err.apiCode : err.code
  const body = { error: { message: err.message, type: errorType(status), code } }
  return status === 503 ? { status, body, retryAfter: retryAfterSeconds(err) } : { status, body }
}

/** A JSON error response for what the HTTP layer itself refuses (no such route or file, too large, a bad range). */
export function jsonError(status: number, message: string, code: string, headers = new Headers()): Response {
  headers.set('Content-Type', 'application/json')
  const body: ErrorBody = { error: { message, type: errorType(status), code } }
  return new Response(JSON.stringify(body), { status, headers })
}
