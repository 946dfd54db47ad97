/**
 * A native node: the shared peer service (shared/node/service.ts) on onnxruntime-node and
 * libp2p for Node. Without explicit layers it takes the run of shards the network covers worst
 * that fits its memory (Petals' block selection), and moves when that helps.
 */
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { Capability } from '../shared/protocol/capability.js'
import type { ServeStats } from '../shared/node/serve.js'
import type { ZkServed } from '../shared/node/zk-serve.js'
import { isWeightFault, stepFault, type Fault, type StepFault } from '../shared/node/fault.js'
import { chooseShards, shardsFor } from '../shared/node/select.js'
import { layersThatFit } from '../shared/node/memory.js'
import { otherPeers } from '../shared/node/peers.js'
import { startPeerService } from '../shared/node/service.js'
import type { Manifest, ShardEntry } from '../shared/manifest.js'
import type { ShardRunner } from '../shared/runner.js'
import { logger } from '../shared/log.js'
import { InputError, TesseraError } from '../shared/errors.js'
import { handleFiles } from '../shared/files/serve.js'
import type { DownloadReport } from '../shared/files/download.js'
import { badChunk, isModelDir, joinedWeights, localWeights, type JoinOptions, type NodeWeights } from './weights.js'
import { createPeer, loadOrCreateKey } from '../host/libp2p.js'
import { nativeSigner } from '../host/native-crypto.js'
import { tamperShard } from './fault.js'
import { join } from 'node:path'
import { detectHardware, memoryBudget } from './hardware.js'
import type { DevicePreference } from './ort.js'
import { batchLimits, type BatchLimits } from '../shared/batch.js'

const log = logger('tessera:node')

export interface NodeOptions {
  /** One relay, or several of one federation (each gets the record). */
  relay: string | string[]
  /** A built model directory, or a model's name or root on the relay (its shards are downloaded; native-node/weights.ts). */
  model: string
  /** Joining by name: where shard files are cached, how fast and how many at once (native-node/weights.ts). */
  download?: JoinOptions
  /** [start, end) aligned to shard boundaries; default: chosen by coverage and memory. */
  layers?: [number, number]
  memory?: number
  /** Serve at most this many layers (default: as many as fit in memory). */
  maxLayers?: number
  /** How often a node that chose its own layers checks whether moving would help (ms; default in shared/node/config.ts). */
  rebalanceMs?: number
  device?: DevicePreference
  /** Continuous batching limits for every served shard (shared/batch.ts; default BATCH_DEFAULTS). */
  batch?: Partial<BatchLimits>
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
  /** Where the weights are, and what was downloaded (joining by name). */
  weights: { dir: string; joined: boolean; downloads: DownloadReport[]; served: () => number }
  libp2p: Libp2p
  stop: () => Promise<void>
}

export async function startNode(o: NodeOptions): Promise<RunningNode> {
  const local = await isModelDir(o.model)
  const key = o.privateKey ?? (await loadOrCreateKey(o.keyFile))
  const node = await createPeer({ listen: o.listen, privateKey: key })
  let weights: NodeWeights | undefined
  try {
    weights = local ? await localWeights(o.model) : await joinedWeights(node, [o.relay].flat(), o.model, o.download)
    const w = weights
    const { manifest, dir } = w
    const hw = await detectHardware(dir)
    // The device is known once a shard has loaded; block selection needs a budget before that.
    const guess = memoryBudget(hw, hw.cudaProvider ? 'cuda' : 'cpu', o.memory)
    const fit = layersThatFit(manifest, { bytes: guess }, o.maxLayers)
    const shards = o.layers !== undefined ? shardsFor(manifest, o.layers) : chooseShards(manifest, await peersOrNone(node, o.relay, manifest), fit)
    const fault = o.fault !== undefined ? await faultOf(o.fault) : undefined
    // The files it holds go to peers that ask (chunks still downloading included): weights spread between nodes, not only from the relay.
    let served = 0
    await handleFiles(node, weights.catalog, {
      served: (_peer, n) => {
        served += n
      },
      ...(o.fault?.kind === 'bad-chunk' ? { tamper: badChunk(manifest) } : {})
    })
    const zk = await loadZkModels(o.zk ?? [])
    if (zk.size > 0 && o.zkForge === true) log.warn('FAULTY NODE: --zk-forge (for drills; proof verification should catch it)')
    const service = await startPeerService({
      libp2p: node,
      key,
      sign: nativeSigner(key),
      relay: o.relay,
      manifest,
      shards,
      fault,
      load: async (s) => {
        // A node moving to other layers downloads them here, while it still serves the old ones.
        await w.ensure(s)
        return await loadRunners(o, dir, manifest, s)
      },
      memory: (device) => ({ bytes: memoryBudget(hw, device === 'cuda' ? 'cuda' : 'cpu', o.memory) }),
      zk: { models: zk, forge: o.zkForge },
      rebalance: o.layers === undefined ? { fit } : undefined,
      limits: { rebalanceEveryMs: o.rebalanceMs },
      version: o.version
    })
    return {
      peerId: node.peerId.toString(),
      addrs: node.getMultiaddrs().map((a) => a.toString()),
      get layers() {
        return service.layers
      },
      capability: service.capability,
      stats: service.stats,
      weights: { dir, joined: w.joined, downloads: w.downloads, served: () => served },
      libp2p: node,
      async stop() {
        await service.stop()
        await w.close()
        // snarkjs's worker threads would keep the process alive.
        if (zk.size > 0) await (await import('../shared/zk/verify.js')).releaseZkWorkers()
      }
    }
  } catch (err) {
    await weights?.close()
    await node.stop()
    throw err
  }
}

/** The other peers serving this model; none if the relay cannot say (we then choose as if alone). */
async function peersOrNone(node: Libp2p, relay: string | string[], manifest: Manifest): Promise<Capability[]> {
  try {
    return await otherPeers(node, relay, manifest)
  } catch (err) {
    if (!(err instanceof TesseraError) || err.code !== 'UNREACHABLE') throw err
    log.warn(`${err.message}; choosing layers as if alone`)
    return []
  }
}

/** The serve-time part of a drill's fault; copy-receipt signs with a second, throwaway identity. */
async function faultOf(f: Fault): Promise<StepFault | undefined> {
  const other = f.kind === 'copy-receipt' ? await generateKeyPair('Ed25519') : undefined
  log.warn(`FAULTY NODE: --fault ${f.kind} (for drills; verification should catch it)`)
  return stepFault(f, other === undefined ? undefined : { peer: peerIdFromPrivateKey(other).toString(), sign: async (b) => await other.sign(b) })
}

/** The runtime: each shard verified and loaded on onnxruntime-node, a weight fault's tampered copy instead where it applies. */
async function loadRunners(o: NodeOptions, dir: string, manifest: Manifest, shards: ShardEntry[]): Promise<ShardRunner[]> {
  const f = o.fault !== undefined && isWeightFault(o.fault) ? o.fault : undefined
  const holds = (s: ShardEntry, layer: number): boolean => layer >= s.layers[0] && layer < s.layers[1]
  if (f?.kind === 'skip-layer' && !shards.some((s) => holds(s, f.layer))) {
    throw new InputError(
      `--fault skip-layer=${f.layer}, but this node serves layers [${shards[0].layers[0]},${shards[shards.length - 1].layers[1]}); ` +
        'pick a layer inside that range or serve other layers'
    )
  }
  const out: ShardRunner[] = []
  for (const s of shards) {
    const opts = { device: o.device, spin: false, batch: batchLimits(o.batch) }
    // wrong-weights changes every shard, perturb the first served, skip-layer the one holding its layer.
    const tampered =
      f !== undefined && (f.kind === 'wrong-weights' || (f.kind === 'perturb' && s === shards[0]) || (f.kind === 'skip-layer' && holds(s, f.layer)))
    // ensure() checked every file's hash just before: loading reads them once more, not hashing them again.
    const { loadShardNode } = await import('./ort.js')
    if (!tampered) {
      out.push(await loadShardNode(join(dir, s.files[0].name), s, manifest.config, opts))
      continue
    }
    out.push(await loadShardNode(await tamperShard(dir, s, f), s, manifest.config, opts))
  }
  return out
}

/** The ZK models' provers, from the cached set-up (the first node to need one runs it: minutes). */
async function loadZkModels(names: string[]): Promise<Map<string, ZkServed>> {
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
