/**
 * A tab lends its GPU (or CPU through WASM): it picks a run of layers the network lacks that
 * fits the adapter and the memory the visitor allows, downloads those shard files from the
 * relay (checking each sha256 before use, keeping them in the Cache API for the next visit),
 * loads them, and serves /tessera/infer/1.0.0 over WebRTC/circuit relay like a native node.
 */
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import { checkManifest, type Manifest, type ShardEntry } from '../../shared/manifest.js'
import { ShardHashError } from '../../shared/errors.js'
import { bytesToHex } from '../../shared/hash.js'
import { planMemory } from '../../shared/plan.js'
import type { Capability } from '../../shared/protocol/capability.js'
import { DISPUTE_PROTOCOL, INFER_PROTOCOL } from '../../shared/protocol/infer.js'
import { RECORD_TTL_MS } from '../../shared/protocol/limits.js'
import { createInferHandler } from '../../shared/node/serve.js'
import { chooseShards, shardsFor } from '../../shared/node/select.js'
import { measureMsPerLayer } from '../../shared/node/speed.js'
import { announce, withdraw } from '../../shared/node/announce.js'
import { relayDirectory } from '../../shared/route/directory.js'
import type { ShardRunner } from '../../shared/runner.js'
import { loadShardBrowser, type Backend } from './runtime/ort-browser.js'
import { createTabPeer } from './p2p.js'
import { detectBackend, type AdapterInfo } from './gpu.js'

export type { Backend }

export interface ContributorOptions { relay?: string, backend?: Backend | 'auto', layers?: [number, number], memoryBytes?: number }

export type ContributorEvent =
  | { type: 'backend', backend: Backend, adapter?: AdapterInfo, reason?: string }
  | { type: 'plan', layers: [number, number], model: string, root: string, files: number, bytes: number }
  | { type: 'download', file: string, loaded: number, total: number, cached: boolean }
  | { type: 'refused', file: string, reason: string }
  | { type: 'loading' }
  | { type: 'ready', peer: string, layers: [number, number], backend: Backend, msPerLayer: number }
  | { type: 'stats', requests: number, steps: number, tokens: number, msPerStep: number, sessions: number, uptimeMs: number, reputation: number | null }
  | { type: 'stopped' }
  | { type: 'error', message: string }

export interface Contributor { stop (): Promise<void> }

const CACHE = 'tessera-shards-v1'
const DEFAULT_MEMORY = 512 * 2 ** 20

export async function startContributor (o: ContributorOptions, onEvent: (e: ContributorEvent) => void): Promise<Contributor> {
  const relay = o.relay ?? location.origin
  const memory = o.memoryBytes ?? DEFAULT_MEMORY
  try {
    const { manifest } = await pickModel(relay)
    const c = manifest.config
    // The biggest buffer a shard needs: one weight matrix (or the embedding/classifier).
    const biggest = Math.max(c.dim * c.hiddenDim, c.vocabSize * c.dim) * 4
    const chosen = await detectBackend(o.backend ?? 'auto', biggest)
    onEvent({ type: 'backend', ...chosen })

    const { addrs } = await getJson<{ addrs: string[] }>(`${relay}/api/relay`)
    const key = await tabKey()
    const { node, relay: relayAddr } = await createTabPeer({ relayAddrs: addrs, privateKey: key, listen: true })
    const shards = o.layers !== undefined ? shardsFor(manifest, o.layers) : await chooseForTab(node, relayAddr, manifest, memory)
    const layers: [number, number] = [shards[0].layers[0], shards[shards.length - 1].layers[1]]
    onEvent({ type: 'plan', layers, model: manifest.name, root: manifest.root, files: shards.length * 2, bytes: shards.reduce((n, s) => n + s.bytes, 0) })

    const runners: ShardRunner[] = []
    for (const shard of shards) {
      const files = await fetchShard(relay, shard, onEvent)
      onEvent({ type: 'loading' })
      runners.push(await loadShardBrowser(files, shard, c, chosen.backend, { wasmPaths: `${relay}/ort/` }))
    }
    const msPerLayer = await measureMsPerLayer(runners, layers[1] - layers[0], { dim: c.dim, vocabSize: c.vocabSize, steps: 2, context: 8 })

    const { handle, handleDispute, stats } = createInferHandler({ root: manifest.root, peer: node.peerId.toString(), sign: async (b) => await key.sign(b), runners })
    await node.handle(INFER_PROTOCOL, handle, { runOnLimitedConnection: true, maxInboundStreams: 256 })
    await node.handle(DISPUTE_PROTOCOL, handleDispute, { runOnLimitedConnection: true, maxInboundStreams: 64 })
    const capability = (): Capability => {
      const now = Date.now()
      return {
        peer: node.peerId.toString(), addrs: node.getMultiaddrs().map(String), device: chosen.backend, memory, msPerLayer,
        model: manifest.name, root: manifest.root, modelLayers: c.nLayers, layers, shardBounds: [layers[0], ...shards.map((s) => s.layers[1])],
        kvRoom: Math.max(0, Math.floor(memory / (2 * c.nKvHeads * (c.dim / c.nHeads) * 4 * (layers[1] - layers[0]))) - stats.cachedTokens),
        sessions: stats.sessions, version: '0.1.0', issued: now, expires: now + RECORD_TTL_MS
      }
    }
    await announce(node, relayAddr, capability(), key)
    onEvent({ type: 'ready', peer: node.peerId.toString(), layers, backend: chosen.backend, msPerLayer })

    const started = Date.now()
    const timers = [
      setInterval(() => { announce(node, relayAddr, capability(), key).catch((err) => onEvent({ type: 'error', message: `announce failed: ${(err as Error).message}` })) }, RECORD_TTL_MS / 3),
      setInterval(() => onEvent({ type: 'stats', requests: stats.opened, steps: stats.steps, tokens: stats.tokens, msPerStep: stats.steps > 0 ? stats.busyMs / stats.steps : 0, sessions: stats.sessions, uptimeMs: Date.now() - started, reputation: null }), 1000)
    ]
    let stopped = false
    const stop = async (): Promise<void> => {
      if (stopped) return
      stopped = true
      for (const t of timers) clearInterval(t)
      await withdraw(node, relayAddr, capability(), key)
      await node.stop()
      for (const r of runners) await r.dispose()
      onEvent({ type: 'stopped' })
    }
    // Closing the tab: tell the relay (best effort); clients' streams reset and they fail over.
    addEventListener('pagehide', () => { void stop() })
    return { stop }
  } catch (err) {
    if (err instanceof ShardHashError) onEvent({ type: 'refused', file: err.file, reason: err.message })
    else onEvent({ type: 'error', message: (err as Error).message })
    throw err
  }
}

async function getJson<T> (url: string): Promise<T> {
  const res = await fetch(url)
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`)
  return await res.json() as T
}

/** The model to serve: the relay's first (tabs download what the relay hosts). */
async function pickModel (relay: string): Promise<{ manifest: Manifest }> {
  const { models } = await getJson<{ models: Array<{ root: string }> }>(`${relay}/api/models`)
  if (models.length === 0) throw new Error('the relay hosts no model files to contribute to')
  return { manifest: checkManifest(await getJson(`${relay}/models/${models[0].root}/manifest.json`), 'the relay\'s manifest') }
}

/** Where the network is thin, as many layers as the allowed memory holds. */
async function chooseForTab (node: Libp2p, relay: string, m: Manifest, memory: number): Promise<ShardEntry[]> {
  const fit = Math.max(1, planMemory(m.config, { dtype: m.dtype, budget: memory, context: Math.min(m.config.maxSeqLen, 1024), reserve: memory * 0.1 }).layers)
  const peers = (await relayDirectory(node, relay, 0).list().catch((err: Error) => { throw new Error(`reading the relay's peer list failed: ${err.message}`) })).filter((p) => p.root === m.root)
  return chooseShards(m, peers, fit)
}

/** One identity per tab (sessionStorage): two tabs of one browser are two peers. */
async function tabKey (): Promise<PrivateKey> {
  const saved = sessionStorage.getItem('tessera-key')
  if (saved !== null) return privateKeyFromProtobuf(Uint8Array.from(atob(saved), (ch) => ch.charCodeAt(0)))
  const key = await generateKeyPair('Ed25519')
  sessionStorage.setItem('tessera-key', btoa(String.fromCharCode(...privateKeyToProtobuf(key))))
  return key
}

/** Downloads (or reads from the cache) and checks every file of a shard; throws ShardHashError on a mismatch. */
async function fetchShard (relay: string, shard: ShardEntry, onEvent: (e: ContributorEvent) => void): Promise<Map<string, Uint8Array>> {
  const cache = await caches.open(CACHE)
  const files = new Map<string, Uint8Array>()
  for (const f of shard.files) {
    const url = `${relay}/shards/${f.sha256}`
    const hit = await cache.match(url)
    if (hit !== undefined) {
      const bytes = new Uint8Array(await hit.arrayBuffer())
      onEvent({ type: 'download', file: f.name, loaded: bytes.byteLength, total: f.bytes, cached: true })
      if (await sha256(bytes) === f.sha256) { files.set(f.name, bytes); continue }
      await cache.delete(url) // a damaged cache entry: fetch it again
    }
    const bytes = await download(url, f.bytes, (loaded) => onEvent({ type: 'download', file: f.name, loaded, total: f.bytes, cached: false }))
    const actual = await sha256(bytes)
    if (actual !== f.sha256) throw new ShardHashError(f.name, f.sha256, actual)
    await cache.put(url, new Response(bytes as Uint8Array<ArrayBuffer>))
    files.set(f.name, bytes)
  }
  return files
}

async function download (url: string, total: number, progress: (loaded: number) => void): Promise<Uint8Array<ArrayBuffer>> {
  const res = await fetch(url)
  if (!res.ok || res.body === null) throw new Error(`${url}: HTTP ${res.status}`)
  const out = new Uint8Array(total)
  let loaded = 0
  const reader = res.body.getReader()
  for (let r = await reader.read(); r.done !== true; r = await reader.read()) {
    if (loaded + r.value.byteLength > total) throw new ShardHashError(url, `${total} bytes`, 'a longer file')
    out.set(r.value, loaded)
    loaded += r.value.byteLength
    progress(loaded)
  }
  return out.subarray(0, loaded)
}

async function sha256 (bytes: Uint8Array): Promise<string> {
  return bytesToHex(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>)))
}
