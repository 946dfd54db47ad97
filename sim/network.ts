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
import { createInferHandler, type InferHandler } from '../shared/node/serve.js'
import { parseFault, stepFault } from '../shared/node/fault.js'
import { DISPUTE_PROTOCOL, INFER_PROTOCOL } from '../shared/protocol/infer.js'
import { RECORD_TTL_MS } from '../shared/protocol/limits.js'
import type { Capability } from '../shared/protocol/capability.js'
import type { Dialer } from '../shared/client/remote-hop.js'
import type { PeerDirectory } from '../shared/route/directory.js'
import type { ShardEntry } from '../shared/manifest.js'
import type { DeviceKind } from '../shared/runner.js'
import { sha256Hex } from '../shared/hash.js'
import { VERSION } from '../shared/version.js'
import { simSigner } from './crypto.js'
import { modelRunner, type ComputeCost, type ModelShape } from './model.js'
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
}

export interface SimPeer {
  readonly id: string
  readonly spec: SimPeerSpec
  readonly handler: InferHandler
  readonly alive: boolean
  capability(): Capability
  /** kill -9: dials fail, open streams reset, its record stays listed until it expires or `withdraw`. */
  kill(o?: { withdraw?: boolean }): void
}

export interface SimNetwork {
  model: SimModel
  root: string
  dialer: Dialer
  directory: PeerDirectory
  peers: SimPeer[]
  /** The client's own uplink (it sends every hop's input). */
  client: Uplink
  add(spec: SimPeerSpec): Promise<SimPeer>
}

const DEFAULT_KV_TOKENS = 1 << 20

export function simNetwork(model: SimModel, o: { clientUplinkMbps?: number } = {}): SimNetwork {
  const root = sha256Hex(new TextEncoder().encode(`tessera-sim:${model.name}:${model.layers}`))
  const byId = new Map<string, { peer: SimPeer; withdrawn: boolean; up: Uplink; streams: Set<Stream> }>()
  const client = uplink(o.clientUplinkMbps ?? 100)
  const dialer: Dialer = {
    async dial(cap, protocol, signal) {
      const p = byId.get(cap.peer)
      // Opening a stream costs a round trip (multistream-select over a connection already there).
      await new Promise((r) => setTimeout(r, p?.peer.spec.rttMs ?? 0))
      signal.throwIfAborted()
      if (p === undefined || !p.peer.alive) throw new Error(`dial ${cap.peer.slice(-8)}: connection refused`)
      const handle = protocol === INFER_PROTOCOL ? p.peer.handler.handle : protocol === DISPUTE_PROTOCOL ? p.peer.handler.handleDispute : undefined
      if (handle === undefined) throw new Error(`${cap.peer.slice(-8)} does not support ${protocol}`)
      const [out, inbound] = await linkedPair(protocol, client, p.up, p.peer.spec.rttMs)
      p.streams.add(inbound)
      inbound.addEventListener('close', () => p.streams.delete(inbound))
      handle(inbound).catch(() => {})
      return out
    }
  }
  const directory: PeerDirectory = {
    async list() {
      const now = Date.now()
      return [...byId.values()]
        .filter((p) => !p.withdrawn)
        .map((p) => p.peer.capability())
        .filter((c) => c.expires > now)
    }
  }
  const net: SimNetwork = {
    model,
    root,
    dialer,
    directory,
    peers: [],
    client,
    async add(spec) {
      const key = await generateKeyPair('Ed25519')
      const id = peerIdFromPrivateKey(key).toString()
      const bounds = spec.shardBounds ?? [spec.layers[0], spec.layers[1]]
      const shards: ShardEntry[] = bounds.slice(1).map((end, i) => ({
        index: i,
        layers: [bounds[i], end],
        dtype: 'int4',
        files: [],
        sha256: sha256Hex(new TextEncoder().encode(`${root}:${bounds[i]}-${end}`)),
        bytes: 0
      }))
      const up = uplink(spec.uplinkMbps)
      const runners = shards.map((s) => modelRunner(s, model, spec.cost, spec.device, up)) // the uplink is the machine's: it holds its compute clock
      const kv = spec.kvTokens ?? DEFAULT_KV_TOKENS
      const handler = createInferHandler({
        root,
        peer: id,
        sign: simSigner(key),
        runners,
        maxCacheTokens: kv,
        ...(spec.fault !== undefined ? { fault: stepFault(parseFault(spec.fault)) } : {})
      })
      const state = { peer: undefined as unknown as SimPeer, withdrawn: false, up, streams: new Set<Stream>() }
      let alive = true
      let lastIssued = Date.now()
      state.peer = {
        id,
        spec,
        handler,
        get alive() {
          return alive
        },
        capability() {
          // A live peer re-announces before its record expires; a dead one's record ages out.
          if (alive) lastIssued = Date.now()
          return {
            peer: id,
            addrs: [],
            device: spec.device,
            memory: 1 << 30,
            msPerLayer: spec.cost.msPerLayer,
            model: model.name,
            root,
            modelLayers: model.layers,
            layers: spec.layers,
            shardBounds: bounds,
            kvRoom: Math.max(0, kv - handler.stats.cachedTokens),
            sessions: handler.stats.sessions,
            version: VERSION,
            issued: lastIssued,
            expires: lastIssued + RECORD_TTL_MS
          }
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
