/**
 * Read bytes of named files by range: local files in Node, HTTP range requests or browser
 * storage on the web. Importers read through this so they never need the whole file in memory.
 */
import { TesseraError } from './errors.js'

export interface BlobSource {
  /** Size in bytes of `name`; throws if it does not exist. */
  size(name: string): Promise<number>
  /** `length` bytes of `name` from `offset`. */
  read(name: string, offset: number, length: number): Promise<Uint8Array>
  /** Whether `name` exists. */
  has(name: string): Promise<boolean>
}

export async function readText(src: BlobSource, name: string): Promise<string> {
  return new TextDecoder().decode(await src.read(name, 0, await src.size(name)))
}

/** A BlobSource over in-memory files; for tests and for files a browser already holds. */
export function memoryBlobs(files: Record<string, Uint8Array>): BlobSource {
  const get = (name: string): Uint8Array => {
    const f = files[name]
    if (f === undefined) throw new TesseraError('NOT_FOUND', `no such file: ${name}`)
    return f
  }
  return {
    size: async (name) => get(name).byteLength,
    read: async (name, offset, length) => get(name).subarray(offset, offset + length),
    has: async (name) => files[name] !== undefined
  }
}
