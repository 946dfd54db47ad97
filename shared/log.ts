import createDebug from 'debug'

/**
 * Scoped loggers (`tessera:node:runner`, `tessera:relay:http`, …). `info` and `warn` always
 * reach the operator (stderr in Node, the console in a tab); `debug` is switched on per area
 * with DEBUG=tessera:* in Node or localStorage.debug in a browser.
 */
export interface Logger {
  info(msg: string, ...args: unknown[]): void
  warn(msg: string, ...args: unknown[]): void
  debug(msg: string, ...args: unknown[]): void
}

let quiet = false
/** Silences info (not warnings), e.g. for `--json` output. */
export function setQuiet(q: boolean): void {
  quiet = q
}

export function logger(scope: string): Logger {
  const debug = createDebug(scope)
  return {
    info: (msg, ...args) => {
      if (!quiet) console.error(`[${scope}] ${msg}`, ...args)
    },
    warn: (msg, ...args) => {
      console.error(`[${scope}] warning: ${msg}`, ...args)
    },
    debug: (msg, ...args) => {
      debug(msg, ...args)
    }
  }
}
