/**
 * Serving /tessera/files/1.0.0 (shared/files/protocol.ts) from a catalog of what this peer holds.
 * The same handler runs on the relay (every file of its models, plus the name lookups and the
 * list of who is downloading what) and on nodes (the files of their shards, finished or partly
 * downloaded). Bounded like every other protocol: one request per stream, a read time-out, a cap
 * on reads in flight and on streams per connection, so no one peer can tie up a node's disk.
 */
import type { Libp2p, Stream, Connection } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { TesseraError } from '../errors.js'
import { logger } from '../log.js'
import { lpLimits } from '../protocol/limits.js'
import {
  decodeFilesRequest,
  encodeFilesReply,
  FILES_PROTOCOL,
  MAX_READ_BYTES,
  type FileHolder,
  type FilesReply,
  type FilesRequest,
  type Holding
} from './protocol.js'

const log = logger('tessera:files')

/** What a peer holds and answers about; the parts a node lacks (manifest, sources) say NOT_FOUND. */
export interface FileCatalog {
  /** Which chunks of a file this peer has checked; undefined: not held. */
  have(sha256: string): Holding | undefined
  /** Bytes of a held file; the range must lie in checked chunks (the handler checks with `covered`). */
  read(sha256: string, offset: number, length: number): Promise<Uint8Array>
  /** Whether [offset, offset + length) of a file lies in chunks this peer has checked, and inside the file. */
  covered(sha256: string, offset: number, length: number): boolean
  /** A manifest by model name or root (relays). */
  manifest?(model: string): unknown
  /** Peers downloading a model's files (relays). */
  sources?(root: string, asker: string): FileHolder[]
  /** A peer says it is downloading these files (relays; `from` is the authenticated remote peer). */
  fetching?(from: string, root: string, files: string[], addrs: string[]): void
}

export const FILES_DEFAULTS = {
  /** Reads served at once, over all peers: disk and upload are shared by every request. */
  maxReads: 16,
  /** Streams one connection may hold open at once. */
  streamsPerConnection: 8,
  readTimeoutMs: 10_000,
  /** A reply's write (the bytes of a read) must finish within this. */
  writeTimeoutMs: 120_000
}

export interface FilesServeOptions {
  /** Bytes served, by the peer they went to (for metrics and tests). */
  served?: (peer: string, bytes: number) => void
  /** A drill (`tessera node --fault bad-chunk`): change the bytes of a read before sending. */
  tamper?: (sha256: string, offset: number, bytes: Uint8Array) => Uint8Array
  limits?: Partial<typeof FILES_DEFAULTS>
}

export async function handleFiles(node: Libp2p, catalog: FileCatalog, o: FilesServeOptions = {}): Promise<{ stop: () => Promise<void> }> {
  const limits = { ...FILES_DEFAULTS, ...o.limits }
  let reading = 0
  await node.handle(
    FILES_PROTOCOL,
    async (stream: Stream, connection: Connection) => {
      const remote = connection.remotePeer.toString()
      const lp = lpStream(stream, lpLimits(MAX_READ_BYTES + 1024))
      const reply = async (r: FilesReply, body?: Uint8Array): Promise<void> => {
        const signal = AbortSignal.timeout(limits.writeTimeoutMs)
        await lp.write(encodeFilesReply(r), { signal })
        if (body !== undefined) await lp.write(body, { signal })
      }
      try {
        const req = decodeFilesRequest((await lp.read({ signal: AbortSignal.timeout(limits.readTimeoutMs) })).subarray())
        if (req.t !== 'read') {
          await reply(answer(catalog, req, remote))
        } else {
          if (catalog.have(req.sha256) === undefined) throw new TesseraError('NOT_FOUND', `this peer holds no file ${req.sha256.slice(0, 12)}…`)
          if (!catalog.covered(req.sha256, req.offset, req.length)) {
            throw new TesseraError('NOT_FOUND', `bytes ${req.offset}+${req.length} of ${req.sha256.slice(0, 12)}… are not (yet) held here`)
          }
          if (reading >= limits.maxReads) throw new TesseraError('BUSY', `${reading} reads in flight; try another source`)
          reading++
          try {
            let bytes = await catalog.read(req.sha256, req.offset, req.length)
            if (o.tamper !== undefined) bytes = o.tamper(req.sha256, req.offset, bytes)
            await reply({ ok: true, length: bytes.byteLength }, bytes)
            o.served?.(remote, bytes.byteLength)
          } finally {
            reading--
          }
        }
      } catch (err) {
        const code = err instanceof TesseraError ? err.code : 'INTERNAL'
        if (code === 'INTERNAL') log.warn(`files request from ${remote.slice(-8)} failed: ${(err as Error).message}`)
        await reply({ ok: false, code, message: (err as Error).message }).catch(() => {})
      }
      await stream.close().catch(() => {})
    },
    { runOnLimitedConnection: false, maxInboundStreams: limits.streamsPerConnection }
  )
  return { stop: async () => await node.unhandle(FILES_PROTOCOL) }
}

function answer(catalog: FileCatalog, req: Exclude<FilesRequest, { t: 'read' }>, remote: string): FilesReply {
  switch (req.t) {
    case 'have': {
      const h = catalog.have(req.sha256)
      if (h === undefined) throw new TesseraError('NOT_FOUND', `this peer holds no file ${req.sha256.slice(0, 12)}…`)
      return h === 'all' ? { ok: true, all: true } : { ok: true, ...h }
    }
    case 'manifest': {
      if (catalog.manifest === undefined) throw new TesseraError('NOT_FOUND', 'this peer lists no models; ask a relay')
      return { ok: true, manifest: catalog.manifest(req.model) }
    }
    case 'sources': {
      if (catalog.sources === undefined) throw new TesseraError('NOT_FOUND', 'this peer keeps no list of sources; ask a relay')
      return { ok: true, sources: catalog.sources(req.root, remote) }
    }
    case 'fetching': {
      if (catalog.fetching === undefined) throw new TesseraError('NOT_FOUND', 'this peer keeps no list of sources; tell a relay')
      catalog.fetching(remote, req.root, req.files, req.addrs)
      return { ok: true }
    }
  }
}
