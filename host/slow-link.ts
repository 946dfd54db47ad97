/**
 * Slow links on loopback, in user space (this kernel has no netem): a process given a link shape
 * receives every byte of every connection it makes or accepts `oneWayMs` late, in order, and no
 * faster than `mbps`. Each process delays what it receives, so two processes given the same shape
 * are a round trip of 2 × oneWayMs apart: the benches and tests measure what a slow link does to
 * the real processes, not what a model says it would.
 *
 * The delay sits under the connection's encryption and multiplexing (on the multiaddr connection
 * the transport hands to the upgrader), so handshakes, every stream and every frame pay it, as
 * they would on a real link. A reset still goes at once, as it overtakes data in flight.
 */
import type { Transport, Upgrader, MultiaddrConnection } from '@libp2p/interface'
import { ConfigError } from '../shared/errors.js'

export interface LinkShape {
  /** What each received byte waits, ms: half the round trip to a peer of the same shape. */
  oneWayMs: number
  /** The link's bandwidth into this process, Mbit/s (absent: as fast as loopback). */
  mbps?: number
}

/** `TESSERA_LINK_RTT_MS` (the round trip to a process of the same shape) and `TESSERA_LINK_MBPS`, for spawned processes. */
export function linkFromEnv(env: NodeJS.ProcessEnv = process.env): LinkShape | undefined {
  const rtt = env.TESSERA_LINK_RTT_MS
  const mbps = env.TESSERA_LINK_MBPS
  if (rtt === undefined && mbps === undefined) return undefined
  const num = (name: string, v: string | undefined, ok: (n: number) => boolean): number | undefined => {
    if (v === undefined) return undefined
    const n = Number(v)
    if (!Number.isFinite(n) || !ok(n))
      throw new ConfigError(`${name}=${v}: give a number ${name.endsWith('MS') ? 'of ms, 0 or more' : 'of Mbit/s, more than 0'}`)
    return n
  }
  const rttMs = num('TESSERA_LINK_RTT_MS', rtt, (n) => n >= 0) ?? 0
  const bw = num('TESSERA_LINK_MBPS', mbps, (n) => n > 0)
  return { oneWayMs: rttMs / 2, ...(bw !== undefined ? { mbps: bw } : {}) }
}

/** Delays what `conn` receives: each chunk after the one before it, its bytes at the link's rate, then the one-way delay (exported for its test). */
export function slowConnection<C extends MultiaddrConnection>(conn: C, link: LinkShape): C {
  // The transports call these on the connection as data and the end arrive (`this.onData(buf)`).
  const target = conn as unknown as { onData(d: Uint8Array): void; onTransportClosed(err?: Error): void; status: string }
  const onData = target.onData.bind(target)
  const onClosed = target.onTransportClosed.bind(target)
  const bytesPerMs = link.mbps === undefined ? Number.POSITIVE_INFINITY : (link.mbps * 1e6) / 8 / 1000
  let freeAt = 0 // when the link has carried what came so far
  // One queue and one timer, never a timer per chunk: Node files timers by its loop's whole-ms clock, so
  // two chunks a fraction of a ms apart could fire out of order, and a reordered byte stream breaks the
  // connection's encryption (the stalled connections the slow-link benches used to see).
  const queue: Array<{ at: number; deliver: () => void }> = []
  let timer: ReturnType<typeof setTimeout> | undefined
  const flush = (): void => {
    timer = undefined
    const now = performance.now()
    while (queue.length > 0 && queue[0].at <= now) queue.shift()!.deliver()
    if (queue.length > 0) timer = setTimeout(flush, Math.max(0, queue[0].at - now))
  }
  const later = (bytes: number, deliver: () => void): void => {
    const now = performance.now()
    freeAt = Math.max(now, freeAt) + bytes / bytesPerMs
    const at = Math.max(queue.at(-1)?.at ?? 0, freeAt + link.oneWayMs)
    queue.push({ at, deliver })
    if (timer === undefined) timer = setTimeout(flush, Math.max(0, at - now))
  }
  target.onData = (data) => {
    later(data.byteLength, () => {
      if (target.status === 'open' || target.status === 'closing') onData(data) // an abort meanwhile dropped it, as a reset would
    })
  }
  target.onTransportClosed = (err) => {
    later(0, () => onClosed(err))
  }
  return conn
}

function slowUpgrader(u: Upgrader, link: LinkShape): Upgrader {
  return new Proxy(u, {
    get(target, prop, receiver) {
      if (prop === 'upgradeOutbound' || prop === 'upgradeInbound') {
        const upgrade = target[prop].bind(target) as (c: MultiaddrConnection, o: unknown) => Promise<unknown>
        return (conn: MultiaddrConnection, o: unknown) => upgrade(slowConnection(conn, link), o)
      }
      return Reflect.get(target, prop, receiver)
    }
  })
}

/** A transport (`tcp()`, `webSockets()`) whose every connection is slowed to `link`. */
export function slowed<C>(transport: (components: C) => Transport, link: LinkShape): (components: C) => Transport {
  return (components) => {
    const t = transport(components)
    return new Proxy(t, {
      get(target, prop, receiver) {
        if (prop === 'dial')
          return (ma: Parameters<Transport['dial']>[0], o: Parameters<Transport['dial']>[1]) =>
            target.dial(ma, { ...o, upgrader: slowUpgrader(o.upgrader, link) })
        if (prop === 'createListener')
          return (o: Parameters<Transport['createListener']>[0]) => target.createListener({ ...o, upgrader: slowUpgrader(o.upgrader, link) })
        return Reflect.get(target, prop, receiver)
      }
    })
  }
}
