/**
 * Named errors for the whole core. Each carries a default message that says what to do next,
 * so a CLI, an HTTP handler or a page can show `err.message` as it is.
 */
export class TesseraError extends Error {
  readonly code: string
  constructor (code: string, message: string) {
    super(message)
    this.name = new.target.name
    this.code = code
  }
}

/** A model file is not what it claims to be (bad header, wrong sizes, unknown dtype). */
export class ModelFormatError extends TesseraError {
  constructor (message: string) { super('MODEL_FORMAT', message) }
}

/** A config or preset that cannot be built (unknown preset, shapes that do not divide). */
export class ConfigError extends TesseraError {
  constructor (message: string) { super('CONFIG', message) }
}

/** A shard file whose bytes do not match the manifest: never load it. */
export class ShardHashError extends TesseraError {
  readonly file: string
  constructor (file: string, expected: string, actual: string) {
    super('SHARD_HASH', `shard file ${file} is corrupt or tampered: sha256 ${actual.slice(0, 16)}… does not match the manifest's ${expected.slice(0, 16)}…; rebuild the model or download the file again`)
    this.file = file
  }
}

/** Input to a shard or a generation that cannot be run (wrong length, ids out of vocabulary). */
export class InputError extends TesseraError {
  constructor (message: string) { super('INPUT', message) }
}

/** A peer sent something the protocol does not allow; `code` travels back in the error reply. */
export class ProtocolError extends TesseraError {
  constructor (code: string, message: string) { super(code, message) }
}

/** A remote hop failed (error reply, dead stream, time-out): the client re-routes around it. */
export class HopError extends TesseraError {
  readonly peer: string
  constructor (peer: string, code: string, message: string) {
    super(code, `peer ${peer.slice(-8)}: ${message}`)
    this.peer = peer
  }
}

/** No set of live peers covers every layer of the model. */
export class NoRouteError extends TesseraError {
  constructor (message: string) { super('NO_ROUTE', message) }
}

/** Peers disagreed about a result and no majority could settle it: nothing is returned as valid. */
export class VerificationError extends TesseraError {
  constructor (message: string) { super('VERIFICATION_FAILED', message) }
}

/** Too many verification failures lately: the client pauses new requests until a health check passes. */
export class CircuitOpenError extends TesseraError {
  readonly retryAfterMs: number
  constructor (message: string, retryAfterMs: number) {
    super('CIRCUIT_OPEN', message)
    this.retryAfterMs = retryAfterMs
  }
}
