/**
 * A model file cut into fixed-size chunks, each with its own sha256 in the manifest, so a
 * downloader that takes chunks from many peers finds a bad one at its first bad chunk (not after
 * gigabytes) and knows which peer sent it.
 */
import { bytesToHex, newSha256 } from '../hash.js'

export interface FileChunks {
  /** Chunk size in bytes; the last chunk may be shorter. */
  bytes: number
  /** sha256 (hex) of each chunk, in order. */
  sha256: string[]
}

const MIN_CHUNK = 16 * 1024
const MAX_CHUNK = 8 * 2 ** 20

/**
 * The chunk size for a file of `bytes`: about 1/64 of it, a power of two between 16 KiB and
 * 8 MiB. Small files still get a few chunks (so a bad source is caught early in tests as in
 * life); a 35 GB model's files need a few thousand hashes in all.
 */
export function chunkSizeFor(bytes: number): number {
  let size = MIN_CHUNK
  while (size < MAX_CHUNK && size * 64 < bytes) size *= 2
  return size
}

export const chunkCount = (fileBytes: number, chunkBytes: number): number => Math.max(1, Math.ceil(fileBytes / chunkBytes))

/** Byte range [start, end) of chunk `i`. */
export function chunkRange(fileBytes: number, chunkBytes: number, i: number): [number, number] {
  const start = i * chunkBytes
  return [start, Math.min(fileBytes, start + chunkBytes)]
}

/** Hashes a stream of bytes into whole-file and per-chunk sha256s in one pass. */
export class ChunkHasher {
  readonly size: number
  private readonly whole = newSha256()
  private part = newSha256()
  private inPart = 0
  private readonly done: string[] = []
  private total = 0

  constructor(size: number) {
    this.size = size
  }

  update(bytes: Uint8Array): void {
    this.whole.update(bytes)
    this.total += bytes.byteLength
    let at = 0
    while (at < bytes.byteLength) {
      const take = Math.min(this.size - this.inPart, bytes.byteLength - at)
      this.part.update(bytes.subarray(at, at + take))
      this.inPart += take
      at += take
      if (this.inPart === this.size) this.cut()
    }
  }

  /** The file's sha256 and its chunks' (an empty file is one empty chunk). */
  digest(): { sha256: string; chunks: FileChunks } {
    if (this.inPart > 0 || this.done.length === 0) this.cut()
    return { sha256: bytesToHex(this.whole.digest()), chunks: { bytes: this.size, sha256: this.done } }
  }

  get bytes(): number {
    return this.total
  }

  private cut(): void {
    this.done.push(bytesToHex(this.part.digest()))
    this.part = newSha256()
    this.inPart = 0
  }
}

/** Whole-file and chunk digests of bytes in memory (a shard's graph, a test's file). */
export function digestBytes(bytes: Uint8Array, size = chunkSizeFor(bytes.byteLength)): { sha256: string; chunks: FileChunks } {
  const h = new ChunkHasher(size)
  h.update(bytes)
  return h.digest()
}

/** Checks a chunk list's shape against its file's size; returns a reason, or undefined when it is sound. */
export function chunkListProblem(c: unknown, fileBytes: number): string | undefined {
  const o = c as FileChunks
  if (typeof o !== 'object' || o === null || !Number.isInteger(o.bytes) || o.bytes <= 0) return 'chunk size must be a positive integer'
  if (!Array.isArray(o.sha256) || o.sha256.length !== chunkCount(fileBytes, o.bytes)) {
    return `expected ${chunkCount(fileBytes, o.bytes)} chunk hashes for ${fileBytes} bytes in chunks of ${o.bytes}`
  }
  if (!o.sha256.every((h) => typeof h === 'string' && /^[0-9a-f]{64}$/.test(h))) return 'chunk hashes must be 64 hex digits'
  return undefined
}
