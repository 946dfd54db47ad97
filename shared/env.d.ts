/**
 * THE BOUNDARY of shared/. shared/ runs unchanged in Node (20+) and in browsers, so it compiles
 * with neither @types/node nor the DOM lib (see shared/tsconfig.json): the globals below are the
 * only ones it may use. Each is a web standard that both runtimes provide, declared with just
 * the members shared/ calls today.
 *
 * Need another one? Add it here only if Node 20 and every browser we support have it, with the
 * members you call. Anything else (Buffer, process, node:*, document, window, localStorage)
 * belongs behind an interface that native-node/, relay/, host/ or web/ implements.
 *
 * Only shared/tsconfig.json includes this file: web/ and the Node projects get the real
 * declarations from the DOM lib and @types/node.
 */

// Timers (HTML timers; Node's timers module installs the same globals).

/** What setTimeout returns: a number in browsers, a Timeout object in Node. Only clearTimeout takes it. */
interface TimeoutHandle {
  readonly __timeoutHandle: unique symbol
}
/** `callback` is called with no arguments: a Promise's `resolve` fits, a `(n: number) => void` does not. */
declare function setTimeout(callback: (arg?: undefined) => void, ms?: number): TimeoutHandle
declare function clearTimeout(handle: TimeoutHandle | undefined): void

// Console, clock.

declare var console: {
  error(...data: unknown[]): void
  warn(...data: unknown[]): void
  info(...data: unknown[]): void
  log(...data: unknown[]): void
  debug(...data: unknown[]): void
}

/** High-resolution monotonic clock (High Resolution Time). */
declare var performance: { now(): number }

// Encoding (WHATWG Encoding, HTML base64).

declare class TextEncoder {
  encode(input?: string): Uint8Array<ArrayBuffer>
}
declare class TextDecoder {
  constructor(label?: string, options?: { fatal?: boolean })
  decode(input?: ArrayBuffer | ArrayBufferView): string
}
declare function btoa(data: string): string
declare function atob(data: string): string

// Cancellation (DOM AbortController / AbortSignal).

interface AbortSignal {
  readonly aborted: boolean
  readonly reason: unknown
  addEventListener(type: 'abort', listener: () => void): void
  removeEventListener(type: 'abort', listener: () => void): void
}
declare var AbortSignal: {
  readonly prototype: AbortSignal
  /** A signal that aborts with a TimeoutError DOMException after `ms` milliseconds. */
  timeout(ms: number): AbortSignal
}
declare class AbortController {
  readonly signal: AbortSignal
  abort(reason?: unknown): void
}

// HTTP (WHATWG URL and Fetch), as a client only.

declare class URL {
  constructor(url: string, base?: string | URL)
  readonly href: string
  toString(): string
}

interface RequestInit {
  method?: string
  headers?: Record<string, string>
  body?: string | Uint8Array<ArrayBuffer>
  signal?: AbortSignal
}
interface Response {
  readonly ok: boolean
  readonly status: number
  text(): Promise<string>
  json(): Promise<unknown>
  arrayBuffer(): Promise<ArrayBuffer>
}
declare function fetch(input: string | URL, init?: RequestInit): Promise<Response>
