import type { LlamaConfig } from './model/config.js'
import type { WeightDType } from './shard/build.js'
import { ShardHashError, ModelFormatError } from './errors.js'
import { bytesToHex, hexToBytes, newSha256 } from './hash.js'
import { chunkListProblem, type FileChunks } from './files/chunks.js'

export const MANIFEST_FILE = 'manifest.json'

export interface FileEntry {
  name: string // relative to the model directory
  bytes: number
  sha256: string // hex
  /**
   * Per-chunk sha256s (shared/files/chunks.ts): what a downloader checks each chunk against, so
   * a bad source is dropped at its first bad chunk. Part of the shard's hash, so the root names them.
   */
  chunks?: FileChunks
}

export interface ShardEntry {
  index: number
  layers: [number, number] // [start, end)
  dtype: WeightDType
  /** The .onnx graph first, then its external data file. */
  files: FileEntry[]
  /** sha256 over the files' raw sha256 digests, in order: the shard's identity on the network. */
  sha256: string
  bytes: number
  /** Set when the graph keeps its KV cache with GroupQueryAttention (shard/build.ts KvLayout); absent: concat. */
  kv?: 'gqa'
}

/** What a built model is: enough for any peer to check every byte it loads. */
export interface Manifest {
  tessera: 1
  name: string
  source: string // what it was built from: a path, an HF dir, random:PRESET:SEED
  config: LlamaConfig
  dtype: WeightDType
  tokenizer: FileEntry | null // tokenizer.json, when the source had one
  /** tokenizer_config.json (special tokens, chat template), when the source had one. */
  tokenizerConfig?: FileEntry | null
  shards: ShardEntry[]
  /** sha256 over the shards' hashes (raw bytes, in order): names the whole model. */
  root: string
  created: string
}

/** sha256 over a list of hex digests' raw bytes: a shard's hash over its files, the root over shards. */
/** Manifest file names are plain names inside the model directory: never a path out of it. */
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/

export function hashOfHashes(hexes: string[]): string {
  const h = newSha256()
  for (const x of hexes) h.update(hexToBytes(x))
  return bytesToHex(h.digest())
}

/**
 * A shard's identity: its files' hashes, each followed by its chunk list's when it has one (so a
 * relay cannot hand out a manifest whose chunk hashes fail honest bytes). Manifests built before
 * chunk lists keep their hashes.
 */
export const shardHash = (files: FileEntry[]): string =>
  hashOfHashes(files.flatMap((f) => (f.chunks === undefined ? [f.sha256] : [f.sha256, chunkListHash(f.chunks)])))

/** sha256 over a chunk list: its size (8 bytes, big-endian) then each chunk's raw digest. */
export function chunkListHash(c: FileChunks): string {
  const h = newSha256()
  const size = new Uint8Array(8)
  new DataView(size.buffer).setBigUint64(0, BigInt(c.bytes))
  h.update(size)
  for (const x of c.sha256) h.update(hexToBytes(x))
  return bytesToHex(h.digest())
}
export const modelRoot = (shards: Array<Pick<ShardEntry, 'sha256'>>): string => hashOfHashes(shards.map((s) => s.sha256))

/** Validates a parsed manifest's shape and its root hash; throws ModelFormatError. */
export function checkManifest(m: unknown, where = MANIFEST_FILE): Manifest {
  const bad = (msg: string): never => {
    throw new ModelFormatError(`${where}: ${msg}`)
  }
  if (typeof m !== 'object' || m === null) return bad('not a JSON object')
  const man = m as Manifest
  if (man.tessera !== 1) bad('not a Tessera manifest (field "tessera" must be 1)')
  if (!Array.isArray(man.shards) || man.shards.length === 0) bad('has no shards')
  for (const f of [man.tokenizer, man.tokenizerConfig]) {
    if (f !== undefined && f !== null && !SAFE_NAME.test(f.name)) bad(`file name ${JSON.stringify(f.name)} is not a plain file name`)
  }
  let next = 0
  for (const s of man.shards) {
    for (const f of s.files) {
      if (!SAFE_NAME.test(f.name)) bad(`file name ${JSON.stringify(f.name)} is not a plain file name`)
      if (!Number.isInteger(f.bytes) || f.bytes < 0 || !/^[0-9a-f]{64}$/.test(f.sha256)) bad(`${f.name}: needs a byte count and a sha256 of 64 hex digits`)
      const chunks = f.chunks === undefined ? undefined : chunkListProblem(f.chunks, f.bytes)
      if (chunks !== undefined) bad(`${f.name}: ${chunks}`)
    }
    if (shardHash(s.files) !== s.sha256) bad(`shard ${s.index}'s hash does not match its files' hashes`)
    if (s.layers?.[0] !== next || !(s.layers[1] > s.layers[0])) bad(`shard ${s.index} covers layers ${JSON.stringify(s.layers)}, expected to start at ${next}`)
    next = s.layers[1]
  }
  if (next !== man.config?.nLayers) bad(`shards cover ${next} layers but the model has ${man.config?.nLayers}`)
  if (modelRoot(man.shards) !== man.root) bad("model root does not match its shards' hashes")
  return man
}

/**
 * Checks a shard's files against the manifest, reading each through `read` (whole file).
 * Throws ShardHashError naming the first file that differs.
 */
export async function verifyShard(shard: ShardEntry, read: (name: string) => Promise<Uint8Array>): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, Uint8Array>()
  for (const f of shard.files) {
    const bytes = await read(f.name)
    const actual = bytesToHex(newSha256().update(bytes).digest())
    if (bytes.byteLength !== f.bytes || actual !== f.sha256) throw new ShardHashError(f.name, f.sha256, actual)
    files.set(f.name, bytes)
  }
  return files
}
