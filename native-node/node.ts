/**
 * A native node: loads a run of shards, serves /tessera/infer/1.0.0, and keeps a signed
 * capability record fresh on the relay. Without explicit layers it takes the run of shards the
 * network covers worst that fits its memory (Petals' block selection).
 */
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { Capability } from '../shared/protocol/capability.js'
import { announce, withdraw } from '../shared/node/announce.js'
import { DISPUTE_PROTOCOL, INFER_PROTOCOL } from '../shared/protocol/infer.js'
import { RECORD_TTL_MS, MAX_SESSIONS, SESSION_TTL_MS } from '../shared/protocol/limits.js'
import { createInferHandler, type ServeStats } from '../shared/node/serve.js'
import { createZkHandler, type ZkServed } from '../shared/node/zk-serve.js'
import { ZK_PROTOCOL } from '../shared/protocol/zk.js'
import { isWeightFault, stepFault, type Fault } from '../shared/node/fault.js'
import { tamperShard } from './fault.js'
import { relayDirectory } from '../shared/route/directory.js'
import { coverage } from '../shared/route/route.js'
import { chooseShards, shardsFor } from '../shared/node/select.js'
import type { ShardEntry } from '../shared/manifest.js'
import type { ShardRunner } from '../shared/runner.js'
import { planMemory } from '../shared/plan.js'
import { logger } from '../shared/log.js'
import { InputError } from '../shared/errors.js'
import { readManifest } from '../host/model-store.js'
import { loadShard } from './store.js'
import { createPeer, loadOrCreateKey } from '../host/libp2p.js'
import { detectHardware, memoryBudget } from './hardware.js'
import { measureMsPerLayer } from '../shared/node/speed.js'
import type { DevicePreference } from './ort.js'

const log = logger('tessera:node')

/** Petals checks its balance about every two minutes; a minute keeps a small swarm responsive. */
const REBALANCE_MS = 60_000

export interface NodeOptions {
  relay: string
  model: string
  /** [start, end) aligned to shard boundaries; default: chosen by coverage and memory. */
  layers?: [number, number]
  memory?: number
  /** Serve at most this many layers (default: as many as fit in memory). */
  maxLayers?: number
  /** How often a node that chose its own layers checks whether moving would help (ms). */
  rebalanceMs?: number
  device?: DevicePreference
  listen?: string[]
  keyFile?: string
  privateKey?: PrivateKey
  /** A fault to commit, for drills and tests (shared/node/fault.ts); undefined = honest. */
  fault?: Fault
  /** ZK models to prove inferences of (shared/zk; set up once, cached in .cache/zk). */
  zk?: string[]
  /** A drill: answer ZK requests with a changed output and public signals (the proof no longer verifies). */
  zkForge?: boolean
  version?: string
}

export interface RunningNode {
  peerId: string
  addrs: string[]
  /** The layers served now (a rebalancing node may move). */
  readonly layers: [number, number]
  capability: () => Capability
  stats: ServeStats
  libp2p: Libp2p
  stop: () => Promise<void>
}

export async function startNode (o: NodeOptions): Promise<RunningNode> {
  const manifest = await readManifest(o.model)
  const key = o.privateKey ?? await loadOrCreateKey(o.keyFile)
  const node = await createPeer({ listen: o.listen, privateKey: key })
  try {
    const hw = await detectHardware(o.model)
    const budgetGuess = memoryBudget(hw, hw.cudaProvider ? 'cuda' : 'cpu', o.memory)
    const fit = Math.min(o.maxLayers ?? Infinity, Math.max(1, planMemory(manifest.config, { dtype: manifest.dtype, budget: budgetGuess, context: manifest.config.maxSeqLen }).layers))
    const peersNow = async (): Promise<Capability[]> => {
      try {
        return (await relayDirectory(node, o.relay, 0).list()).filter((p) => p.root === manifest.root && p.peer !== node.peerId.toString())
      } catch (err) {
        log.warn(`could not read the relay's peers (${(err as Error).message}); choosing as if alone`)
        return []
      }
    }
    let shards = o.layers !== undefined ? shardsFor(manifest, o.layers) : chooseShards(manifest, await peersNow(), fit)
    let runners = await loadRunners(shards)
    const device = runners[0].device
    const span = (): [number, number] => [shards[0].layers[0], shards[shards.length - 1].layers[1]]
    let msPerLayer = await measure(runners)
    log.info(`serving ${manifest.name} layers [${span().join(',')}) on ${device}, ${msPerLayer.toFixed(3)} ms/layer`)

    let fault
    if (o.fault !== undefined) {
      const other = o.fault.kind === 'copy-receipt' ? await generateKeyPair('Ed25519') : undefined
      fault = stepFault(o.fault, other === undefined ? undefined : { peer: peerIdFromPrivateKey(other).toString(), sign: async (b) => await other.sign(b) })
      log.warn(`FAULTY NODE: --fault ${o.fault.kind} (for drills; verification should catch it)`)
    }
    const handler = createInferHandler({ root: manifest.root, peer: node.peerId.toString(), sign: async (b) => await key.sign(b), runners, fault, maxCacheTokens: () => cacheCap() })
    await node.handle(INFER_PROTOCOL, handler.handle, { runOnLimitedConnection: true, maxInboundStreams: 1024 })
    await node.handle(DISPUTE_PROTOCOL, handler.handleDispute, { runOnLimitedConnection: true, maxInboundStreams: 256 })
    const { stats } = handler
    const zkModels = await loadZkModels(o.zk ?? [])
    if (zkModels.size > 0) {
      if (o.zkForge === true) log.warn('FAULTY NODE: --zk-forge (for drills; proof verification should catch it)')
      const zk = createZkHandler({ peer: node.peerId.toString(), sign: async (b) => await key.sign(b), models: zkModels, forge: o.zkForge })
      await node.handle(ZK_PROTOCOL, zk.handle, { runOnLimitedConnection: true, maxInboundStreams: 64 })
      log.info(`proving ${[...zkModels.keys()].join(', ')} (zk)`)
    }

    const budget = o.memory ?? memoryBudget(hw, device === 'cuda' ? 'cuda' : 'cpu')
    const plan = planMemory(manifest.config, { dtype: manifest.dtype, budget, context: manifest.config.maxSeqLen })
    /** Tokens of KV cache (over all sessions) that fit beside our weights: the memory cap. */
    function cacheCap (): number {
      const n = span()[1] - span()[0]
      return Math.max(0, Math.floor((budget - plan.weightsPerLayer * n) / (plan.kvPerLayer / manifest.config.maxSeqLen * n)))
    }
    const capability = (): Capability => {
      const now = Date.now()
      const layers = span()
      return {
        peer: node.peerId.toString(),
        addrs: node.getMultiaddrs().map((a) => a.toString()),
        device, memory: budget, msPerLayer,
        model: manifest.name, root: manifest.root, modelLayers: manifest.config.nLayers,
        layers, shardBounds: [layers[0], ...shards.map((s) => s.layers[1])],
        kvRoom: Math.max(0, cacheCap() - stats.cachedTokens),
        sessions: stats.sessions, version: o.version ?? '0.1.0',
        issued: now, expires: now + RECORD_TTL_MS,
        ...(zkModels.size > 0 ? { zk: [...zkModels.keys()] } : {})
      }
    }
    const publish = async (): Promise<void> => { await announce(node, o.relay, capability(), key) }

    /**
     * Petals' rebalancing, simply: move when the window we would choose now (given the others'
     * coverage) raises the network's least-covered layer, and no session is using us.
     */
    const rebalance = async (): Promise<void> => {
      if (stats.sessions > 0) return
      const others = coverage(await peersNow(), manifest.config.nLayers)
      const next = chooseShards(manifest, [], fit, others)
      const [a, b] = span()
      const [c, d] = [next[0].layers[0], next[next.length - 1].layers[1]]
      if (a === c && b === d) return
      const minWith = (lo: number, hi: number): number => Math.min(...others.map((v, l) => v + (l >= lo && l < hi ? 1 : 0)))
      if (minWith(c, d) <= minWith(a, b)) return
      log.info(`moving from layers [${a},${b}) to [${c},${d}): the network's least-covered layer goes from ${minWith(a, b)} to ${minWith(c, d)} peers`)
      const fresh = await loadRunners(next)
      const old = runners
      handler.setRunners(fresh)
      runners = fresh
      shards = next
      msPerLayer = await measure(runners)
      await publish()
      // Sessions opened on the old shards before the swap keep them until they close.
      setTimeout(() => { for (const r of old) void r.dispose() }, SESSION_TTL_MS)
    }

    await publish()
    const timers = [setInterval(() => { publish().catch((err) => log.warn(`announce failed: ${(err as Error).message}`)) }, RECORD_TTL_MS / 3)]
    if (o.layers === undefined) {
      let busy = false
      timers.push(setInterval(() => {
        if (busy) return
        busy = true
        rebalance().catch((err) => log.warn(`rebalancing failed: ${(err as Error).message}`)).finally(() => { busy = false })
      }, o.rebalanceMs ?? REBALANCE_MS))
    }
    log.info(`peer ${node.peerId.toString()} announced to the relay; ${MAX_SESSIONS} sessions at most`)
    return {
      peerId: node.peerId.toString(),
      addrs: node.getMultiaddrs().map((a) => a.toString()),
      get layers () { return span() },
      capability, stats, libp2p: node,
      async stop () {
        for (const t of timers) clearInterval(t)
        await withdraw(node, o.relay, capability(), key)
        await node.stop()
        for (const r of runners) await r.dispose()
        // snarkjs's worker threads would keep the process alive.
        if (zkModels.size > 0) await (await import('../shared/zk/verify.js')).releaseZkWorkers()
      }
    }
  } catch (err) {
    await node.stop()
    throw err
  }

  async function loadRunners (shards: ShardEntry[]): Promise<ShardRunner[]> {
    const f = o.fault !== undefined && isWeightFault(o.fault) ? o.fault : undefined
    if (f?.kind === 'skip-layer' && !shards.some((s) => f.layer >= s.layers[0] && f.layer < s.layers[1])) {
      throw new InputError(`--fault skip-layer=${f.layer}, but this node serves layers [${shards[0].layers[0]},${shards[shards.length - 1].layers[1]})`)
    }
    const out: ShardRunner[] = []
    for (const s of shards) {
      const opts = { device: o.device, spin: false }
      const tampered = f !== undefined && (f.kind === 'wrong-weights' || (f.kind === 'perturb' && s === shards[0]) || (f.kind === 'skip-layer' && f.layer >= s.layers[0] && f.layer < s.layers[1]))
      if (!tampered) { out.push(await loadShard(o.model, manifest, s.index, opts)); continue }
      const { loadShardNode } = await import('./ort.js')
      out.push(await loadShardNode(await tamperShard(o.model, s, f), s, manifest.config, opts))
    }
    return out
  }

  async function measure (runners: ShardRunner[]): Promise<number> {
    const layers = runners[runners.length - 1].shard.layers[1] - runners[0].shard.layers[0]
    return await measureMsPerLayer(runners, layers, { dim: manifest.config.dim, vocabSize: manifest.config.vocabSize, steps: 4, context: 16 })
  }
}

/** The ZK models' provers, from the cached set-up (the first node to need one runs it: minutes). */
async function loadZkModels (names: string[]): Promise<Map<string, ZkServed>> {
  const out = new Map<string, ZkServed>()
  if (names.length === 0) return out
  const { seededZkModel, setupZkModel } = await import('../host/zk/setup.js')
  for (const name of names) {
    const setup = await setupZkModel(seededZkModel(name))
    const prover = await setup.prover()
    out.set(name, { inputs: setup.entry.shape.layers[0].inputs, prove: async (x) => await prover.prove(x) })
  }
  return out
}
