/**
 * An in-process Tessera network with no sockets. The client's only view of a network is a
 * Dialer and a PeerDirectory; here the Dialer makes an in-memory pair of real libp2p streams
 * (@libp2p/utils streamPair) and hands the far end to the peer's real protocol handler
 * (shared/node/serve.ts), which runs real onnxruntime-node shards of stories260K and signs
 * receipts with the peer's own Ed25519 key. So routing, failover, verification and the claim
 * board run as in production, in one process, in seconds.
 *
 *   const model = await modelRunners(await buildStories([2]))   // once per file; model.dispose() after
 *   const net = memoryNet(model)                                // one per test: its own peers
 *   const a = await net.add({ layers: [0, 2] })
 *   await net.add({ layers: [2, 5], fault: 'random-output' })
 *   const client = createClient({ dialer: net.dialer, directory: net.directory })
 *   a.onStep = (served) => { if (served === 3) a.kill() }   // dies mid-step 3, before answering
 */
import { streamPair } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { createInferHandler, type InferHandler, type Remote, type ServeOptions } from '../../shared/node/serve.js'
import { DISPUTE_PROTOCOL, HANDOFF_PROTOCOL, INFER_PROTOCOL } from '../../shared/protocol/infer.js'
import { RECORD_TTL_MS } from '../../shared/protocol/limits.js'
import type { Capability } from '../../shared/protocol/capability.js'
import type { Dialer } from '../../shared/client/remote-hop.js'
import type { PeerDirectory } from '../../shared/route/directory.js'
import type { HopInput, ShardRunner, ShardSession } from '../../shared/runner.js'
import { VERSION } from '../../shared/version.js'
import type { ModelRunners } from './memory-model.js'

export interface PeerSpec {
  layers: [number, number]
  /** Advertised speed, which routing goes by (measured on a real node; set here so routes are predictable). */
  msPerLayer?: number
  /** A shared/node/fault.ts spec: 'random-output', 'skip-layer=1+mute', … */
  fault?: string
  /** Advertised free KV room in tokens (default: the cap less what sessions hold). */
  kvRoom?: number
  /** Limits passed to the handler (maxSessions, maxCacheTokens, sessionTtlMs, …). */
  serve?: Partial<Pick<ServeOptions, 'maxSessions' | 'maxCacheTokens' | 'sessionTtlMs' | 'maxMessageBytes'>>
}

export interface MemoryPeer {
  readonly id: string
  readonly layers: [number, number]
  readonly handler: InferHandler
  readonly alive: boolean
  /** Its record as the directory lists it now. */
  capability: () => Capability
  /**
   * kill -9: dials fail from now on, open streams are reset, a step being computed is never
   * answered. Its record stays listed (nobody withdrew it) unless `withdraw`.
   */
  kill: (o?: { withdraw?: boolean }) => void
  /**
   * Called as the peer starts computing a step, before it answers; `served` is how many steps
   * it finished before this one (over all its sessions). Killing it here kills it mid-step.
   */
  onStep?: (served: number) => void | Promise<void>
}

export interface MemoryNet {
  model: ModelRunners
  dialer: Dialer
  directory: PeerDirectory
  peers: MemoryPeer[]
  add: (spec: PeerSpec) => Promise<MemoryPeer>
  /** Every dial, in order: who was asked for which protocol. */
  dials: Array<{ peer: string; protocol: string }>
  /** Kills every peer (the model's runners stay loaded for the next network). */
  stop: () => void
  /** Peers `list()` leaves out, as relay/registry.ts leaves out the ledger's blacklist (memoryBoard sets it). */
  excluded?: (peer: string) => boolean
  /** Runs as a peer joins, before `add` returns: the relay stakes a newcomer (memoryBoard sets it). */
  onJoin?: (peer: MemoryPeer) => Promise<void>
  /** A record even when `list()` leaves it out: a dispute must still reach a blacklisted accused (registry.find). */
  find: (peer: string) => Capability | undefined
}

/** KV room a peer advertises and enforces unless told otherwise: far more than any test uses. */
const DEFAULT_CACHE_TOKENS = 1 << 16
/** The memory a record advertises: routing does not read it, the network view shows it. */
const MEMORY = 1 << 30

export function memoryNet(model: ModelRunners): MemoryNet {
  const byId = new Map<string, PeerState>()
  const peers: MemoryPeer[] = []
  const dials: MemoryNet['dials'] = []
  // `from`: the dialing peer's id, which a handler sees as the stream's authenticated remote (a node handing off); none for the client.
  const dialerFrom = (from?: () => MemoryPeer): Dialer => ({
    async dial(cap, protocol, signal) {
      signal.throwIfAborted()
      if (from !== undefined && !from().alive) throw new Error('peer killed')
      dials.push({ peer: cap.peer, protocol })
      const p = byId.get(cap.peer)
      if (p === undefined || !p.peer.alive) throw new Error(`dial ${cap.peer.slice(-8)}: connection refused`)
      const h = p.peer.handler
      const handle =
        protocol === INFER_PROTOCOL ? h.handle : protocol === DISPUTE_PROTOCOL ? h.handleDispute : protocol === HANDOFF_PROTOCOL ? h.handleHandoff : undefined
      if (handle === undefined) throw new Error(`${cap.peer.slice(-8)} does not support protocol ${protocol}`)
      const [out, inbound] = await streamPair({ protocol })
      p.open(inbound)
      const remote = from === undefined ? undefined : ({ remotePeer: { toString: () => from().id } } as unknown as Remote)
      handle(inbound, remote).catch(() => {}) // the handler answers its own errors; one it cannot send has nobody to go to
      return out
    }
  })
  const dialer = dialerFrom()
  const directory: PeerDirectory = {
    async list() {
      return [...byId.values()].filter((p) => !p.withdrawn && net.excluded?.(p.peer.id) !== true).map((p) => p.peer.capability())
    }
  }
  const net: MemoryNet = {
    model,
    dialer,
    directory,
    peers,
    dials,
    async add(spec) {
      const p = await startPeer(model, spec, dialerFrom)
      await net.onJoin?.(p.peer)
      byId.set(p.peer.id, p)
      peers.push(p.peer)
      return p.peer
    },
    stop() {
      for (const p of byId.values()) p.peer.kill()
    },
    find(peer) {
      const p = byId.get(peer)
      return p === undefined || p.withdrawn ? undefined : p.peer.capability()
    }
  }
  return net
}

interface PeerState {
  peer: MemoryPeer
  readonly withdrawn: boolean
  open: (s: Stream) => void
}

async function startPeer(model: ModelRunners, spec: PeerSpec, dialerFrom: (from: () => MemoryPeer) => Dialer): Promise<PeerState> {
  const key = await generateKeyPair('Ed25519')
  const id = peerIdFromPrivateKey(key).toString()
  const { shards, runners, step } = await model.forPeer(spec.layers, spec.fault)
  const streams = new Set<Stream>()
  const cap = typeof spec.serve?.maxCacheTokens === 'number' ? spec.serve.maxCacheTokens : DEFAULT_CACHE_TOKENS
  let alive = true
  let withdrawn = false
  let hooked = -1 // the `served` count onStep last saw: a step through several shards is one step
  const check = (): void => {
    if (!alive) throw new Error('peer killed')
  } // a dead process computes nothing more
  const entering = async (): Promise<void> => {
    const served = handler.stats.steps
    if (alive && peer.onStep !== undefined && hooked !== served) {
      hooked = served
      await peer.onStep(served)
    }
    check()
  }
  const handoffs = dialerFrom(() => peer)
  const handler = createInferHandler({
    root: model.manifest.root,
    peer: id,
    sign: async (b) => await key.sign(b),
    runners: runners.map((r) => watched(r, entering, check)),
    fault: step,
    maxCacheTokens: cap,
    // Its own outgoing streams (handoffs) die with it too.
    dialer: {
      dial: async (c, protocol, signal) => {
        const out = await handoffs.dial(c, protocol, signal)
        open(out)
        return out
      }
    },
    dim: model.manifest.config.dim,
    ...spec.serve
  })
  const peer: MemoryPeer = {
    id,
    layers: spec.layers,
    handler,
    get alive() {
      return alive
    },
    capability: () => {
      const now = Date.now()
      return {
        peer: id,
        addrs: [],
        device: runners[0].device,
        memory: MEMORY,
        msPerLayer: spec.msPerLayer ?? 1,
        model: model.manifest.name,
        root: model.manifest.root,
        modelLayers: model.manifest.config.nLayers,
        layers: spec.layers,
        shardBounds: [spec.layers[0], ...shards.map((s) => s.layers[1])],
        kvRoom: spec.kvRoom ?? Math.max(0, cap - handler.stats.cachedTokens),
        sessions: handler.stats.sessions,
        version: VERSION,
        issued: now,
        expires: now + RECORD_TTL_MS
      }
    },
    kill: (o = {}) => {
      alive = false
      if (o.withdraw === true) withdrawn = true
      for (const s of streams) s.abort(new Error('peer killed'))
      streams.clear()
    }
  }
  const open = (s: Stream): void => {
    streams.add(s)
    s.addEventListener('close', () => streams.delete(s))
  }
  return {
    peer,
    get withdrawn() {
      return withdrawn
    },
    open
  }
}

/** A view of a shared runner that tells its peer when a step starts; disposing it leaves the shared one alone. */
function watched(r: ShardRunner, entering: () => Promise<void>, check: () => void): ShardRunner {
  const open = (): ShardSession => {
    const s = r.open()
    return {
      get length() {
        return s.length
      },
      forward: async (input) => {
        await entering()
        return await s.forward(input)
      },
      truncate: (n) => s.truncate(n),
      close: () => {
        s.close()
      }
    }
  }
  const runPart = r.runPart
  return {
    shard: r.shard,
    device: r.device,
    open,
    ...(runPart !== undefined
      ? {
          runPart: async (layer: number, input: HopInput) => {
            check()
            return await runPart(layer, input)
          }
        }
      : {}),
    dispose: async () => {}
  }
}
