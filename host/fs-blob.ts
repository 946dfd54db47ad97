import { open, stat, access } from 'node:fs/promises'
import { join } from 'node:path'
import type { BlobSource } from '../shared/blob.js'
import { ModelFormatError } from '../shared/errors.js'

/** BlobSource over a directory: each read opens, reads the range and closes (no file held, no mmap of the whole). */
export function fileBlobs(dir: string): BlobSource {
  return {
    size: async (name) => (await stat(join(dir, name))).size,
    has: async (name) =>
      await access(join(dir, name)).then(
        () => true,
        () => false
      ),
    async read(name, offset, length) {
      const fh = await open(join(dir, name), 'r')
      try {
        const buf = new Uint8Array(length)
        let got = 0
        while (got < length) {
          const { bytesRead } = await fh.read(buf, got, length - got, offset + got)
          if (bytesRead === 0) {
            throw new ModelFormatError(`${name}: unexpected end of file at ${offset + got}: the file is truncated; copy or download it again`)
          }
          got += bytesRead
        }
        return buf
      } finally {
        await fh.close()
      }
    }
  }
}
