/**
 * The HTTP API's error replies, in OpenAI's shape `{ error: { message, type, code } }`. The status
 * of a thrown error is shared/errors.ts's httpStatus (the one mapping for every API); the type
 * follows from the status; the code is the TesseraError's, or the OpenAI string of a BadRequest.
 */
import { httpStatus, InputError, TesseraError } from '../shared/errors.js'

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
  return { status, body: { error: { message: err.message, type: errorType(status), code } } }
}

/** A JSON error response for what the HTTP layer itself refuses (no such route or file, too large, a bad range). */
export function jsonError(status: number, message: string, code: string, headers = new Headers()): Response {
  headers.set('Content-Type', 'application/json')
  const body: ErrorBody = { error: { message, type: errorType(status), code } }
  return new Response(JSON.stringify(body), { status, headers })
}
