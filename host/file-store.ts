/**
 * Shard files on disk as they download: each goes to `NAME.part` (full size from the start, each
 * chunk written where it belongs), is checked whole, and is renamed to NAME. A `.part` left by a
 * stopped download is checked chunk by chunk on the next start, and only the chunks that fail
 * are fetched again. What is already whole is checked once and kept.
 */
import { createHash } from 'node:crypto'
import { open, rename, rm, stat, statfs, mkdir, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import type { FileEntry } from '../shared/manifest.js'
import { ShardHashError } from '../shared/errors.js'
import type { ChunkStore } from '../shared/files/download.js'
import { chunkCount, chunkRange, type FileChunks } from '../shared/files/chunks.js'
import { hashFile } from './model-store.js'

export const sha256Hex = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

export interface DiskStore extends ChunkStore {
  /** Bytes [offset, offset + length) of a file being downloaded or done (for serving checked chunks). */
  read(file: FileEntry, offset: number, length: number): Promise<Uint8Array>
  close(): Promise<void>
}

export function diskStore(dir: string, free: () => Promise<number> = async () => await freeBytes(dir)): DiskStore {
  const handles = new Map<string, FileHandle>()
  const part = (f: FileEntry): string => join(dir, `${f.name}.part`)
  const whole = (f: FileEntry): string => join(dir, f.name)
  return {
    async open(file, chunks) {
      await mkdir(dir, { recursive: true })
      const n = chunkCount(file.bytes, chunks.bytes)
      const done = await stat(whole(file)).catch(() => undefined)
      if (done?.size === file.bytes && (await hashFile(whole(file))) === file.sha256) return new Array<boolean>(n).fill(true)
      // A whole file that fails its hash is not ours to keep: fetch it again.
      if (done !== undefined) await rm(whole(file), { force: true })
      const fh = await open(part(file), 'r+').catch(async () => await open(part(file), 'w+'))
      handles.set(file.sha256, fh)
      const have = (await fh.stat()).size === file.bytes ? await checkedChunks(fh, file, chunks) : new Array<boolean>(n).fill(false)
      await fh.truncate(file.bytes)
      return have
    },
    async write(file, offset, bytes) {
      const fh = handles.get(file.sha256)
      if (fh === undefined) throw new Error(`${file.name} is not open`)
      let done = 0
      while (done < bytes.byteLength) done += (await fh.write(bytes, done, bytes.byteLength - done, offset + done)).bytesWritten
    },
    async finish(file) {
      const fh = handles.get(file.sha256)
      if (fh !== undefined) {
        await fh.sync()
        await fh.close()
        handles.delete(file.sha256)
        const actual = await hashFile(part(file))
        if (actual !== file.sha256) throw new ShardHashError(part(file), file.sha256, actual)
        await rename(part(file), whole(file))
      }
    },
    async read(file, offset, length) {
      const fh = handles.get(file.sha256)
      const out = new Uint8Array(length)
      if (fh !== undefined) {
        await fh.read(out, 0, length, offset)
        return out
      }
      const h = await open(whole(file), 'r')
      try {
        await h.read(out, 0, length, offset)
        return out
      } finally {
        await h.close()
      }
    },
    free,
    async close() {
      for (const fh of handles.values()) await fh.close().catch(() => {})
      handles.clear()
    }
  }
}

/** Which chunks of a partial file already hold the right bytes. */
async function checkedChunks(fh: FileHandle, file: FileEntry, chunks: FileChunks): Promise<boolean[]> {
  const n = chunkCount(file.bytes, chunks.bytes)
  const buf = new Uint8Array(chunks.bytes)
  const have: boolean[] = []
  for (let i = 0; i < n; i++) {
    const [a, b] = chunkRange(file.bytes, chunks.bytes, i)
    const view = buf.subarray(0, b - a)
    await fh.read(view, 0, b - a, a)
    have.push(sha256Hex(view) === chunks.sha256[i])
  }
  return have
}

/** Free bytes for unprivileged writes on the file system holding `dir` (or its nearest existing parent). */
export async function freeBytes(dir: string): Promise<number> {
  let at = dir
  for (;;) {
    const s = await statfs(at).catch(() => undefined)
    if (s !== undefined) return s.bavail * s.bsize
    const up = join(at, '..')
    if (up === at) return Infinity
    at = up
  }
}
