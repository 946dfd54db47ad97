/**
 * The relay's directory of capability records. Nodes announce over /tessera/announce/1.0.0;
 * clients read over /tessera/peers/1.0.0 and check the signatures themselves. A record is
 * accepted only from the peer it names, and dropped when it expires (the claim, capped at the
 * relay's TTL), when the peer's connection to the relay closes, or when several distinct clients
 * could not reach it. The speed a record claims is not trusted: routing uses what clients measured.
 */
import { lpStream } from '@libp2p/utils'
import type { Connection, Libp2p, Stream } from '@libp2p/interface'
import { decode, encode } from 'cborg'
import { ANNOUNCE_PROTOCOL, PEERS_PROTOCOL, verifyCapability, type Capability, type SignedCapability } from '../shared/protocol/capability.js'
import { MAX_MESSAGE_BYTES, MAX_RECORD_BYTES, lpLimits } from '../shared/protocol/limits.js'
import type { PeerDirectory } from '../shared/route/directory.js'
import type { GenerationResult, Generator } from '../shared/client/types.js'
import type { Dialer } from '../shared/client/remote-hop.js'
import { INFER_PROTOCOL } from '../shared/protocol/infer.js'
import { ProtocolError } from '../shared/errors.js'
import { logger } from '../shared/log.js'
import { REGISTRY_DEFAULTS } from './config.js'

const log = logger('tessera:relay:registry')

export interface Registry extends PeerDirectory {
  /**
   * Takes a signed record: from the peer it names (`from`, announced here over its own connection),
   * or relayed by another relay (`via`: that relay's peer id, relay/federation.ts). Throws
   * ProtocolError: BAD_SIGNATURE, EXPIRED, STALE (relayed, and older than the record held or the
   * peer's withdrawal), BUSY (a relay's share of relayed records is full).
   */
  accept(signed: SignedCapability, from?: string, via?: string): Promise<Capability>
  /** Relayed records listed now, per relay they came through. */
  relayedBy(): ReadonlyMap<string, number>
  /** The relay a listed record came through; undefined where its peer announced it here (or none is listed). */
  viaOf(peer: string): string | undefined
  /** The peer's own connection to this relay closed: its record goes if it was announced here, not if another relay vouches for it. */
  left(peer: string): boolean
  /** A live record even if the peer is excluded from listings (a dispute must still reach a blacklisted accused). */
  find(peer: string): Capability | undefined
  remove(peer: string): void
  /** Live records as the peers signed them, for clients that check for themselves. */
  signedRecords(): SignedCapability[]
  /** Withdrawals of the last TTL as their peers signed them: a relay meeting this one after a partition learns who left. */
  withdrawals(): SignedCapability[]
  /** What the relay makes of each live record: its expiry (capped at the TTL) and the speed routing should assume. */
  hints(): RecordHint[]
  /** A client timed a decode step of `layers` layers on `peer`: `ms` for the round trip. */
  measured(peer: string, ms: number, layers: number): void
  /**
   * `reporter` (a remote address; by default 'relay', the relay's own client) could not reach `peer`.
   * The record goes once `unreachableReports` distinct reporters said so; true when it went.
   */
  unreachable(peer: string, reporter?: string): boolean
}

/** The relay's view of one record, beside what the peer signed: clients route by these, not by the claim. */
export interface RecordHint {
  peer: string
  /** When the relay stops listing it unless re-announced: the claim, capped at the relay's TTL. */
  expires: number
  /** ms per layer and decode step: what clients measured, or, unmeasured, a claim no faster than the measured median. */
  msPerLayer: number
  measured: boolean
  /** Its `moving` is older than the grace a move gets: count the peer where it is, not where it says it goes. */
  movingStale?: boolean
}

export interface RegistryOptions {
  now?: () => number
  /** Peers to leave out of every listing (the ledger's blacklist): routing never sees them. */
  excluded?: (peer: string) => boolean
  /** Called when a peer announces for the first time (the relay may stake it). */
  onJoin?: (cap: Capability) => void
  /** The longest a record is listed without a fresh announce (ms), whatever expiry it claims. */
  ttlMs?: number
  /** Distinct reporters of failed dials that drop a record. */
  unreachableReports?: number
  /** How long a report of a failed dial counts (ms). */
  unreachableWindowMs?: number
  /** Records one other relay may have listed here at once (its own peers' and what it passes on). */
  maxPerRelay?: number
  /** How long a claimed move counts where it goes (ms). */
  moveGraceMs?: number
}

interface Entry {
  cap: Capability
  signed: SignedCapability
  /** The claimed expiry, capped at accept time + TTL. */
  until: number
  /** The relay it came through; undefined: the peer announced it here itself. */
  via?: string
  /** Since when the peer has said it is moving (kept while any move is claimed, so changing the target restarts nothing). */
  movingSince?: number
}

/** The median of `xs` (non-empty). */
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2
}

export function createRegistry(o: RegistryOptions = {}): Registry {
  const now = o.now ?? (() => Date.now())
  const ttlMs = o.ttlMs ?? REGISTRY_DEFAULTS.ttlMs
  const threshold = o.unreachableReports ?? REGISTRY_DEFAULTS.unreachableReports
  const windowMs = o.unreachableWindowMs ?? REGISTRY_DEFAULTS.unreachableWindowMs
  const maxPerRelay = o.maxPerRelay ?? REGISTRY_DEFAULTS.maxPerRelay
  const moveGraceMs = o.moveGraceMs ?? REGISTRY_DEFAULTS.moveGraceMs
  const records = new Map<string, Entry>()
  // A withdrawal per peer, kept one TTL: a copy of an older record replayed after it (by any relay) is
  // stale, and a relay that meets this one after a partition learns of it (handleRegistry lists them).
  const withdrawn = new Map<string, { issued: number; signed: SignedCapability }>()
  // Records each other relay has listed here, so that no one relay (or a stranger speaking gossipsub) can fill the registry.
  const perRelay = new Map<string, number>()
  const count = (via: string | undefined, d: number): void => {
    if (via === undefined) return
    const n = (perRelay.get(via) ?? 0) + d
    if (n > 0) perRelay.set(via, n)
    else perRelay.delete(via)
  }
  const put = (peer: string, e: Entry): void => {
    count(records.get(peer)?.via, -1)
    records.set(peer, e)
    count(e.via, 1)
  }
  const drop = (peer: string): boolean => {
    const e = records.get(peer)
    if (e === undefined) return false
    records.delete(peer)
    count(e.via, -1)
    return true
  }
  // Measured speeds outlive a record: a peer that re-joins is still as slow as it was.
  const speeds = new Map<string, number>()
  // Per peer, distinct reporters of failed dials and when each reported. They outlive a re-announce
  // (a peer that announces but does not serve still adds up), and are cleared when the record is dropped.
  const reports = new Map<string, Map<string, number>>()
  const live = (): Entry[] => {
    const t = now()
    for (const [k, r] of records)
      if (r.until < t) {
        drop(k)
        reports.delete(k)
      }
    for (const [k, w] of withdrawn) if (w.issued + ttlMs < t) withdrawn.delete(k)
    return [...records.values()].filter((r) => o.excluded?.(r.cap.peer) !== true)
  }
  /** The speed to route by: a measurement wins; a claim counts only where it is no faster than what was measured. */
  const hintsOf = (entries: Entry[]): RecordHint[] => {
    const known = entries.map((r) => speeds.get(r.cap.peer)).filter((v) => v !== undefined)
    const floor = known.length > 0 ? median(known) : 0
    return entries.map((r) => {
      const m = speeds.get(r.cap.peer)
      const claim = Number.isFinite(r.cap.msPerLayer) && r.cap.msPerLayer >= 0 ? r.cap.msPerLayer : Infinity
      const stale = r.movingSince !== undefined && now() - r.movingSince > moveGraceMs
      return { peer: r.cap.peer, expires: r.until, msPerLayer: m ?? Math.max(claim, floor), measured: m !== undefined, ...(stale ? { movingStale: true } : {}) }
    })
  }
  /** Live records as routing should see them: the relay's expiry and speed in place of the claimed ones, measured peers first. */
  const listed = (): Capability[] => {
    const entries = live()
    const hints = hintsOf(entries)
    return entries
      .map((r, i) => {
        const cap: Capability = { ...r.cap, expires: hints[i].expires, msPerLayer: hints[i].msPerLayer }
        // A move claimed past its grace counts where the peer is (clients apply the same hint: shared/route/directory.ts).
        if (hints[i].movingStale === true) delete cap.moving
        return { cap, measured: hints[i].measured }
      })
      .sort((a, b) => Number(b.measured) - Number(a.measured))
      .map((x) => x.cap)
  }
  return {
    async accept(signed, from, via) {
      const cap = await verifyCapability(signed, now())
      // A valid signature by another peer: a record is announced by the peer it names, or not at all.
      if (from !== undefined && cap.peer !== from) throw new ProtocolError('BAD_SIGNATURE', `record names ${cap.peer} but was sent by ${from}`)
      const prev = records.get(cap.peer)
      // Records are signed, not sequenced: the issue time orders relayed copies, so an old one passed on
      // (by any relay) cannot undo a newer word. The peer itself, over its own connection, is simply believed.
      const gone = withdrawn.get(cap.peer)?.issued
      if (via !== undefined && ((gone !== undefined && cap.issued <= gone) || (prev !== undefined && cap.issued < prev.cap.issued))) {
        throw new ProtocolError('STALE', `record for ${cap.peer} was issued before the one held`)
      }
      if (cap.withdrawn === true) {
        withdrawn.set(cap.peer, { issued: cap.issued, signed })
        if (drop(cap.peer)) log.info(`peer ${cap.peer.slice(-8)} left`)
        return cap
      }
      // Announced here wins over relayed: the peer's own connection then says when it is gone.
      const through = prev !== undefined && prev.via === undefined ? undefined : via
      if (through !== undefined && prev?.via !== through && (perRelay.get(through) ?? 0) >= maxPerRelay) {
        throw new ProtocolError('BUSY', `relay ${through} already has ${maxPerRelay} records listed here`)
      }
      const movingSince = cap.moving === undefined ? undefined : (prev?.movingSince ?? now())
      put(cap.peer, { cap, signed, until: Math.min(cap.expires, now() + ttlMs), via: through, movingSince })
      if (prev === undefined) {
        log.info(
          `peer ${cap.peer.slice(-8)} serves ${cap.model} layers [${cap.layers.join(',')}) on ${cap.device}${via !== undefined ? ` (via relay ${via.slice(-8)})` : ''}`
        )
      }
      // Only a relay the peer announced to stakes it: relays sharing a ledger would otherwise each grant it.
      if (through === undefined && (prev === undefined || prev.via !== undefined)) o.onJoin?.(cap)
      return cap
    },
    relayedBy: () => perRelay,
    viaOf: (peer) => records.get(peer)?.via,
    left(peer) {
      const e = records.get(peer)
      if (e === undefined || e.via !== undefined) return false
      return drop(peer)
    },
    remove(peer) {
      drop(peer)
    },
    find(peer) {
      const r = records.get(peer)
      return r !== undefined && r.until >= now() ? { ...r.cap, expires: r.until } : undefined
    },
    async list() {
      return listed()
    },
    signedRecords: () => live().map((r) => r.signed),
    withdrawals: () => {
      live() // drops the withdrawals past their TTL
      return [...withdrawn.values()].map((w) => w.signed)
    },
    hints: () => hintsOf(live()),
    measured(peer, ms, layers) {
      if (!(Number.isFinite(ms) && ms >= 0 && Number.isInteger(layers) && layers > 0)) return
      const x = ms / layers
      const prev = speeds.get(peer)
      // A moving average: one slow step (a GC pause, a busy moment) moves it, but does not make it.
      speeds.set(peer, prev === undefined ? x : prev + REGISTRY_DEFAULTS.speedAlpha * (x - prev))
    },
    unreachable(peer, reporter = 'relay') {
      if (!records.has(peer)) return false
      const t = now()
      const by = reports.get(peer) ?? new Map<string, number>()
      reports.set(peer, by)
      for (const [who, at] of by) if (t - at > windowMs) by.delete(who)
      by.set(reporter, t)
      if (by.size < threshold) return false
      drop(peer)
      reports.delete(peer)
      log.info(`peer ${peer.slice(-8)} dropped: ${by.size} reporters could not reach it`)
      return true
    }
  }
}

/**
 * The relay's own dials, reported to the registry: a peer that refuses the protocol it announced,
 * over a live connection, does not serve what its record says and goes at once; any other failed
 * dial is one report of it unreachable (the relay is one reporter among the clients).
 */
export function reportingDialer(dialer: Dialer, registry: Pick<Registry, 'remove' | 'unreachable'>): Dialer {
  return {
    async dial(peer, protocol, signal) {
      try {
        return await dialer.dial(peer, protocol, signal)
      } catch (err) {
        if ((err as Error).name === 'UnsupportedProtocolError' && protocol === INFER_PROTOCOL) {
          registry.remove(peer.peer)
          log.info(`peer ${peer.peer.slice(-8)} dropped: it does not serve ${protocol}`)
        } else if (signal?.aborted !== true || (signal.reason as Error | undefined)?.name === 'TimeoutError') registry.unreachable(peer.peer)
        throw err
      }
    }
  }
}

/** Times each decode step's hops for the registry: the relay's client measures every peer it routes through. */
export function measuring(gen: Generator, registry: Pick<Registry, 'measured'>): Generator {
  return {
    async *generate(req, signal) {
      const it = gen.generate(req, signal)
      try {
        let r = await it.next()
        while (r.done !== true) {
          // Step 0 is the prefill (the whole prompt): only single-token steps compare peers fairly.
          if (r.value.index > 0) for (const h of r.value.hops) registry.measured(h.peer, h.ms, h.layers[1] - h.layers[0])
          yield r.value
          r = await it.next()
        }
        return r.value
      } finally {
        await it.return(undefined as unknown as GenerationResult).catch(() => {})
      }
    }
  }
}

export interface RegistryServeOptions {
  /** The stake a peer holds, for the announce reply: an unstaked peer is told that checked modes will pass it over. */
  stakeOf?: (peer: string) => Promise<number>
  /** A record (or withdrawal) a peer announced here itself, once accepted: the federation passes it on to the other relays. */
  announced?: (signed: SignedCapability) => void
}

/** Serves the registry's two protocols on the relay's libp2p node. */
export async function handleRegistry(node: Libp2p, registry: Registry, so: RegistryServeOptions = {}): Promise<void> {
  // The same limits for both protocols; limited (relayed) connections may announce and list too.
  const streams = { runOnLimitedConnection: true, maxInboundStreams: REGISTRY_DEFAULTS.maxInboundStreams }
  // A peer announces over its own connection to us: when the last one closes, it is gone (or cannot
  // be told apart from gone), whatever expiry its record claims. A live peer is back at its next announce.
  node.addEventListener('peer:disconnect', (evt) => {
    const peer = evt.detail.toString()
    if (registry.left(peer)) log.info(`peer ${peer.slice(-8)} disconnected`)
  })

  await node.handle(
    ANNOUNCE_PROTOCOL,
    async (stream: Stream, connection: Connection) => {
      const lp = lpStream(stream, { maxDataLength: MAX_RECORD_BYTES * 2 })
      try {
        const msg = decode((await lp.read({ signal: AbortSignal.timeout(REGISTRY_DEFAULTS.readTimeoutMs) })).subarray()) as SignedCapability
        const known = registry.find(connection.remotePeer.toString()) !== undefined
        const cap = await registry.accept(msg, connection.remotePeer.toString())
        so.announced?.(msg)
        const stake = cap.withdrawn === true || so.stakeOf === undefined ? undefined : await so.stakeOf(cap.peer).catch(() => undefined)
        if (stake === 0 && !known)
          log.info(`peer ${cap.peer.slice(-8)} is unstaked: checked modes prefer staked peers until its operator stakes it (tessera stake)`)
        const note = stake === 0 ? 'unstaked: listed, but checked modes prefer staked peers and an unstaked witness proves nothing' : undefined
        await lp.write(encode({ ok: true, ...(stake !== undefined ? { staked: stake > 0, stake } : {}), ...(note !== undefined ? { note } : {}) }))
      } catch (err) {
        log.debug(`announce refused: ${(err as Error).message}`)
        await lp.write(encode({ ok: false, error: (err as Error).message })).catch(() => {})
      }
      await stream.close().catch(() => {})
    },
    streams
  )

  await node.handle(
    PEERS_PROTOCOL,
    async (stream: Stream, connection: Connection) => {
      const lp = lpStream(stream, lpLimits(MAX_MESSAGE_BYTES))
      try {
        const req = decode((await lp.read({ signal: AbortSignal.timeout(REGISTRY_DEFAULTS.readTimeoutMs) })).subarray()) as { t?: string; peer?: unknown }
        if (req?.t === 'unreachable' && typeof req.peer === 'string') {
          // Counted per remote address, not per peer id: ids are free, addresses are not.
          const dropped = registry.unreachable(req.peer, reporterOf(connection))
          await lp.write(encode({ ok: true, dropped }))
        } else {
          // The relay's view beside the signed records: clients check the records, and route by the hints.
          await lp.write(encode({ records: registry.signedRecords(), hints: registry.hints(), withdrawn: registry.withdrawals() }))
        }
      } catch (err) {
        log.debug(`peers request failed: ${(err as Error).message}`)
      }
      await stream.close().catch(() => {})
    },
    streams
  )
}

/** Who reports over libp2p: the connection's remote IP, as the HTTP API names it (reporterAddress), so one host is one reporter. */
function reporterOf(connection: Connection): string {
  const parts = connection.remoteAddr.toString().split('/')
  return ['ip4', 'ip6'].includes(parts[1]) ? reporterAddress(parts[2]) : connection.remotePeer.toString()
}

/** An IP as one reporter: an IPv4-mapped IPv6 address is the IPv4 one. */
export const reporterAddress = (ip: string): string => ip.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, '')
