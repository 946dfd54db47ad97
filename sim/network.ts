/**
 * A simulated Tessera network: model peers (sim/model.ts) behind the shipped protocol handler
 * (shared/node/serve.ts), each with its own key, signing real receipts (sim/crypto.ts); a Dialer and a
 * PeerDirectory over simulated links (sim/link.ts), which is all the shipped client needs. Run it
 * inside simulate() (sim/run.ts): every delay below is virtual time.
 *
 *   const net = simNetwork({ name: 'llama-2-70b', width: 32, vocab: 64, layers: 80 })
 *   await net.add({ layers: [0, 27], cost, device: 'cuda', uplinkMbps: 100, rttMs: 100 })
 *   const client = createClient({ dialer: net.dialer, directory: net.directory })
 */
import type { Stream } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { createInferHandler, type InferHandler, type Remote } from '../shared/node/serve.js'
import { parseFault, stepFault } from '../shared/node/fault.js'
import { DISPUTE_PROTOCOL, HANDOFF_PROTOCOL, INFER_PROTOCOL } from '../shared/protocol/infer.js'
import { RECORD_TTL_MS } from '../shared/protocol/limits.js'
import { PEER_DEFAULTS } from '../shared/node/config.js'
import { CLIENT_DEFAULTS } from '../shared/client/config.js'
import type { Capability } from '../shared/protocol/capability.js'
import type { Dialer } from '../shared/client/remote-hop.js'
import type { PeerDirectory } from '../shared/route/directory.js'
import type { ShardEntry } from '../shared/manifest.js'
import type { DeviceKind, ShardRunner } from '../shared/runner.js'
import type { BatchLimits } from '../shared/batch.js'
import { sha256Hex } from '../shared/hash.js'
import { VERSION } from '../shared/version.js'
import { simSigner } from './crypto.js'
import { modelRunner, type ComputeCost, type Machine, type ModelShape } from './model.js'
import { linkedPair, uplink, type Uplink } from './link.js'

export interface SimModel extends ModelShape {
  name: string
}

export interface SimPeerSpec {
  layers: [number, number]
  /** Where hops may start or end inside `layers` (default: only at its ends, one shard). */
  shardBounds?: number[]
  cost: ComputeCost
  device: DeviceKind
  uplinkMbps: number
  /** Round trip to the client (a star around the client: the client mediates every hop). */
  rttMs: number
  /** A shared/node/fault.ts spec ('random-output', …); absent: honest. */
  fault?: string
  /** KV room it advertises and enforces, in tokens. */
  kvTokens?: number
  /** Continuous batching (shared/batch.ts limits; default the node's): `{ maxRows: 1 }` runs every step alone. */
  batch?: BatchLimits
  /** Spend every step's compute before answering, even alone (hop marks then show it: the calibration); default only where a batch could form. */
  computeInTime?: boolean
}

export interface SimPeer {
  readonly id: string
  readonly spec: SimPeerSpec
  readonly handler: InferHandler
  readonly alive: boolean
  capability(): Capability
  /** The layers it serves now (its spec's, until it moves). */
  readonly layers: [number, number]
  /** Announces that it is loading `layers` to move there (its record's `moving`), as a node's rebalancing does before it loads. */
  plan(layers: [number, number]): void
  /** Serves `layers`, in shards cut at `shardBounds`, from now on (rebalancing), and announces it. */
  move(layers: [number, number], shardBounds: number[]): void
  /** kill -9: dials fail, open streams reset, its record stays listed until it expires or `withdraw`. */
  kill(o?: { withdraw?: boolean }): void
}

export interface SimNetwork {
  model: SimModel
  root: string
  dialer: Dialer
  directory: PeerDirectory
  peers: SimPeer[]
  /** The default client's uplink, which `dialer` sends through. */
  client: Uplink
  /** What the relay's registry holds now (a node choosing its layers asks it; clients see `directory`, cached). */
  records(): Capability[]
  /** A dialer for another client, sending through its own uplink (users do not share one). */
  dialerFrom(up: Uplink): Dialer
  add(spec: SimPeerSpec): Promise<SimPeer>
}

const DEFAULT_KV_TOKENS = 1 << 20
/** Round trips a new connection costs before its first stream (see the dialer). */
const CONNECT_RTTS = 2

export function simNetwork(model: SimModel, o: { clientUplinkMbps?: number } = {}): SimNetwork {
  const root = sha256Hex(new TextEncoder().encode(`tessera-sim:${model.name}:${model.layers}`))
  const byId = new Map<string, { peer: SimPeer; withdrawn: boolean; up: Uplink; machine: Machine; streams: Set<Stream> }>()
  const client = uplink(o.clientUplinkMbps ?? 100)
  const held = (m: Machine) => (): number => (m.hold.at === Date.now() ? m.hold.until : 0)
  // A client's dialer: its streams leave through `from`, the client's own uplink (it sends every hop's input).
  // A peer's (`self`: a node handing its output to the next hop) also holds its writes until its machine has computed them.
  const dialerFrom = (from: Uplink, self?: { id: string; machine: Machine }): Dialer => {
    const connected = new Set<string>() // peers this client has a connection to
    return {
      async dial(cap, protocol, signal) {
        const p = byId.get(cap.peer)
        // A stream costs a round trip (multistream-select); a first one to a peer also the connection:
        // TCP's handshake and Noise XX's first two messages (the third goes with the data), two more.
        const fresh = !connected.has(cap.peer)
        await new Promise((r) => setTimeout(r, (p?.peer.spec.rttMs ?? 0) * (fresh ? 1 + CONNECT_RTTS : 1)))
        signal.throwIfAborted()
        if (p === undefined || !p.peer.alive) throw new Error(`dial ${cap.peer.slice(-8)}: connection refused`)
        const h = p.peer.handler
        const handle =
          protocol === INFER_PROTOCOL ? h.handle : protocol === DISPUTE_PROTOCOL ? h.handleDispute : protocol === HANDOFF_PROTOCOL ? h.handleHandoff : undefined
        if (handle === undefined) throw new Error(`${cap.peer.slice(-8)} does not support ${protocol}`)
        connected.add(cap.peer)
        const [out, inbound] = await linkedPair(protocol, from, p.up, p.peer.spec.rttMs, held(p.machine), self === undefined ? undefined : held(self.machine))
        p.streams.add(inbound)
        inbound.addEventListener('close', () => p.streams.delete(inbound))
        // Who dialled, as noise would authenticate it: a node handing off names itself, a client nobody.
        const remote = self === undefined ? undefined : ({ remotePeer: { toString: () => self.id } } as unknown as Remote)
        handle(inbound, remote).catch(() => {})
        return out
      }
    }
  }
  const dialer = dialerFrom(client)
  // The relay's registry as clients see it: fetched at most once per directoryCacheMs, as the shipped relayDirectory caches it.
  const records = (): Capability[] => {
    const now = Date.now()
    return [...byId.values()]
      .filter((p) => !p.withdrawn)
      .map((p) => p.peer.capability())
      .filter((c) => c.expires > now)
  }
  let listed: { at: number; peers: Capability[] } | undefined
  const directory: PeerDirectory = {
    async list() {
      const now = Date.now()
      if (listed === undefined || now - listed.at >= CLIENT_DEFAULTS.directoryCacheMs) listed = { at: now, peers: records() }
      return listed.peers.filter((c) => c.expires > now)
    }
  }
  const net: SimNetwork = {
    model,
    root,
    dialer,
    dialerFrom,
    records,
    directory,
    peers: [],
    client,
    async add(spec) {
      const key = await generateKeyPair('Ed25519')
      const id = peerIdFromPrivateKey(key).toString()
      let layers = spec.layers
      let bounds = spec.shardBounds ?? [spec.layers[0], spec.layers[1]]
      const up = uplink(spec.uplinkMbps)
      const machine = { busyUntil: 0, hold: { at: -1, until: 0 } } // its accelerator, which all its shards share
      const runnersFor = (bounds: number[]): ShardRunner[] =>
        bounds.slice(1).map((end, i) => {
          const shard: ShardEntry = {
            index: i,
            layers: [bounds[i], end],
            dtype: 'int4',
            files: [],
            sha256: sha256Hex(new TextEncoder().encode(`${root}:${bounds[i]}-${end}`)),
            bytes: 0
          }
          return modelRunner(shard, model, spec.cost, spec.device, machine, spec.batch, spec.computeInTime)
        })
      const kv = spec.kvTokens ?? DEFAULT_KV_TOKENS
      const handler = createInferHandler({
        root,
        peer: id,
        sign: simSigner(key),
        runners: runnersFor(bounds),
        maxCacheTokens: kv,
        // Forwarded steps hand the next hop its rows over this peer's own uplink (one-way: half its round trip).
        dialer: dialerFrom(up, { id, machine }),
        dim: model.width,
        ...(spec.fault !== undefined ? { fault: stepFault(parseFault(spec.fault)) } : {})
      })
      const state = { peer: undefined as unknown as SimPeer, withdrawn: false, up, machine, streams: new Set<Stream>() }
      let alive = true
      let record: Capability | undefined
      let moving: [number, number] | undefined
      state.peer = {
        id,
        spec,
        handler,
        get alive() {
          return alive
        },
        get layers() {
          return layers
        },
        capability() {
          // A live peer re-announces every announceEveryMs, as a node does (shared/node/config.ts): the
          // directory holds what it said then. A dead one's last record stays until it expires.
          const now = Date.now()
          if (record !== undefined && (!alive || now - record.issued < PEER_DEFAULTS.announceEveryMs)) return record
          record = {
            peer: id,
            addrs: [],
            device: spec.device,
            memory: 1 << 30,
            msPerLayer: spec.cost.msPerLayer,
            model: model.name,
            root,
            modelLayers: model.layers,
            layers,
            shardBounds: bounds,
            kvRoom: Math.max(0, kv - handler.stats.cachedTokens),
            sessions: handler.stats.sessions,
            version: VERSION,
            issued: now,
            expires: now + RECORD_TTL_MS,
            ...(moving !== undefined ? { moving } : {})
          }
          return record
        },
        plan(to) {
          moving = to
          record = undefined // announced at once
        },
        move(to, toBounds) {
          // As a node's rebalancing does (shared/node/service.ts): the new shards serve from now on, and it announces at once.
          moving = undefined
          layers = to
          bounds = toBounds
          handler.setRunners(runnersFor(bounds))
          record = undefined
        },
        kill(k = {}) {
          alive = false
          if (k.withdraw === true) state.withdrawn = true
          for (const s of state.streams) s.abort(new Error('peer killed'))
          state.streams.clear()
        }
      }
      byId.set(id, state)
      net.peers.push(state.peer)
      return state.peer
    }
  }
  return net
}
