/**
 * Node-to-node forwarding (/tessera/handoff/1.0.0): a hop hands its output straight to the next
 * hop's session instead of routing it through the client, so a token costs (hops + 1) / 2 round
 * trips instead of hops. The client still receives every hop's output and receipt and checks them
 * against what it received from the hop before; a handoff is only a faster way for the same rows to
 * arrive, never a new source of trust (protocol/infer.ts).
 *
 * Inboxes are sessions opened with `inbox`: they hold what upstream peers handed them until the
 * client's step says whose rows to take (`from`). A handoff is taken only from the peer the client
 * named, at the position the client named; an inbox holds at most two, so an upstream cannot
 * fill a node's memory, and nothing is computed on a handoff the client did not ask for.
 */
import type { Connection, Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { decodeHandoffMsg, encodeMsg, f32, firstNonFinite, HANDOFF_PROTOCOL, type HandoffMsg, type HandoffTarget } from '../protocol/infer.js'
import { lpLimits, MAX_MESSAGE_BYTES } from '../protocol/limits.js'
import { ProtocolError, TesseraError } from '../errors.js'
import type { Dialer } from '../client/remote-hop.js'
import { logger } from '../log.js'
import { frameStream } from './frames.js'

const log = logger('tessera:node:handoff')

/** Handoffs an inbox keeps before the client asks for them; older ones go first. */
const HELD = 2
/** Bytes all of a node's inboxes may hold at once: past it a handoff is refused (BUSY) and the client supplies the rows. */
export const MAX_HELD_BYTES = 256 * 2 ** 20
/**
 * How long a step's reply waits for its handoffs: past it the targets not reached yet are reported
 * unsent (the client supplies them), so a slow or unreachable next hop never makes this one late.
 */
export const HANDOFF_BUDGET_MS = 2000

export interface Handoff {
  from: string
  start: number
  seq: number
  hidden: Uint8Array
}

/** One session's inbox: handoffs waiting for the client's step, or a step waiting for its handoff. */
export class Inbox {
  private held: Handoff[] = []
  private waiter: { from: string; start: number; seq: number; resolve: (h: Handoff) => void } | undefined

  /** Bytes of rows held now. */
  get bytes(): number {
    return this.held.reduce((n, h) => n + h.hidden.byteLength, 0)
  }

  put(h: Handoff): void {
    const w = this.waiter
    if (w !== undefined && w.from === h.from && w.start === h.start && w.seq === h.seq) {
      this.waiter = undefined
      w.resolve(h)
      return
    }
    this.held = [...this.held.filter((x) => x.from !== h.from || x.start !== h.start), h].slice(-HELD)
  }

  /** The handoff from `from` of `seq` rows at `start`, now or when it comes; `cancel` gives up waiting. */
  take(from: string, start: number, seq: number): { got: Promise<Handoff>; cancel: () => void } {
    const i = this.held.findIndex((x) => x.from === from && x.start === start && x.seq === seq)
    if (i >= 0) {
      const [h] = this.held.splice(i, 1)
      this.held = this.held.filter((x) => x.start > start) // older positions can no longer be asked for
      return { got: Promise.resolve(h), cancel: () => {} }
    }
    let resolve!: (h: Handoff) => void
    const got = new Promise<Handoff>((r) => {
      resolve = r
    })
    this.waiter = { from, start, seq, resolve }
    return {
      got,
      cancel: () => {
        if (this.waiter?.resolve === resolve) this.waiter = undefined
      }
    }
  }
}

/** Who handed it: the stream's connection, whose remote peer noise authenticated. */
export type Upstream = Pick<Connection, 'remotePeer'>

/**
 * Serves /tessera/handoff/1.0.0: reads handoffs from one upstream peer into the inboxes named,
 * until the stream ends or `idleMs` pass without one. An unknown inbox or a malformed handoff
 * gets an error and ends the stream; nothing else is answered.
 */
export function createHandoffHandler(inboxes: Map<string, Inbox>, o: { maxMessageBytes: number; idleMs: number; dim?: number }) {
  return async (stream: Stream, connection?: Upstream): Promise<void> => {
    const from = connection?.remotePeer.toString()
    const frames = frameStream(stream, o.maxMessageBytes)
    try {
      if (from === undefined) throw new ProtocolError('MALFORMED', 'a handoff needs an authenticated upstream peer')
      for (;;) {
        const bytes = await frames.read(AbortSignal.timeout(o.idleMs))
        if (bytes === undefined) break
        const m = decodeHandoffMsg(bytes)
        // Rows a step could not take would fail the client's session there: refused here, the client supplies its own.
        if (o.dim !== undefined && m.hidden.byteLength !== 4 * m.seq * o.dim)
          throw new ProtocolError('MALFORMED', `a handoff must hold seq rows of ${o.dim} fp32 values`)
        if (firstNonFinite(f32(m.hidden)) >= 0) throw new ProtocolError('MALFORMED', 'handed-off hidden states must be finite')
        const inbox = inboxes.get(m.inbox)
        if (inbox === undefined) throw new ProtocolError('NOT_FOUND', `no session ${m.inbox.slice(0, 12)}… takes handoffs here`)
        let held = 0
        for (const b of inboxes.values()) held += b.bytes
        if (held + m.hidden.byteLength > MAX_HELD_BYTES)
          throw new ProtocolError('BUSY', `handoffs waiting here hold ${held} bytes, the most is ${MAX_HELD_BYTES}`)
        inbox.put({ from, start: m.start, seq: m.seq, hidden: m.hidden })
      }
      await stream.close()
    } catch (err) {
      const e = err instanceof TesseraError ? err : new ProtocolError('EXPIRED', `handoff stream idle: ${(err as Error).message}`)
      log.debug(`handoff from ${from?.slice(-8)} refused: ${e.message}`)
      await frames.write(encodeMsg({ t: 'error', code: e.code as 'MALFORMED', message: e.message }), AbortSignal.timeout(1000)).catch(() => {})
      stream.abort(e)
    }
  }
}

/** Where a session hands its outputs: one stream per target, opened on first use and kept for the session. */
export class HandoffSender {
  private readonly streams = new Map<string, Promise<{ write: (m: HandoffMsg) => Promise<void>; stream: Stream }>>()
  constructor(
    private readonly dialer: Dialer | undefined,
    private readonly dialMs: number
  ) {}

  /** Hands `m`'s rows to every target; returns the inboxes it could not reach within HANDOFF_BUDGET_MS. */
  async send(targets: HandoffTarget[], m: Omit<HandoffMsg, 'inbox' | 't'>, budgetMs = HANDOFF_BUDGET_MS): Promise<string[]> {
    const sent = await Promise.all(
      targets.map(async (t) => {
        const done = this.open(t)
          .then(async (out) => {
            await out.write({ t: 'handoff', inbox: t.inbox, ...m })
            return true
          })
          .catch((err: Error) => {
            this.streams.delete(key(t)) // the next step dials again
            log.debug(`handoff to ${t.peer.slice(-8)} failed: ${err.message}`)
            return false
          })
        let timer: ReturnType<typeof setTimeout> | undefined
        const late = new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(false), budgetMs)
        })
        // Past the budget the handoff may still land; the client has supplied the rows by then, and the stale one is never taken.
        const ok = await Promise.race([done, late])
        clearTimeout(timer)
        return ok
      })
    )
    return targets.filter((_, i) => !sent[i]).map((t) => t.inbox)
  }

  close(): void {
    for (const s of this.streams.values()) {
      void s.then(async (o) => await o.stream.close()).catch(() => {})
    }
    this.streams.clear()
  }

  private async open(t: HandoffTarget): Promise<{ write: (m: HandoffMsg) => Promise<void>; stream: Stream }> {
    let s = this.streams.get(key(t))
    if (s === undefined) {
      const dialer = this.dialer
      if (dialer === undefined) throw new TesseraError('UNREACHABLE', 'this node cannot dial other peers')
      s = (async () => {
        const stream = await dialer.dial({ peer: t.peer, addrs: t.addrs }, HANDOFF_PROTOCOL, AbortSignal.timeout(this.dialMs))
        const lp = lpStream(stream, lpLimits(MAX_MESSAGE_BYTES))
        return {
          stream,
          write: async (m: HandoffMsg) => {
            await lp.write(encodeMsg(m), { signal: AbortSignal.timeout(this.dialMs) })
          }
        }
      })()
      this.streams.set(key(t), s)
    }
    return await s
  }
}

const key = (t: HandoffTarget): string => `${t.peer}/${t.inbox}`
