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
  // One handle per file being written, as a promise: chunks of a file written at once must not each open one.
  const handles = new Map<string, Promise<FileHandle>>()
  const part = (f: FileEntry): string => join(dir, `${f.name}.part`)
  const whole = (f: FileEntry): string => join(dir, f.name)
  // The .part is opened (made, sized) at the first chunk written, so a refused download leaves nothing behind.
  const handle = async (f: FileEntry): Promise<FileHandle> => {
    let fh = handles.get(f.sha256)
    if (fh === undefined) {
      fh = (async () => {
        await mkdir(dir, { recursive: true })
        const h = await open(part(f), 'r+').catch(async () => await open(part(f), 'w+'))
        if ((await h.stat()).size !== f.bytes) await h.truncate(f.bytes)
        return h
      })()
      handles.set(f.sha256, fh)
    }
    return await fh
  }
  return {
    async open(file, chunks) {
      const n = chunkCount(file.bytes, chunks.bytes)
      const done = await stat(whole(file)).catch(() => undefined)
      if (done?.size === file.bytes && (await hashFile(whole(file))) === file.sha256) return new Array<boolean>(n).fill(true)
      // A whole file that fails its hash is not ours to keep: fetch it again.
      if (done !== undefined) await rm(whole(file), { force: true })
      const partial = await stat(part(file)).catch(() => undefined)
      if (partial?.size !== file.bytes) return new Array<boolean>(n).fill(false)
      const fh = await open(part(file), 'r')
      try {
        return await checkedChunks(fh, file, chunks)
      } finally {
        await fh.close()
      }
    },
    async write(file, offset, bytes) {
      const fh = await handle(file)
      let done = 0
      while (done < bytes.byteLength) done += (await fh.write(bytes, done, bytes.byteLength - done, offset + done)).bytesWritten
    },
    async finish(file) {
      const fh = await handles.get(file.sha256)
      handles.delete(file.sha256)
      if (fh !== undefined) {
        await fh.sync()
        await fh.close()
      }
      // Nothing written this run but a whole .part left by the last (stopped before its rename): checked and put in place too.
      if (fh === undefined && (await stat(part(file)).catch(() => undefined)) === undefined) return
      const actual = await hashFile(part(file))
      if (actual !== file.sha256) throw new ShardHashError(part(file), file.sha256, actual)
      await rename(part(file), whole(file))
    },
    async read(file, offset, length) {
      const out = new Uint8Array(length)
      const fh = await handles.get(file.sha256)
      if (fh !== undefined) {
        await fh.read(out, 0, length, offset)
        return out
      }
      // A finished file, or chunks a stopped run left in its .part (checked at open).
      const h = await open(whole(file), 'r').catch(async () => await open(part(file), 'r'))
      try {
        await h.read(out, 0, length, offset)
        return out
      } finally {
        await h.close()
      }
    },
    free,
    async close() {
      for (const fh of handles.values()) await (await fh).close().catch(() => {})
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
