/**
 * The peer service: what a native node and a browser tab both run once they have a runtime (a
 * `load` function) and a transport (a started libp2p node). It serves /tessera/infer/1.0.0 and
 * /tessera/dispute/1.0.0 and /tessera/handoff/1.0.0 (and /tessera/zk/1.0.0 when given provers), keeps a signed capability
 * record fresh on the relay, and, for a peer that chose its own layers, moves when that helps.
 *
 *   const peer = await startPeerService({ libp2p, key, relay, manifest, shards, load, memory: { bytes } })
 *   peer.layers; peer.capability(); peer.stats
 *   await peer.stop() // withdraws the record, stops libp2p, frees the shards
 *
 * Lifecycle: the start resolves once the shards are loaded and timed, the protocols handled and
 * the first record accepted by the relay; from then on the record is refreshed every
 * announceEveryMs. The service owns libp2p from the call on: stop(), or a failed start, stops it.
 */
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import type { Capability } from '../protocol/capability.js'
import { DISPUTE_PROTOCOL, HANDOFF_PROTOCOL, INFER_PROTOCOL } from '../protocol/infer.js'
import { libp2pDialer } from '../route/directory.js'
import { ZK_PROTOCOL } from '../protocol/zk.js'
import type { Manifest, ShardEntry } from '../manifest.js'
import type { DeviceKind, ShardRunner } from '../runner.js'
import type { Signer } from '../verify/receipt.js'
import { plannedCoverage } from './select.js'
import { logger, type Logger } from '../log.js'
import { VERSION } from '../version.js'
import { resolvePeerConfig, type PeerConfig, type PeerOverrides } from './config.js'
import { announce, withdraw } from './announce.js'
import { createInferHandler, type ServeStats } from './serve.js'
import { createZkHandler, type ZkServed } from './zk-serve.js'
import type { StepFault } from './fault.js'
import { cacheCap, type MemoryBudget } from './memory.js'
import { measureMsPerLayer } from './speed.js'
import { otherPeers, relayPeerId } from './peers.js'
import { TesseraError } from '../errors.js'
import { rebalanceMove } from './rebalance.js'
import { repeat } from './repeat.js'

export interface PeerServiceOptions {
  /** The transport: a started libp2p node (the service stops it). */
  libp2p: Libp2p
  /** The node's libp2p key: it signs the record and every receipt. */
  key: PrivateKey
  /** Signs receipts with `key` faster than libp2p's own (host/native-crypto.ts); libp2p's by default. */
  sign?: Signer
  /**
   * The relay's multiaddr, or several relays' (a federation, relay/federation.ts): the record goes
   * to each, so it stays listed while any one of them is up; the other peers are read from the first that answers.
   */
  relay: string | string[]
  manifest: Manifest
  /** The shards to serve first: consecutive, in layer order. */
  shards: ShardEntry[]
  /** The runtime: loads shards (checked against the manifest), in order. */
  load: (shards: ShardEntry[]) => Promise<ShardRunner[]>
  /** The memory budget, or how to find it once the runtime has said which device it got. */
  memory: MemoryBudget | ((device: DeviceKind) => MemoryBudget)
  /** The device to advertise (default: what the loaded shards report). */
  device?: DeviceKind
  /** A fault to commit in each step's reply, for drills (node/fault.ts); undefined = honest. */
  fault?: StepFault
  /** ZK models to prove inferences of; `forge` is a drill (answers no longer verify). */
  zk?: { models: Map<string, ZkServed>; forge?: boolean }
  /** For a peer that chose its own layers: move when that helps, taking at most `fit` layers. */
  rebalance?: { fit: number }
  limits?: PeerOverrides
  /** Reported in the record (default: this build's, shared/version.ts). */
  version?: string
  /** Where progress and warnings go (default: the tessera:node logger); a tab shows warnings on its page. */
  log?: Logger
}

export interface PeerService {
  /** The layers served now (a rebalancing peer may move). */
  readonly layers: [number, number]
  readonly msPerLayer: number
  readonly device: DeviceKind
  /** The record as it would be announced now. */
  capability: () => Capability
  /** Live counters of the infer handler. */
  stats: ServeStats
  stop: () => Promise<void>
}

export async function startPeerService(o: PeerServiceOptions): Promise<PeerService> {
  const cfg = resolvePeerConfig(o.limits)
  const log = o.log ?? logger('tessera:node')
  let runners: ShardRunner[] = []
  try {
    runners = await o.load(o.shards)
    return await serve(o, cfg, log, runners)
  } catch (err) {
    await o.libp2p.stop()
    for (const r of runners) await r.dispose()
    throw err
  }
}

const spanOf = (shards: ShardEntry[]): [number, number] => [shards[0].layers[0], shards[shards.length - 1].layers[1]]

async function serve(o: PeerServiceOptions, cfg: PeerConfig, log: Logger, first: ShardRunner[]): Promise<PeerService> {
  const { libp2p: node, manifest: m } = o
  const peer = node.peerId.toString()
  const sign: Signer = o.sign ?? (async (b) => await o.key.sign(b))
  const measure = async (rs: ShardRunner[]): Promise<number> => {
    const n = rs[rs.length - 1].shard.layers[1] - rs[0].shard.layers[0]
    return await measureMsPerLayer(rs, n, { dim: m.config.dim, vocabSize: m.config.vocabSize, ...cfg.speed })
  }
  let shards = o.shards
  let runners = first
  const device = o.device ?? runners[0].device
  const memory = typeof o.memory === 'function' ? o.memory(device) : o.memory
  let msPerLayer = await measure(runners)
  log.info(`serving ${m.name} layers [${spanOf(shards).join(',')}) on ${device}, ${msPerLayer.toFixed(3)} ms/layer`)

  // One cap: what the handler enforces is what the record advertises as kvRoom.
  const maxCacheTokens = (): number => cacheCap(m, shards, memory)
  const relays = [o.relay].flat()
  // Each known once named in its address or connected to.
  const relayIds = new Map<string, string>()
  const isRelay = (remote: string): boolean => {
    for (const r of relays) {
      if (relayIds.has(r)) continue
      const id = relayPeerId(node, r)
      if (id !== undefined) relayIds.set(r, id)
    }
    return [...relayIds.values()].includes(remote)
  }
  const handler = createInferHandler({
    root: m.root,
    peer,
    sign,
    runners,
    fault: o.fault,
    maxSessions: cfg.maxSessions,
    // Every peer gets its share; a relay we announce to carries all its HTTP users' sessions (config.ts).
    sessionsPerPeer: (remote) => (isRelay(remote) ? cfg.relaySessions : cfg.sessionsPerPeer),
    sessionTtlMs: cfg.sessionTtlMs,
    openIdleMs: cfg.openIdleMs,
    lingerMs: cfg.lingerMs,
    maxCacheTokens,
    dialer: libp2pDialer(node),
    dim: m.config.dim
  })
  const { stats } = handler
  await node.handle(INFER_PROTOCOL, handler.handle, { runOnLimitedConnection: true, maxInboundStreams: cfg.streams.infer })
  await node.handle(DISPUTE_PROTOCOL, handler.handleDispute, { runOnLimitedConnection: true, maxInboundStreams: cfg.streams.dispute })
  await node.handle(HANDOFF_PROTOCOL, handler.handleHandoff, { runOnLimitedConnection: true, maxInboundStreams: cfg.streams.handoff })
  const zk = o.zk?.models ?? new Map<string, ZkServed>()
  if (zk.size > 0) {
    const prover = createZkHandler({ peer, sign, models: zk, forge: o.zk?.forge, maxQueue: cfg.zkQueue })
    await node.handle(ZK_PROTOCOL, prover.handle, { runOnLimitedConnection: true, maxInboundStreams: cfg.streams.zk })
    log.info(`proving ${[...zk.keys()].join(', ')} (zk)`)
  }

  let moving: [number, number] | undefined // where a rebalancing move goes, while it loads
  const capability = (): Capability => {
    const now = Date.now()
    const layers = spanOf(shards)
    return {
      peer,
      addrs: node.getMultiaddrs().map(String),
      device,
      memory: memory.bytes,
      msPerLayer,
      model: m.name,
      root: m.root,
      modelLayers: m.config.nLayers,
      layers,
      shardBounds: [layers[0], ...shards.map((s) => s.layers[1])],
      kvRoom: Math.max(0, maxCacheTokens() - stats.cachedTokens),
      sessions: stats.sessions,
      version: o.version ?? VERSION,
      issued: now,
      expires: now + cfg.recordTtlMs,
      ...(zk.size > 0 ? { zk: [...zk.keys()] } : {}),
      ...(moving !== undefined ? { moving } : {})
    }
  }
  // Relays that failed the last announce: each is reported when it goes down and when it is back, not every time.
  const down = new Set<string>()
  /** Announces to every relay at once; fails only when none took the record (a refusal first: it names what to fix). */
  const publish = async (): Promise<void> => {
    const cap = capability()
    // A relay that was down gets one try, so a dead one does not slow the others' refreshes.
    const tries = await Promise.allSettled(
      relays.map(async (r) => await announce(node, r, cap, o.key, down.has(r) ? { ...cfg.announce, attempts: 1 } : cfg.announce))
    )
    const failed = tries.flatMap((t, i) => (t.status === 'rejected' ? [{ relay: relays[i], err: t.reason as Error }] : []))
    if (failed.length === relays.length) {
      throw failed.find((f) => f.err instanceof TesseraError && f.err.code === 'ANNOUNCE_REFUSED')?.err ?? failed[0].err
    }
    for (const [i, t] of tries.entries()) {
      const r = relays[i]
      if (t.status === 'rejected' && !down.has(r)) log.warn(`announcing to ${r} failed (${(t.reason as Error).message}); still listed by the others`)
      if (t.status === 'fulfilled' && down.delete(r)) log.info(`announcing to ${r} works again`)
      if (t.status === 'rejected') down.add(r)
    }
  }

  // Shards left by a move, kept until the sessions opened on them have had time to close.
  const retired = new Map<ReturnType<typeof setTimeout>, ShardRunner[]>()
  const retire = (old: ShardRunner[]): void => {
    const timer = setTimeout(() => {
      retired.delete(timer)
      for (const r of old) void r.dispose()
    }, cfg.sessionTtlMs)
    retired.set(timer, old)
  }
  let stopped = false
  const rebalance = async (fit: number): Promise<void> => {
    if (stats.sessions > 0) return // never move under a client's feet
    const others = plannedCoverage(await otherPeers(node, relays, m), m.config.nLayers)
    const move = rebalanceMove(m, spanOf(shards), others, fit)
    if (move === undefined) return
    log.info(
      `moving from layers [${spanOf(shards).join(',')}) to [${spanOf(move.to).join(',')}): ` +
        `the network's least-covered layer goes from ${move.minBefore} to ${move.minAfter} peers`
    )
    // Say where we go before loading (which takes a while), so peers deciding meanwhile count us there.
    moving = spanOf(move.to)
    await publish().catch((err: Error) => log.warn(`announcing the move failed: ${err.message}`))
    let fresh: ShardRunner[]
    try {
      fresh = await o.load(move.to)
    } catch (err) {
      moving = undefined
      await publish().catch(() => {})
      throw err
    }
    moving = undefined
    if (stopped) {
      for (const r of fresh) await r.dispose()
      return
    }
    const old = runners
    handler.setRunners(fresh)
    runners = fresh
    shards = move.to
    msPerLayer = await measure(runners)
    await publish()
    retire(old)
  }

  await publish()
  const stops = [
    repeat(cfg.announceEveryMs, async () => {
      await publish().catch((err: Error) => {
        log.warn(`announce failed: ${err.message}`)
      })
    })
  ]
  const { rebalance: moves } = o
  if (moves !== undefined) {
    stops.push(
      repeat(cfg.rebalanceEveryMs, async () => {
        await rebalance(moves.fit).catch((err: Error) => {
          log.warn(`rebalancing failed: ${err.message}`)
        })
      })
    )
  }
  log.info(
    `peer ${peer} announced to ${relays.length === 1 ? 'the relay' : `${relays.length - down.size} of ${relays.length} relays`}; ${cfg.maxSessions} sessions at most, ${cfg.sessionsPerPeer} per peer (the relay's: ${cfg.relaySessions})`
  )

  return {
    get layers() {
      return spanOf(shards)
    },
    get msPerLayer() {
      return msPerLayer
    },
    device,
    capability,
    stats,
    async stop() {
      if (stopped) return
      stopped = true
      for (const s of stops) s()
      await Promise.all(relays.map(async (r) => await withdraw(node, r, capability(), o.key, cfg.announce.withdrawTimeoutMs)))
      await node.stop()
      for (const r of runners) await r.dispose()
      for (const [timer, old] of retired) {
        clearTimeout(timer)
        for (const r of old) await r.dispose()
      }
      retired.clear()
    }
  }
}
