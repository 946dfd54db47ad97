/**
 * Where a node's weights come from. Either a built model directory on disk (`--model DIR`), or
 * the network (`--model NAME|ROOT`): the manifest from the relay, and only the shard files of the
 * layers the node chooses, downloaded into a cache (`~/.cache/tessera/models/ROOT/`) from the
 * relay and from peers at once (shared/files/download.ts), each chunk checked on arrival. Either
 * way the node serves the files it holds to other peers (/tessera/files/1.0.0), chunks still
 * downloading included, so nodes joining together fetch from each other.
 */
import { homedir } from 'node:os'
import { join } from 'node:path'
import { stat, writeFile, rename, mkdir } from 'node:fs/promises'
import type { Libp2p } from '@libp2p/interface'
import { MANIFEST_FILE, type FileEntry, type Manifest, type ShardEntry } from '../shared/manifest.js'
import { TesseraError } from '../shared/errors.js'
import { logger } from '../shared/log.js'
import { bitAt } from '../shared/files/protocol.js'
import { chunksOf, downloadFiles, type Download, type DownloadProgress, type DownloadReport, type FileSource } from '../shared/files/download.js'
import type { FileCatalog } from '../shared/files/serve.js'
import { announceFetching, fetchManifest, listHolders, peerOfAddr, remoteSource } from '../shared/files/remote.js'
import { httpSource } from '../shared/files/http.js'
import { otherPeers } from '../shared/node/peers.js'
import { readManifest, verifyShardFiles } from '../host/model-store.js'
import { diskStore, sha256Hex, type DiskStore } from '../host/file-store.js'

const log = logger('tessera:node:weights')

/** The cache's default home: $XDG_CACHE_HOME/tessera, else ~/.cache/tessera. */
export const defaultCacheDir = (): string => join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'tessera')

/** A model's directory inside a cache. */
export const cachedModelDir = (cache: string, root: string): string => join(cache, 'models', root)

export interface NodeWeights {
  manifest: Manifest
  /** The directory the shards load from. */
  dir: string
  /** True when the files come from the network (a cache), not a built directory. */
  joined: boolean
  /** Makes `shards` present and checked: downloads what is missing (joined), verifies hashes (built). */
  ensure(shards: ShardEntry[]): Promise<DownloadReport | undefined>
  /** What this node serves to peers: the files of shards it has checked, and chunks it is downloading. */
  catalog: FileCatalog
  /** Every download so far, for the ready line and tests. */
  readonly downloads: DownloadReport[]
  close(): Promise<void>
}

export interface JoinOptions {
  /** Cache root (default ~/.cache/tessera). */
  cache?: string
  /** Chunk requests at once (default 8). */
  parallel?: number
  maxBytesPerSecond?: number
  progress?: (p: DownloadProgress) => void
  /** Free bytes where the cache is (tests); default: the file system's. */
  free?: () => Promise<number>
  /** Give up after this long without a chunk (default 60 s). */
  stallMs?: number
  /** HTTP servers holding the files by hash (`URL/shards/SHA256`: a relay's HTTP, a mirror, a CDN), asked like the relay. */
  mirrors?: string[]
}

/**
 * Is `model` a directory (as opposed to a name or root on the network)? Anything that exists, or
 * reads as a path, is one, so a directory without a manifest gets that error, not "no such model".
 */
export async function isModelDir(model: string): Promise<boolean> {
  if (model.includes('/') || model.includes('\\') || model.startsWith('.')) return true
  return (await stat(model).catch(() => undefined)) !== undefined
}

/** A built model directory: nothing to download; files are served once their shard is checked. */
export async function localWeights(dir: string): Promise<NodeWeights> {
  const manifest = await readManifest(dir)
  const held = new Map<string, FileEntry>()
  const store = diskStore(dir)
  return {
    manifest,
    dir,
    joined: false,
    downloads: [],
    async ensure(shards) {
      for (const s of shards) {
        await verifyShardFiles(dir, s)
        for (const f of s.files) held.set(f.sha256, f)
      }
      return undefined
    },
    catalog: wholeFiles(held, store),
    close: async () => await store.close()
  }
}

/**
 * Joins by name: reads the manifest from the relays (the root is checked, shard by shard) and
 * keeps it in the cache, so `ensure` can download exactly the shards the node takes.
 */
export async function joinedWeights(node: Libp2p, relays: string[], model: string, o: JoinOptions = {}): Promise<NodeWeights> {
  const manifest = await fetchManifest(node, relays, model)
  const dir = cachedModelDir(o.cache ?? defaultCacheDir(), manifest.root)
  await mkdir(dir, { recursive: true })
  // The manifest beside the files makes the cache a model directory like any other (doctor, --model DIR).
  const tmp = join(dir, `${MANIFEST_FILE}.tmp`)
  await writeFile(tmp, JSON.stringify(manifest, null, 2) + '\n')
  await rename(tmp, join(dir, MANIFEST_FILE))
  log.info(`${manifest.name} (root ${manifest.root.slice(0, 12)}…): ${manifest.shards.length} shards; cache ${dir}`)

  const store = diskStore(dir, o.free)
  const held = new Map<string, FileEntry>()
  const downloads: DownloadReport[] = []
  const active = new Set<{ files: Map<string, FileEntry>; download: Download }>()
  const whole = wholeFiles(held, store)
  const catalog: FileCatalog = {
    have(sha256) {
      if (held.has(sha256)) return 'all'
      for (const a of active) if (a.files.has(sha256)) return a.download.have(sha256)
      return undefined
    },
    covered(sha256, offset, length) {
      if (held.has(sha256)) return whole.covered(sha256, offset, length)
      for (const a of active) {
        const f = a.files.get(sha256)
        const have = a.download.have(sha256)
        if (f === undefined || have === undefined) continue
        if (have === 'all') return offset + length <= f.bytes
        // Only whole checked chunks go out: a range must lie inside chunks this node has verified.
        if (offset + length > f.bytes) return false
        const c = chunksOf(f)
        for (let i = Math.floor(offset / c.bytes); i <= Math.floor((offset + length - 1) / c.bytes); i++) if (!bitAt(have.chunks, i)) return false
        return true
      }
      return false
    },
    async read(sha256, offset, length) {
      if (held.has(sha256)) return await whole.read(sha256, offset, length)
      for (const a of active) {
        const f = a.files.get(sha256)
        if (f !== undefined) return await store.read(f, offset, length)
      }
      throw new TesseraError('NOT_FOUND', `no file ${sha256}`)
    }
  }

  const sources = async (wanted: Set<string>): Promise<FileSource[]> => {
    const list: FileSource[] = [
      ...relays.map((r) => remoteSource(node, { peer: peerOfAddr(r), addrs: [r] }, 'relay')),
      ...(o.mirrors ?? []).map((m) => httpSource(m))
    ]
    const seen = new Set<string>([node.peerId.toString(), ...list.map((s) => s.id)])
    const add = (peer: string, addrs: string[]): void => {
      if (seen.has(peer) || addrs.length === 0) return
      seen.add(peer)
      list.push(remoteSource(node, { peer, addrs }, 'peer'))
    }
    // Peers serving shards hold their files; peers still downloading hold some of their chunks.
    const serving = await otherPeers(node, relays, manifest).catch(() => [])
    for (const p of serving) {
      const holds = manifest.shards.some((s) => s.layers[0] >= p.layers[0] && s.layers[1] <= p.layers[1] && s.files.some((f) => wanted.has(f.sha256)))
      if (holds) add(p.peer, p.addrs)
    }
    const signal = AbortSignal.timeout(5000)
    const addrs = node.getMultiaddrs().map((a) => a.toString())
    await Promise.all(
      relays.map(async (r) => {
        await announceFetching(node, r, manifest.root, [...wanted], addrs, signal).catch(() => {})
        for (const h of await listHolders(node, r, manifest.root, signal).catch(() => [])) if (h.files.some((f) => wanted.has(f))) add(h.peer, h.addrs)
      })
    )
    return list
  }

  return {
    manifest,
    dir,
    joined: true,
    downloads,
    async ensure(shards) {
      const files = new Map(shards.flatMap((s) => s.files).map((f) => [f.sha256, f]))
      const download = downloadFiles({
        files: [...files.values()],
        store,
        sources: async () => await sources(new Set(files.keys())),
        hash: sha256Hex,
        parallel: o.parallel,
        maxBytesPerSecond: o.maxBytesPerSecond,
        stallMs: o.stallMs,
        seed: node.peerId.toString(),
        progress: o.progress,
        log
      })
      const entry = { files, download }
      active.add(entry)
      try {
        const report = await download.done
        for (const f of files.values()) held.set(f.sha256, f)
        downloads.push(report)
        const from = Object.entries(report.bySource)
          .map(([peer, n]) => `${peer.slice(-8)} ${mib(n)}`)
          .join(', ')
        log.info(
          report.fetched === 0
            ? `layers [${shards[0].layers[0]},${shards[shards.length - 1].layers[1]}): all ${files.size} files already in the cache, checked`
            : `downloaded ${mib(report.fetched)} of ${mib(report.bytes)} in ${(report.ms / 1000).toFixed(1)} s (${from})${report.present > 0 ? `; ${mib(report.present)} was already here` : ''}`
        )
        return report
      } finally {
        active.delete(entry)
      }
    },
    catalog,
    close: async () => await store.close()
  }
}

/** Serving whole, checked files from the directory. */
function wholeFiles(held: Map<string, FileEntry>, store: DiskStore): FileCatalog {
  return {
    have: (sha256) => (held.has(sha256) ? 'all' : undefined),
    covered: (sha256, offset, length) => {
      const f = held.get(sha256)
      return f !== undefined && offset + length <= f.bytes
    },
    async read(sha256, offset, length) {
      const f = held.get(sha256)
      if (f === undefined) throw new TesseraError('NOT_FOUND', `no file ${sha256}`)
      return await store.read(f, offset, length)
    }
  }
}

const mib = (n: number): string => `${(n / 2 ** 20).toFixed(2)} MiB`

/** The drill `--fault bad-chunk`: one byte flipped in the middle chunk of every file served. */
export function badChunk(manifest: Manifest): (sha256: string, offset: number, bytes: Uint8Array) => Uint8Array {
  const files = new Map(manifest.shards.flatMap((s) => s.files).map((f) => [f.sha256, f]))
  return (sha256, offset, bytes) => {
    const f = files.get(sha256)
    if (f === undefined) return bytes
    const middle = Math.floor(f.bytes / 2)
    if (middle < offset || middle >= offset + bytes.byteLength) return bytes
    const out = bytes.slice()
    out[middle - offset] ^= 0xff
    return out
  }
}
