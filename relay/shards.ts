/**
 * Model files by content hash: `GET /shards/:sha256` serves exactly the files a manifest names
 * (never a path from the URL), streamed from disk with HTTP ranges so a tab can resume a large
 * download and cache it forever (the hash is the name).
 */
import { createReadStream, type ReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { resolve, sep } from 'node:path'
import type { Manifest } from '../shared/manifest.js'
import { logger } from '../shared/log.js'
import { jsonError } from './errors.js'

const log = logger('tessera:relay:http')

export interface ServedFile {
  path: string
  bytes: number
  sha256: string
}

/** sha256 → file on disk, for every shard file (and tokenizer) of every model. */
export function indexFiles(models: Array<{ dir: string; manifest: Manifest }>): Map<string, ServedFile> {
  const files = new Map<string, ServedFile>()
  for (const { dir, manifest } of models) {
    const root = resolve(dir)
    const entries = manifest.shards.flatMap((s) => s.files)
    // The tokenizer files are hashed in the manifest too, and a page needs them to read and show text.
    for (const f of [manifest.tokenizer, manifest.tokenizerConfig]) if (f !== undefined && f !== null) entries.push(f)
    for (const f of entries) {
      const path = resolve(root, f.name)
      // A manifest is data: a name like ../../etc/passwd must not become a download.
      if (!path.startsWith(root + sep)) {
        log.warn(`${dir}: manifest names ${f.name}, outside the model directory; not serving it`)
        continue
      }
      if (!/^[0-9a-f]{64}$/.test(f.sha256)) continue
      files.set(f.sha256, { path, bytes: f.bytes, sha256: f.sha256 })
    }
  }
  return files
}

export type RangeResult = { kind: 'full' } | { kind: 'partial'; start: number; end: number } | { kind: 'unsatisfiable' }

/**
 * One `bytes=` range against a file of `size` bytes (end inclusive). Several ranges or a header
 * that does not parse are ignored (a full 200), which RFC 9110 allows; only ranges that parse
 * but miss the file are 416.
 */
export function parseRange(header: string | undefined, size: number): RangeResult {
  if (header === undefined) return { kind: 'full' }
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (m === null || (m[1] === '' && m[2] === '')) return { kind: 'full' }
  if (m[1] === '') {
    const n = Number(m[2])
    if (n === 0 || size === 0) return { kind: 'unsatisfiable' }
    return { kind: 'partial', start: Math.max(0, size - n), end: size - 1 }
  }
  const start = Number(m[1])
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1)
  if (m[2] !== '' && Number(m[2]) < start) return { kind: 'full' } // invalid spec: ignore it
  if (start >= size) return { kind: 'unsatisfiable' }
  return { kind: 'partial', start, end }
}

/**
 * A web stream over bytes [start, end] of a file. The file is opened on the first read, not
 * before, so a response nobody reads (HEAD, a dropped client) holds no descriptor.
 */
export function fileStream(path: string, start: number, end: number): ReadableStream<Uint8Array> {
  let node: ReadStream | undefined
  let it: AsyncIterator<Buffer> | undefined
  return new ReadableStream<Uint8Array>(
    {
      async pull(ctrl) {
        node ??= createReadStream(path, { start, end, highWaterMark: 1 << 20 })
        it ??= node[Symbol.asyncIterator]() as AsyncIterator<Buffer>
        const { done, value } = await it.next()
        if (done === true) ctrl.close()
        else ctrl.enqueue(new Uint8Array(value.buffer, value.byteOffset, value.byteLength))
      },
      cancel() {
        node?.destroy()
      }
    },
    { highWaterMark: 0 }
  )
}

const IMMUTABLE = 'public, max-age=31536000, immutable'

/** The response for one served file, honouring Range, If-None-Match and HEAD. */
export async function fileResponse(file: ServedFile, req: Request): Promise<Response> {
  const size = await stat(file.path).then(
    (s) => s.size,
    () => undefined
  )
  if (size === undefined) return jsonError(404, `shard file ${file.sha256} is listed in a manifest but missing on this relay`, 'file_missing')
  // A size that differs from the manifest means the bytes are not the ones the hash names.
  if (size !== file.bytes) {
    const why = `shard file ${file.sha256} on disk has ${size} bytes, the manifest says ${file.bytes}; the relay's copy is corrupt`
    return jsonError(500, why, 'file_corrupt')
  }
  const headers = new Headers({
    'Content-Type': 'application/octet-stream',
    'Accept-Ranges': 'bytes',
    ETag: `"${file.sha256}"`,
    'Cache-Control': IMMUTABLE
  })
  const inm = req.headers.get('if-none-match')
  if (inm?.split(',').some((t) => t.trim().replace(/^W\//, '') === `"${file.sha256}"` || t.trim() === '*')) {
    return new Response(null, { status: 304, headers })
  }
  const range = parseRange(req.headers.get('range') ?? undefined, size)
  if (range.kind === 'unsatisfiable') {
    const why = `range ${req.headers.get('range') ?? ''} is outside the file (${size} bytes)`
    return jsonError(416, why, 'range_not_satisfiable', new Headers({ 'Content-Range': `bytes */${size}` }))
  }
  const [start, end, status] = range.kind === 'partial' ? [range.start, range.end, 206] : [0, size - 1, 200]
  headers.set('Content-Length', String(end - start + 1))
  if (range.kind === 'partial') headers.set('Content-Range', `bytes ${start}-${end}/${size}`)
  const head = req.method === 'HEAD' || size === 0
  return new Response(head ? null : fileStream(file.path, start, end), { status, headers })
}
