/**
 * An HTTP server holding shard files by content hash (`BASE/shards/SHA256`, with Range): a relay's
 * HTTP address or any mirror or CDN in front of one. A FileSource like the relay: asked only for
 * what no peer holds, and every chunk it sends is checked like any other's.
 */
import { TesseraError } from '../errors.js'
import type { FileSource } from './download.js'

export function httpSource(base: string): FileSource {
  const root = base.replace(/\/+$/, '')
  const url = (sha256: string): string => `${root}/shards/${sha256}`
  return {
    id: root,
    kind: 'relay',
    async have(sha256, signal) {
      const res = await fetch(url(sha256), { method: 'HEAD', signal })
      if (res.status === 404) return undefined
      if (!res.ok) throw new TesseraError('UNREACHABLE', `${url(sha256)}: HTTP ${res.status}`)
      return 'all'
    },
    async read(sha256, offset, length, signal) {
      const res = await fetch(url(sha256), { headers: { Range: `bytes=${offset}-${offset + length - 1}` }, signal })
      if (res.status === 404) throw new TesseraError('NOT_FOUND', `${url(sha256)}: not there`)
      // A server that ignores Range (200) would send the whole file: refused rather than read.
      if (res.status !== 206) throw new TesseraError('BAD_REPLY', `${url(sha256)}: HTTP ${res.status} to a range request (expected 206)`)
      const body = new Uint8Array(await res.arrayBuffer())
      if (body.byteLength !== length) throw new TesseraError('BAD_REPLY', `${url(sha256)}: ${body.byteLength} bytes for a range of ${length}`)
      return body
    }
  }
}
