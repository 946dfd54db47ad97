/**
 * A tab lends its GPU (or CPU through WASM): it picks a run of layers the network lacks that
 * fits the adapter and the memory the visitor allows, downloads those shard files from the
 * relay (shard-cache.ts), and runs the same peer service as a native node
 * (shared/node/service.ts) on onnxruntime-web, over WebRTC/circuit relay.
 */
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { checkManifest, type Manifest, type ShardEntry } from '../../shared/manifest.js'
import { ShardHashError, TesseraError } from '../../shared/errors.js'
import { logger, type Logger } from '../../shared/log.js'
import type { ShardRunner } from '../../shared/runner.js'
import { chooseShards, shardsFor } from '../../shared/node/select.js'
import { layersThatFit, type MemoryBudget } from '../../shared/node/memory.js'
import { otherPeers } from '../../shared/node/peers.js'
import { startPeerService } from '../../shared/node/service.js'
import { loadShardBrowser, type Backend } from './runtime/ort-browser.js'
import { pageWasmThreads } from './runtime/threads.js'
import { createTabPeer } from './p2p.js'
import { tabSigner, useWebCryptoVerify, type TabSigner } from './sign.js'
import { detectBackend, type AdapterInfo } from './gpu.js'
import { fetchShard } from './shard-cache.js'

export type { Backend }

export interface ContributorOptions {
  relay?: string
  backend?: Backend | 'auto'
  layers?: [number, number]
  memoryBytes?: number
  /** WASM threads at most (the visitor's allowance); by default half the cores, at most 4 (runtime/threads.ts). */
  threads?: number
  /** On WebGPU, keep KV caches on the GPU between steps (default); false keeps them in the tab's memory, to compare. */
  deviceKv?: boolean
}

export type ContributorEvent =
  | { type: 'backend'; backend: Backend; adapter?: AdapterInfo; reason?: string }
  | { type: 'plan'; layers: [number, number]; model: string; root: string; files: number; bytes: number }
  | { type: 'download'; file: string; loaded: number; total: number; cached: boolean }
  | { type: 'refused'; file: string; reason: string }
  | { type: 'loading' }
  | {
      type: 'ready'
      peer: string
      layers: [number, number]
      backend: Backend
      msPerLayer: number
      threads: number
      isolated: boolean
      kvOnDevice: boolean
      signer: Omit<TabSigner, 'sign'>
    }
  | { type: 'stats'; requests: number; steps: number; tokens: number; msPerStep: number; sessions: number; uptimeMs: number; reputation: number | null }
  | { type: 'stopped' }
  | { type: 'error'; message: string }

export interface Contributor {
  stop(): Promise<void>
}

/** What a tab may use unless the visitor says otherwise: enough for a small model's few layers. */
const DEFAULT_MEMORY = 512 * 2 ** 20
/** Held back from the visitor's allowance when choosing layers: the page and the runtime need some (no CUDA context here). */
const RESERVE_SHARE = 0.1
/** How often the page hears the counters. */
const STATS_EVERY_MS = 1000

export async function startContributor(o: ContributorOptions, onEvent: (e: ContributorEvent) => void): Promise<Contributor> {
  const relay = o.relay ?? location.origin
  const bytes = o.memoryBytes ?? DEFAULT_MEMORY
  const memory: MemoryBudget = { bytes, reserve: bytes * RESERVE_SHARE }
  try {
    const manifest = await pickModel(relay)
    const c = manifest.config
    // The biggest buffer a shard needs: one weight matrix (or the embedding/classifier).
    const biggest = Math.max(c.dim * c.hiddenDim, c.vocabSize * c.dim) * 4
    // GroupQueryAttention shards (--kv gqa) run on WASM: onnxruntime-web's WebGPU kernel got them wrong (shard/build.ts).
    const gqa = manifest.shards.some((s) => s.kv === 'gqa')
    if (gqa && o.backend === 'webgpu')
      throw new TesseraError('CONFIG', `${manifest.name} keeps its KV cache with GroupQueryAttention, which WebGPU here computes wrongly; choose WASM`)
    const chosen = gqa
      ? { backend: 'wasm' as const, reason: 'this model keeps its KV cache with GroupQueryAttention: WASM, not WebGPU' }
      : await detectBackend(o.backend ?? 'auto', biggest)
    onEvent({ type: 'backend', ...chosen })
    const threads = pageWasmThreads(o.threads)

    // STUN/TURN servers come from the relay (tessera relay --ice-server): a tab behind NAT needs them for WebRTC.
    // The relay names its federation too: the tab announces to each and keeps a reservation on each.
    const { addrs, iceServers, relays } = await getJson<{ addrs: string[]; iceServers?: RTCIceServer[]; relays?: Array<{ addrs: string[] }> }>(
      `${relay}/api/relay`
    )
    const key = await tabKey()
    const spareRelays = (relays ?? []).map((r) => r.addrs)
    const { node, relay: relayAddr, spares } = await createTabPeer({ relayAddrs: addrs, privateKey: key, listen: true, iceServers, spareRelays })
    let shards: ShardEntry[]
    try {
      shards =
        o.layers !== undefined
          ? shardsFor(manifest, o.layers)
          : chooseShards(manifest, await otherPeers(node, relayAddr, manifest), layersThatFit(manifest, memory))
    } catch (err) {
      await node.stop()
      throw err
    }
    const layers: [number, number] = [shards[0].layers[0], shards[shards.length - 1].layers[1]]
    onEvent({ type: 'plan', layers, model: manifest.name, root: manifest.root, files: shards.length * 2, bytes: shards.reduce((n, s) => n + s.bytes, 0) })

    // The tab's runtime: download (or read from the cache) and load each shard.
    let kvOnDevice = false // where the shards this tab serves keep their KV caches (the last ones loaded)
    const load = async (run: ShardEntry[]): Promise<ShardRunner[]> => {
      const runners: ShardRunner[] = []
      try {
        for (const shard of run) {
          const files = await fetchShard(relay, shard, (p) => onEvent({ type: 'download', ...p }))
          onEvent({ type: 'loading' })
          runners.push(await loadShardBrowser(files, shard, c, chosen.backend, { wasmPaths: `${relay}/ort/`, threads, deviceKv: o.deviceKv }))
        }
        kvOnDevice = runners.every((r) => r.kvOnDevice === true)
        return runners
      } catch (err) {
        for (const r of runners) await r.dispose()
        throw err
      }
    }
    const signer = await tabSigner(key)
    await useWebCryptoVerify() // a tab checks signatures too, as a watcher or referee
    const service = await startPeerService({
      libp2p: node,
      key,
      sign: signer.sign,
      relay: [relayAddr, ...spares],
      manifest,
      shards,
      load,
      memory,
      device: chosen.backend,
      log: pageLog(onEvent)
    })
    const peer = node.peerId.toString()
    onEvent({
      type: 'ready',
      peer,
      layers: service.layers,
      backend: chosen.backend,
      msPerLayer: service.msPerLayer,
      threads,
      isolated: globalThis.crossOriginIsolated === true,
      kvOnDevice,
      signer: { kind: signer.kind, us: signer.us }
    })

    const started = Date.now()
    const { stats } = service
    const ticker = setInterval(
      () =>
        onEvent({
          type: 'stats',
          requests: stats.opened,
          steps: stats.steps,
          tokens: stats.tokens,
          msPerStep: stats.steps > 0 ? stats.busyMs / stats.steps : 0,
          sessions: stats.sessions,
          uptimeMs: Date.now() - started,
          reputation: null
        }),
      STATS_EVERY_MS
    )
    let stopped = false
    const stop = async (): Promise<void> => {
      if (stopped) return
      stopped = true
      clearInterval(ticker)
      await service.stop()
      onEvent({ type: 'stopped' })
    }
    // Closing the tab: tell the relay (best effort); clients' streams reset and they fail over.
    addEventListener('pagehide', () => {
      void stop()
    })
    return { stop }
  } catch (err) {
    if (err instanceof ShardHashError) onEvent({ type: 'refused', file: err.file, reason: err.message })
    else onEvent({ type: 'error', message: (err as Error).message })
    throw err
  }
}

/** The service's progress goes to the console; its warnings (a failed announce) to the page. */
function pageLog(onEvent: (e: ContributorEvent) => void): Logger {
  const base = logger('tessera:tab')
  return { ...base, warn: (message) => onEvent({ type: 'error', message }) }
}

async function getJson<T>(url: string): Promise<T> {
  const res = await fetch(url)
  if (!res.ok) throw new TesseraError(res.status === 404 ? 'NOT_FOUND' : 'UNREACHABLE', `${url}: HTTP ${res.status}; check that the relay is running`)
  return (await res.json()) as T
}

/** The model to serve: the relay's first (tabs download what the relay hosts). */
async function pickModel(relay: string): Promise<Manifest> {
  const { models } = await getJson<{ models: Array<{ root: string }> }>(`${relay}/api/models`)
  if (models.length === 0) throw new TesseraError('NOT_FOUND', 'the relay hosts no model files to contribute to; start it with --model DIR')
  return checkManifest(await getJson(`${relay}/models/${models[0].root}/manifest.json`), "the relay's manifest")
}

/** One identity per tab (sessionStorage): two tabs of one browser are two peers. */
async function tabKey(): Promise<PrivateKey> {
  const saved = sessionStorage.getItem('tessera-key')
  if (saved !== null) return privateKeyFromProtobuf(Uint8Array.from(atob(saved), (ch) => ch.charCodeAt(0)))
  const key = await generateKeyPair('Ed25519')
  sessionStorage.setItem('tessera-key', btoa(String.fromCharCode(...privateKeyToProtobuf(key))))
  return key
}
