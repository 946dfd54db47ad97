/**
 * A native node: loads a run of shards, serves /tessera/infer/1.0.0, and keeps a signed
 * capability record fresh on the relay. Without explicit layers it takes the run of shards the
 * network covers worst that fits its memory (Petals' block selection).
 */
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { lpStream } from '@libp2p/utils'
import { decode, encode } from 'cborg'
import { ANNOUNCE_PROTOCOL, signCapability, type Capability } from '../shared/protocol/capability.js'
import { INFER_PROTOCOL } from '../shared/protocol/infer.js'
import { RECORD_TTL_MS, MAX_SESSIONS } from '../shared/protocol/limits.js'
import { createInferHandler, type ServeOptions, type ServeStats } from '../shared/node/serve.js'
import { relayDirectory } from '../shared/client/dialer.js'
import { coverage } from '../shared/client/route.js'
import type { Manifest, ShardEntry } from '../shared/manifest.js'
import type { ShardRunner } from '../shared/runner.js'
import { planMemory } from '../shared/plan.js'
import { ConfigError } from '../shared/errors.js'
import { logger } from '../shared/log.js'
import { readManifest, loadShard } from './store.js'
import { createPeer, loadOrCreateKey } from './libp2p.js'
import { detectHardware, memoryBudget } from './hardware.js'
import { measureMsPerLayer } from './speed.js'
import type { DevicePreference } from './ort.js'

const log = logger('tessera:node')

export interface NodeOptions {
  relay: string
  model: string
  /** [start, end) aligned to shard boundaries; default: chosen by coverage and memory. */
  layers?: [number, number]
  memory?: number
  device?: DevicePreference
  listen?: string[]
  keyFile?: string
  privateKey?: PrivateKey
  /** Alters results for fault drills (see verification); undefined = honest. */
  onStep?: ServeOptions['onStep']
  version?: string
}

export interface RunningNode {
  peerId: string
  addrs: string[]
  layers: [number, number]
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
    const shards = o.layers !== undefined
      ? shardsFor(manifest, o.layers)
      : await chooseShards(manifest, node, o.relay, memoryBudget(hw, hw.cudaProvider ? 'cuda' : 'cpu', o.memory))
    const layers: [number, number] = [shards[0].layers[0], shards[shards.length - 1].layers[1]]
    const runners: ShardRunner[] = []
    for (const s of shards) runners.push(await loadShard(o.model, manifest, s.index, { device: o.device, spin: false }))
    const device = runners[0].device
    const msPerLayer = await measureMsPerLayer(runners, layers[1] - layers[0], { dim: manifest.config.dim, vocabSize: manifest.config.vocabSize, steps: 4, context: 16 })
    log.info(`serving ${manifest.name} layers [${layers.join(',')}) on ${device}, ${msPerLayer.toFixed(3)} ms/layer`)

    const { handle, stats } = createInferHandler({ root: manifest.root, runners, onStep: o.onStep })
    await node.handle(INFER_PROTOCOL, handle, { runOnLimitedConnection: true, maxInboundStreams: 1024 })

    const budget = o.memory ?? memoryBudget(hw, device === 'cuda' ? 'cuda' : 'cpu')
    const plan = planMemory(manifest.config, { dtype: manifest.dtype, budget, context: manifest.config.maxSeqLen })
    const capability = (): Capability => {
      const now = Date.now()
      return {
        peer: node.peerId.toString(),
        addrs: node.getMultiaddrs().map((a) => a.toString()),
        device, memory: budget, msPerLayer,
        model: manifest.name, root: manifest.root, modelLayers: manifest.config.nLayers,
        layers, shardBounds: [layers[0], ...shards.map((s) => s.layers[1])],
        // KV room in tokens: what the budget leaves after weights, spread over our layers.
        kvRoom: Math.max(0, Math.floor((budget - plan.weightsPerLayer * (layers[1] - layers[0])) / (plan.kvPerLayer / manifest.config.maxSeqLen) / (layers[1] - layers[0])) - stats.tokens),
        sessions: stats.sessions, version: o.version ?? '0.1.0',
        issued: now, expires: now + RECORD_TTL_MS
      }
    }
    const announce = async (): Promise<void> => {
      const stream = await node.dialProtocol(multiaddr(o.relay), ANNOUNCE_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
      const lp = lpStream(stream)
      await lp.write(encode(await signCapability(capability(), key)))
      const reply = decode((await lp.read({ signal: AbortSignal.timeout(10_000) })).subarray()) as { ok: boolean, error?: string }
      await stream.close().catch(() => {})
      if (!reply.ok) throw new Error(`relay refused our record: ${reply.error ?? 'no reason given'}`)
    }
    await announce()
    const timer = setInterval(() => { announce().catch((err) => log.warn(`announce failed: ${(err as Error).message}`)) }, RECORD_TTL_MS / 3)
    log.info(`peer ${node.peerId.toString()} announced to the relay; ${MAX_SESSIONS} sessions at most`)
    return {
      peerId: node.peerId.toString(),
      addrs: node.getMultiaddrs().map((a) => a.toString()),
      layers, capability, stats, libp2p: node,
      async stop () {
        clearInterval(timer)
        await node.stop()
        for (const r of runners) await r.dispose()
      }
    }
  } catch (err) {
    await node.stop()
    throw err
  }
}

/** The shards that exactly make up `layers`; refuses ranges that cut a shard. */
export function shardsFor (m: Manifest, [a, b]: [number, number]): ShardEntry[] {
  const inside = m.shards.filter((s) => s.layers[0] >= a && s.layers[1] <= b)
  if (inside.length === 0 || inside[0].layers[0] !== a || inside[inside.length - 1].layers[1] !== b) {
    const bounds = [0, ...m.shards.map((s) => s.layers[1])].join(', ')
    throw new ConfigError(`layers ${a}-${b} do not fall on shard boundaries (${bounds}); pick a range between two of them or rebuild the model with other cuts`)
  }
  return inside
}

/**
 * Block selection: the window of consecutive shards, as many layers as fit in `budget`, whose
 * layers the live peers cover least (ties: the earliest).
 */
async function chooseShards (m: Manifest, node: Libp2p, relay: string, budget: number): Promise<ShardEntry[]> {
  const fit = Math.max(1, planMemory(m.config, { dtype: m.dtype, budget, context: m.config.maxSeqLen }).layers)
  let peers: Capability[] = []
  try { peers = (await relayDirectory(node, relay).list()).filter((p) => p.root === m.root) } catch (err) { log.warn(`could not read the relay's peers (${(err as Error).message}); choosing as if alone`) }
  const cov = coverage(peers, m.config.nLayers)
  let best: ShardEntry[] = [m.shards[0]]
  let bestScore = Infinity
  for (let i = 0; i < m.shards.length; i++) {
    let layers = 0
    for (let j = i; j < m.shards.length; j++) {
      layers += m.shards[j].layers[1] - m.shards[j].layers[0]
      if (layers > fit && j > i) break
      const window = m.shards.slice(i, j + 1)
      const [a, b] = [window[0].layers[0], window[window.length - 1].layers[1]]
      // Least-covered first, then the longest window that fits.
      const score = Math.min(...cov.slice(a, b)) * 1e6 - (b - a)
      if (score < bestScore) { bestScore = score; best = window }
      if (layers > fit) break
    }
  }
  return best
}
