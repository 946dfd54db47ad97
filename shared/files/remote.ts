/**
 * The asking side of /tessera/files/1.0.0: a relay or a peer as a FileSource, a model's manifest
 * by name or root, and the relay's list of who is downloading what.
 */
import type { Libp2p } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { lpStream } from '@libp2p/utils'
import { decode } from 'cborg'
import { asErrorCode, TesseraError } from '../errors.js'
import { checkManifest, type Manifest } from '../manifest.js'
import { lpLimits } from '../protocol/limits.js'
import type { FileSource } from './download.js'
import { encodeFilesRequest, FILES_PROTOCOL, MAX_READ_BYTES, type FileHolder, type FilesReply, type FilesRequest } from './protocol.js'

const ASK_TIMEOUT_MS = 10_000

/** One request on a fresh stream to the first of `addrs` that answers; the reply, and a read's bytes. */
async function ask(node: Libp2p, addrs: string[], req: FilesRequest, signal: AbortSignal): Promise<{ reply: FilesReply & { ok: true }; body?: Uint8Array }> {
  const stream = await node.dialProtocol(
    addrs.map((a) => multiaddr(a)),
    FILES_PROTOCOL,
    { signal }
  )
  try {
    const lp = lpStream(stream, lpLimits(MAX_READ_BYTES + 1024))
    await lp.write(encodeFilesRequest(req), { signal })
    const reply = decode((await lp.read({ signal })).subarray()) as FilesReply
    if (reply?.ok !== true) {
      const r = reply as { code?: unknown; message?: unknown }
      throw new TesseraError(asErrorCode(r?.code), typeof r?.message === 'string' ? r.message.slice(0, 500) : 'the source refused without saying why')
    }
    if (req.t !== 'read') return { reply }
    if (reply.length !== req.length) throw new TesseraError('BAD_REPLY', `asked for ${req.length} bytes, the source announced ${String(reply.length)}`)
    const body = (await lp.read({ signal })).subarray()
    return { reply, body }
  } finally {
    await stream.close().catch(() => stream.abort(new Error('closed')))
  }
}

/**
 * A relay (its multiaddr) or a peer (its id and addresses) as a source of file bytes. Every
 * address is dialled as that peer's (its /p2p/ appended where missing, others' dropped), so the
 * connection's handshake proves who answers and a bad chunk is held against the right id.
 */
export function remoteSource(node: Libp2p, who: { peer: string; addrs: string[] }, kind: 'relay' | 'peer'): FileSource {
  const own = `/p2p/${who.peer}`
  const addrs = who.addrs.flatMap((a) => (a.endsWith(own) ? [a] : a.includes('/p2p/') && !a.includes('/p2p-circuit') ? [] : [`${a}${own}`]))
  who = { ...who, addrs }
  return {
    id: who.peer,
    kind,
    async have(sha256, signal) {
      try {
        const { reply } = await ask(node, who.addrs, { t: 'have', sha256 }, signal)
        if (reply.all === true) return 'all'
        if (!(reply.chunks instanceof Uint8Array)) return undefined
        return { chunks: reply.chunks, ...(reply.pending instanceof Uint8Array ? { pending: reply.pending } : {}) }
      } catch (err) {
        if (err instanceof TesseraError && err.code === 'NOT_FOUND') return undefined
        throw err
      }
    },
    async read(sha256, offset, length, signal) {
      const { body } = await ask(node, who.addrs, { t: 'read', sha256, offset, length }, signal)
      return body ?? new Uint8Array()
    }
  }
}

/** The relay's peer id, from the last /p2p/ of its address. */
export function peerOfAddr(addr: string): string {
  const id = multiaddr(addr)
    .getComponents()
    .filter((c) => c.name === 'p2p')
    .at(-1)?.value
  if (id === undefined) throw new TesseraError('CONFIG', `relay address ${addr} names no peer (/p2p/…); copy the whole address the relay prints`)
  return id
}

const ROOT = /^[0-9a-f]{64}$/

/**
 * The manifest `model` (a name or a root) means, from the first relay that knows it; checked
 * whole (shard hashes, root), and when a root was asked for, that it is that root.
 */
export async function fetchManifest(node: Libp2p, relays: string[], model: string): Promise<Manifest> {
  const errors: unknown[] = []
  for (const relay of relays) {
    try {
      const { reply } = await ask(node, [relay], { t: 'manifest', model }, AbortSignal.timeout(ASK_TIMEOUT_MS))
      const m = checkManifest(reply.manifest, `the manifest the relay gave for ${model}`)
      if (ROOT.test(model.toLowerCase()) && m.root !== model.toLowerCase())
        throw new TesseraError('SHARD_HASH', `asked for root ${model}, got a manifest of root ${m.root}`)
      return m
    } catch (err) {
      errors.push(err)
    }
  }
  if (errors.length === 1) throw errors[0]
  const all = errors.map((e, i) => `${relays[i]}: ${(e as Error).message}`).join('; ')
  const notFound = errors.every((e) => e instanceof TesseraError && e.code === 'NOT_FOUND')
  throw new TesseraError(notFound ? 'NOT_FOUND' : 'UNREACHABLE', `no relay could give the manifest of ${model}: ${all}`)
}

/** Peers the relay knows to be downloading files of `root` (not checked: a lying entry costs its asker one bad chunk). */
export async function listHolders(node: Libp2p, relay: string, root: string, signal: AbortSignal): Promise<FileHolder[]> {
  const { reply } = await ask(node, [relay], { t: 'sources', root }, signal)
  const ok = (h: FileHolder): boolean =>
    typeof h?.peer === 'string' &&
    Array.isArray(h.addrs) &&
    h.addrs.every((a) => typeof a === 'string') &&
    Array.isArray(h.files) &&
    h.files.every((f) => typeof f === 'string')
  return (Array.isArray(reply.sources) ? reply.sources : []).filter(ok).slice(0, 256)
}

/** Tells the relay this peer is downloading `files` of `root` and can be asked for the chunks it has. */
export async function announceFetching(node: Libp2p, relay: string, root: string, files: string[], addrs: string[], signal: AbortSignal): Promise<void> {
  await ask(node, [relay], { t: 'fetching', root, files, addrs: addrs.slice(0, 16) }, signal)
}
