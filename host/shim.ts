/**
 * Node 20 start-up shim for libp2p 3 (see README "Node versions"). libp2p 3 expects two things
 * Node 22 has built in: Promise.withResolvers and a global WebSocket. On Node 22+ this module
 * does nothing. Import it first, before anything that loads libp2p. It also hands the shared
 * core Node's native sha256 and Ed25519 checks (host/native-crypto.ts).
 */
import { WebSocket as WsWebSocket } from 'ws'
import { installNativeCrypto } from './native-crypto.js'

const P = Promise as unknown as { withResolvers?: unknown }
if (typeof P.withResolvers !== 'function') {
  P.withResolvers = function withResolvers<T>() {
    let resolve!: (v: T | PromiseLike<T>) => void
    let reject!: (e?: unknown) => void
    const promise = new Promise<T>((res, rej) => {
      resolve = res
      reject = rej
    })
    return { promise, resolve, reject }
  }
}

const g = globalThis as unknown as { WebSocket?: unknown }
if (typeof g.WebSocket === 'undefined') g.WebSocket = WsWebSocket

// Not a polyfill, but wanted by every Node entry point just as early: native crypto for the shared core.
installNativeCrypto()
