/**
 * /tessera/files/1.0.0 — model files between peers: the relay answers which manifest a name
 * means and who holds its files; anyone holding a file (the relay, a node that serves its shards,
 * a node still downloading them) serves byte ranges of it. One request per stream, length-prefixed
 * CBOR; a read's bytes follow its reply as one more message.
 *
 *   manifest  { model }                 → { ok, manifest }            a name or a root (relays)
 *   fetching  { root, files, addrs }    → { ok }                      "I am downloading these; ask me for chunks" (relays)
 *   sources   { root }                  → { ok, sources }             peers downloading the model's files (relays)
 *   have      { sha256 }                → { ok, all } | { ok, chunks, pending }  chunks the holder has checked, and is fetching
 *   read      { sha256, offset, length } → { ok, length } + bytes
 *   any       → { ok: false, code, message }
 *
 * Nothing a holder says is trusted: every chunk is checked against the manifest's hash on arrival.
 */
import { decode, encode } from 'cborg'
import { ProtocolError, type ErrorCode } from '../errors.js'

export const FILES_PROTOCOL = '/tessera/files/1.0.0'

/** The largest range one read may ask for (a chunk is at most 8 MiB, shared/files/chunks.ts). */
export const MAX_READ_BYTES = 16 * 2 ** 20
/** Files one fetching message may name: a 70B model has ~160 shard files. */
export const MAX_FETCHING_FILES = 4096

export type FilesRequest =
  | { t: 'manifest'; model: string }
  | { t: 'fetching'; root: string; files: string[]; addrs: string[] }
  | { t: 'sources'; root: string }
  | { t: 'have'; sha256: string }
  | { t: 'read'; sha256: string; offset: number; length: number }

/**
 * What a holder has of a file: all of it, or the chunks it has checked (a bitmap, packBits) and
 * those it is fetching now (so that others fetch something else from the relay meanwhile).
 */
export type Holding = 'all' | { chunks: Uint8Array; pending?: Uint8Array }

/** A peer that said it is downloading some of a model's files (and how to reach it). */
export interface FileHolder {
  peer: string
  addrs: string[]
  /** sha256 of each file it is fetching or holds. */
  files: string[]
}

export type FilesReply =
  | { ok: true; manifest?: unknown; sources?: FileHolder[]; all?: boolean; chunks?: Uint8Array; pending?: Uint8Array; length?: number }
  | { ok: false; code: ErrorCode; message: string }

const HEX64 = /^[0-9a-f]{64}$/
const isHex = (x: unknown): x is string => typeof x === 'string' && HEX64.test(x)
const isAddrs = (x: unknown): x is string[] => Array.isArray(x) && x.length <= 16 && x.every((a) => typeof a === 'string' && a.length <= 512)

/** Parses and checks one request; throws ProtocolError('MALFORMED') naming what is wrong. */
export function decodeFilesRequest(bytes: Uint8Array): FilesRequest {
  let m: Record<string, unknown>
  try {
    m = decode(bytes)
  } catch {
    throw new ProtocolError('MALFORMED', 'not valid CBOR')
  }
  const bad = (what: string): never => {
    throw new ProtocolError('MALFORMED', `files request: ${what}`)
  }
  switch (m?.t) {
    case 'manifest':
      if (typeof m.model !== 'string' || m.model.length === 0 || m.model.length > 256) bad('manifest needs a model name or root (at most 256 characters)')
      return { t: 'manifest', model: m.model as string }
    case 'fetching':
      if (!isHex(m.root)) bad('fetching needs a root of 64 hex digits')
      if (!Array.isArray(m.files) || m.files.length > MAX_FETCHING_FILES || !m.files.every(isHex))
        bad(`fetching needs at most ${MAX_FETCHING_FILES} file hashes`)
      if (!isAddrs(m.addrs)) bad('fetching needs at most 16 addresses')
      return { t: 'fetching', root: m.root as string, files: m.files as string[], addrs: m.addrs as string[] }
    case 'sources':
      if (!isHex(m.root)) bad('sources needs a root of 64 hex digits')
      return { t: 'sources', root: m.root as string }
    case 'have':
      if (!isHex(m.sha256)) bad('have needs a sha256 of 64 hex digits')
      return { t: 'have', sha256: m.sha256 as string }
    case 'read': {
      const { offset, length } = m
      if (!isHex(m.sha256)) bad('read needs a sha256 of 64 hex digits')
      if (!Number.isSafeInteger(offset) || (offset as number) < 0) bad('read needs a non-negative integer offset')
      if (!Number.isSafeInteger(length) || (length as number) <= 0 || (length as number) > MAX_READ_BYTES)
        bad(`read length must be 1 to ${MAX_READ_BYTES} bytes`)
      return { t: 'read', sha256: m.sha256 as string, offset: offset as number, length: length as number }
    }
    default:
      return bad('t must be manifest, fetching, sources, have or read')
  }
}

export const encodeFilesRequest = (r: FilesRequest): Uint8Array => encode(r)
export const encodeFilesReply = (r: FilesReply): Uint8Array => encode(r)

/** One bit per chunk, chunk 0 in the low bit of byte 0. */
export function packBits(bits: boolean[]): Uint8Array {
  const out = new Uint8Array(Math.ceil(bits.length / 8))
  bits.forEach((b, i) => {
    if (b) out[i >> 3] |= 1 << (i & 7)
  })
  return out
}

export const bitAt = (bits: Uint8Array, i: number): boolean => (i >> 3 < bits.byteLength ? (bits[i >> 3] & (1 << (i & 7))) !== 0 : false)
