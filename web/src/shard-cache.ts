/**
 * A tab's shard files: downloaded from the relay, each checked against the manifest's sha256
 * before use, and kept in the Cache API so the next visit loads them without downloading.
 */
import type { ShardEntry } from '../../shared/manifest.js'
import { ShardHashError, TesseraError } from '../../shared/errors.js'
import { bytesToHex } from '../../shared/hash.js'

/** The Cache API bucket; bump the suffix if what is stored under a URL ever changes meaning. */
const CACHE = 'tessera-shards-v1'

export interface Progress {
  file: string
  loaded: number
  total: number
  cached: boolean
}

/** Downloads (or reads from the cache) and checks every file of a shard; throws ShardHashError on a mismatch. */
export async function fetchShard(relay: string, shard: ShardEntry, progress: (p: Progress) => void): Promise<Map<string, Uint8Array>> {
  const cache = await caches.open(CACHE)
  const files = new Map<string, Uint8Array>()
  for (const f of shard.files) {
    const url = `${relay}/shards/${f.sha256}`
    const hit = await cache.match(url)
    if (hit !== undefined) {
      const bytes = new Uint8Array(await hit.arrayBuffer())
      progress({ file: f.name, loaded: bytes.byteLength, total: f.bytes, cached: true })
      if ((await sha256(bytes)) === f.sha256) {
        files.set(f.name, bytes)
        continue
      }
      await cache.delete(url) // a damaged cache entry: fetch it again
    }
    const bytes = await download(url, f.bytes, (loaded) => progress({ file: f.name, loaded, total: f.bytes, cached: false }))
    const actual = await sha256(bytes)
    if (actual !== f.sha256) throw new ShardHashError(f.name, f.sha256, actual)
    await cache.put(url, new Response(bytes as Uint8Array<ArrayBuffer>))
    files.set(f.name, bytes)
  }
  return files
}

async function download(url: string, total: number, progress: (loaded: number) => void): Promise<Uint8Array<ArrayBuffer>> {
  const res = await fetch(url)
  if (!res.ok || res.body === null) {
    throw new TesseraError(res.status === 404 ? 'NOT_FOUND' : 'UNREACHABLE', `${url}: HTTP ${res.status}; check that the relay still hosts this model`)
  }
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

async function sha256(bytes: Uint8Array): Promise<string> {
  return bytesToHex(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>)))
}
