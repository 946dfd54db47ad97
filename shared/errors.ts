/**
 * The one error vocabulary of Tessera. Every error we throw is a TesseraError whose `code` comes
 * from ErrorCode; the wire (error replies between peers), the HTTP API and the CLI all map it the
 * same way (httpStatus below; the CLI prints `tessera: <message>` and exits 1). Messages say what
 * to do next, so a CLI, an HTTP handler or a page can show `err.message` as it is. Code that
 * decides what to do on an error looks at `code` (or the class), never at the message text.
 */

/** Every code, by where it arises. */
export const ERROR_CODES = [
  // A request that cannot be run as given (the caller's fault; never retried elsewhere).
  'INPUT',
  'CONFIG',
  'MODEL_FORMAT',
  'SHARD_HASH',
  'NOT_FOUND',
  // Not enough disk for the shard files a node would download (checked before any byte moves).
  'NO_SPACE',
  // Replies on the peer protocols (/tessera/infer, /dispute, /zk): the node names what it refused.
  'MALFORMED',
  'TOO_LARGE',
  'WRONG_MODEL',
  'WRONG_LAYERS',
  'BAD_STEP',
  'BUSY',
  'EXPIRED',
  // A signed record older than one already held (or than its peer's withdrawal): a replay, or lag.
  'STALE',
  'INTERNAL',
  // What a client sees of a peer that failed it: the session fails over.
  'UNREACHABLE',
  'TIMEOUT',
  'RESET',
  'BAD_REPLY',
  'BAD_RECEIPT',
  // A forwarded hop's receipt names other rows than its upstream sent the client: one of the two lied, nobody can tell which, the step is run again through the client.
  'BAD_HANDOFF',
  'DISPUTE_TIMEOUT',
  'ANNOUNCE_REFUSED',
  // The network as a whole.
  'NO_ROUTE',
  'BAD_ROUTE',
  'VERIFICATION_FAILED',
  'CIRCUIT_OPEN',
  'BAD_CLAIM',
  // Ledger and chain.
  'BAD_SIGNATURE',
  'LEDGER_CLOSED',
  'CHAIN',
  'CHAIN_REVERT',
  'CHAIN_UNREACHABLE',
  'NO_ANVIL',
  'ANVIL_START',
  'SOLC',
  // Zero-knowledge proofs.
  'ZK_MALFORMED',
  'ZK_WRONG_MODEL',
  'ZK_WRONG_INPUT',
  'ZK_WRONG_OUTPUT',
  'ZK_WRONG_COMMITMENT',
  'ZK_INVALID_PROOF',
  'ZK_SETUP'
] as const

export type ErrorCode = (typeof ERROR_CODES)[number]

/** Codes a node may send in an error reply on /tessera/infer/1.0.0. */
export type WireCode = 'MALFORMED' | 'TOO_LARGE' | 'WRONG_MODEL' | 'WRONG_LAYERS' | 'BAD_STEP' | 'BUSY' | 'INTERNAL' | 'EXPIRED' | 'BAD_RECEIPT' | 'NOT_FOUND'

/** Codes a peer's reply may carry that blame the request, not the peer: no failover, the caller hears of it. */
export const CALLER_FAULTS: ReadonlySet<ErrorCode> = new Set(['MALFORMED', 'TOO_LARGE', 'BAD_STEP'])

/** A code from the wire, or INTERNAL for anything a peer made up. */
export const asErrorCode = (code: unknown): ErrorCode => ((ERROR_CODES as readonly unknown[]).includes(code) ? (code as ErrorCode) : 'INTERNAL')

export class TesseraError extends Error {
  readonly code: ErrorCode
  constructor(code: ErrorCode, message: string) {
    super(message)
    this.name = new.target.name
    this.code = code
  }
}

/** A model file is not what it claims to be (bad header, wrong sizes, unknown dtype). */
export class ModelFormatError extends TesseraError {
  constructor(message: string) {
    super('MODEL_FORMAT', message)
  }
}

/** A config or preset that cannot be built (unknown preset, shapes that do not divide). */
export class ConfigError extends TesseraError {
  constructor(message: string) {
    super('CONFIG', message)
  }
}

/** A shard file whose bytes do not match the manifest: never load it. */
export class ShardHashError extends TesseraError {
  readonly file: string
  constructor(file: string, expected: string, actual: string) {
    super(
      'SHARD_HASH',
      `shard file ${file} is corrupt or tampered: sha256 ${actual.slice(0, 16)}… ` +
        `does not match the manifest's ${expected.slice(0, 16)}…; rebuild the model or download the file again`
    )
    this.file = file
  }
}

/** Input to a shard or a generation that cannot be run (wrong length, ids out of vocabulary). */
export class InputError extends TesseraError {
  constructor(message: string) {
    super('INPUT', message)
  }
}

/** A peer sent something the protocol does not allow; `code` travels back in the error reply. */
export class ProtocolError extends TesseraError {}

/** A remote hop failed (error reply, dead stream, time-out): the client re-routes around it. */
export class HopError extends TesseraError {
  readonly peer: string
  constructor(peer: string, code: ErrorCode, message: string) {
    super(code, `peer ${peer.slice(-8)}: ${message}`)
    this.peer = peer
  }
}

/** No set of live peers covers every layer of the model. */
export class NoRouteError extends TesseraError {
  constructor(message: string) {
    super('NO_ROUTE', message)
  }
}

/** Peers disagreed about a result and no majority could settle it: nothing is returned as valid. */
export class VerificationError extends TesseraError {
  constructor(message: string) {
    super('VERIFICATION_FAILED', message)
  }
}

/** Too many verification failures lately: the client pauses new requests until a health check passes. */
export class CircuitOpenError extends TesseraError {
  readonly retryAfterMs: number
  constructor(message: string, retryAfterMs: number) {
    super('CIRCUIT_OPEN', message)
    this.retryAfterMs = retryAfterMs
  }
}

/**
 * The HTTP status of each code, for every API that answers with one: the caller's fault is 4xx,
 * the network's state 503 (no route, the circuit open, every peer busy: worth retrying later), a
 * peer's failure reaching the caller 502. Anything not a TesseraError is a bug: 500.
 */
export function httpStatus(err: unknown): number {
  if (!(err instanceof TesseraError)) return 500
  switch (err.code) {
    case 'INPUT':
    case 'CONFIG':
    case 'MALFORMED':
    case 'TOO_LARGE':
    case 'BAD_STEP':
    case 'BAD_CLAIM':
      return 400
    case 'NOT_FOUND':
      return 404
    case 'NO_ROUTE':
    case 'CIRCUIT_OPEN':
    // A BUSY the client's failovers could not get around: every peer that could serve is full.
    case 'BUSY':
      return 503
    case 'INTERNAL':
      return 500
    case 'NO_SPACE':
      return 507
    default:
      return 502
  }
}
