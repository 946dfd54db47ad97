/**
 * The peer service's knobs (shared/node/service.ts), the same for a native node and a browser
 * tab, each with why it has its value. `resolvePeerConfig` fills in what a caller left out, once,
 * when the service starts. The limits every peer enforces on what it receives (message sizes,
 * step tokens, record TTL) stay in shared/protocol/limits.ts: they are the protocol, not a knob.
 */
import { RECORD_TTL_MS } from '../protocol/limits.js'

/** Sessions one peer keeps at once; more are refused with BUSY so the client routes elsewhere. */
const MAX_SESSIONS = 64
/** A session with no message for this long is dropped and its KV cache freed. */
const SESSION_TTL_MS = 60_000
/**
 * Sessions one remote peer may hold at once: an eighth of the node, at least 4. One peer (or a
 * hog keeping sessions alive with a token now and then) can then take only its share, and the
 * rest answer everyone else.
 */
const SESSIONS_PER_PEER = Math.max(4, MAX_SESSIONS / 8)

export const PEER_DEFAULTS = {
  /**
   * Inbound streams one connection may hold open at once, per protocol; past the cap libp2p
   * resets the stream. The relay's client multiplexes every session it routes through one
   * connection, so infer is 4 × MAX_SESSIONS: every session fits, and the ones past the session
   * limit still get a BUSY reply instead of a reset. A dispute request is one short stream, at
   * most one per session at a time. ZK proofs queue `zkQueue` deep; 16 leaves room to answer BUSY.
   * An upstream hop hands each forwarded session's rows over one stream: as many as infer.
   */
  streams: { infer: 4 * MAX_SESSIONS, dispute: MAX_SESSIONS, handoff: 4 * MAX_SESSIONS, zk: 16 },
  maxSessions: MAX_SESSIONS,
  /**
   * The per-peer share, counted by the remote libp2p peer id of the stream's connection (noise
   * authenticates it). Past it that peer alone gets BUSY; others still open sessions.
   */
  sessionsPerPeer: SESSIONS_PER_PEER,
  /**
   * The relay the node announces to is the one exception: its client opens the sessions of every
   * HTTP user it serves through its one peer id, so it may hold the whole node (MAX_SESSIONS).
   * Sharing it out among those users is the relay's job (its HTTP limits), not the node's.
   */
  relaySessions: MAX_SESSIONS,
  sessionTtlMs: SESSION_TTL_MS,
  /**
   * A stream that has not forwarded yet (no open, or open and no step) is dropped after this.
   * Above the client's 15 s floor for a hop's first step (shared/client/config.ts): a route's last hop is
   * opened with the others and first forwards once every hop before it has run the prefill.
   */
  openIdleMs: 20_000,
  /**
   * After its last reply (an error, an expiry), how long a stream is left for the client to read
   * it and hang up before it is reset. A session's TTL: a client coming back to an expired session
   * within it still reads the EXPIRED reply rather than a bare reset.
   */
  lingerMs: SESSION_TTL_MS,
  /** Proofs waiting at most on /tessera/zk/1.0.0 (each takes the cores for a second or more). */
  zkQueue: 4,
  /** A capability record lives this long unless refreshed (the protocol's TTL). */
  recordTtlMs: RECORD_TTL_MS,
  /** Re-announce three times per TTL: two lost announces in a row still leave the record alive. */
  announceEveryMs: RECORD_TTL_MS / 3,
  /**
   * One announce: its time-out, tries (a stream can be cut while a busy relay or tab starts up)
   * and the back-off before try i (i × backoffMs). Withdrawing on the way out gets one short try.
   */
  announce: { timeoutMs: 10_000, attempts: 3, backoffMs: 1000, withdrawTimeoutMs: 2000 },
  /** Petals checks its balance about every two minutes; a minute keeps a small swarm responsive. */
  rebalanceEveryMs: 60_000,
  /**
   * The self-measured ms/layer: timed decode steps after `context` tokens of prefill. Few steps:
   * it runs at start and after each move, and routing only needs the order of magnitude.
   */
  speed: { steps: 4, context: 16 }
}

export type PeerConfig = typeof PEER_DEFAULTS

/** What a caller may override: any knob, and any field of a grouped one. */
export type PeerOverrides = { [K in keyof PeerConfig]?: PeerConfig[K] extends object ? Partial<PeerConfig[K]> : PeerConfig[K] }

/** The defaults with `o` laid over them (one level deep for grouped knobs); an undefined field keeps its default. */
export function resolvePeerConfig(o: PeerOverrides = {}): PeerConfig {
  const given = <T extends object>(x: T | undefined): Partial<T> => Object.fromEntries(Object.entries(x ?? {}).filter(([, v]) => v !== undefined)) as Partial<T>
  return {
    ...PEER_DEFAULTS,
    ...given(o),
    streams: { ...PEER_DEFAULTS.streams, ...given(o.streams) },
    announce: { ...PEER_DEFAULTS.announce, ...given(o.announce) },
    speed: { ...PEER_DEFAULTS.speed, ...given(o.speed) }
  } as PeerConfig
}
