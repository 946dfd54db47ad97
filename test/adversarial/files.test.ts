/**
 * /tessera/files/1.0.0 under attack (shared/files/serve.ts, relay/files.ts, shared/files/remote.ts),
 * over real libp2p in process: malformed and oversized requests get a clear error and the peer
 * keeps serving; nobody reads bytes a holder has not checked, nor past a file; a swarm of fresh
 * identities announcing downloads cannot grow the relay's list without bound or list anyone but
 * themselves; reads past the cap get BUSY; a relay handing out another manifest than the root
 * asked for is caught.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Libp2p } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { decode, encode } from 'cborg'
import { createPeer } from '../../host/libp2p.js'
import { handleFiles, type FileCatalog } from '../../shared/files/serve.js'
import { FILES_PROTOCOL, MAX_READ_BYTES, packBits } from '../../shared/files/protocol.js'
import { announceFetching, fetchManifest, listHolders, remoteSource } from '../../shared/files/remote.js'
import { relayCatalog } from '../../relay/files.js'
import { buildModel, readManifest } from '../../host/model-store.js'
import { indexFiles } from '../../relay/shards.js'
import { preset } from '../../shared/model/config.js'
import { randomWeights } from '../../shared/model/random.js'
import type { Manifest } from '../../shared/manifest.js'
import { TesseraError } from '../../shared/errors.js'
import { tempDir } from '../helpers/paths.js'

let relay: Libp2p
let holder: Libp2p
let client: Libp2p
let manifest: Manifest
let relayAddr: string
const data = Uint8Array.from({ length: 64 * 1024 }, (_, i) => i & 0xff)
const SHA = 'ef'.repeat(32)

const codeOf = async (p: Promise<unknown>): Promise<string | undefined> =>
  await p.then(
    () => undefined,
    (err: unknown) => (err instanceof TesseraError ? err.code : String(err))
  )

/** Raw bytes on a fresh stream, and the decoded reply. */
async function raw(to: Libp2p, bytes: Uint8Array): Promise<Record<string, unknown>> {
  const stream = await client.dialProtocol(to.getMultiaddrs(), FILES_PROTOCOL)
  const lp = lpStream(stream)
  await lp.write(bytes)
  const reply = decode((await lp.read()).subarray()) as Record<string, unknown>
  await stream.close()
  return reply
}

// A holder half-way through a file: chunks 0 and 1 (of 4, 16 KiB each) checked, chunk 2 on its way.
let slowReads = 0
const partial: FileCatalog = {
  have: (sha) => (sha === SHA ? { chunks: packBits([true, true, false, false]), pending: packBits([false, false, true, false]) } : undefined),
  covered: (sha, offset, length) => sha === SHA && offset + length <= 2 * 16 * 1024,
  async read(_sha, offset, length) {
    if (offset === 16 * 1024) {
      slowReads++
      await new Promise((r) => setTimeout(r, 300))
    }
    return data.slice(offset, offset + length)
  }
}

beforeAll(async () => {
  const dir = tempDir('files-attack')
  await buildModel(randomWeights(preset('tiny'), 3), dir, { source: 'random:tiny:3', shards: 2, name: 'tiny' })
  manifest = await readManifest(dir)
  ;[relay, holder, client] = await Promise.all([createPeer({}), createPeer({}), createPeer({})])
  await handleFiles(relay, relayCatalog([{ manifest }], indexFiles([{ dir, manifest }]), { perModel: 6 }))
  await handleFiles(holder, partial, { limits: { maxReads: 2 } })
  relayAddr = relay.getMultiaddrs()[0].toString()
})
afterAll(async () => {
  await Promise.all([relay, holder, client].map(async (n) => await n?.stop()))
})

describe('the files protocol, attacked', () => {
  it('answers malformed and oversized requests with MALFORMED, and serves the next request as before', async () => {
    for (const bad of [
      new Uint8Array([0xff, 0x00, 0x13]),
      encode({ t: 'delete', path: '/etc/passwd' }),
      encode({ t: 'read', sha256: SHA, offset: 0, length: MAX_READ_BYTES + 1 }),
      encode({ t: 'read', sha256: SHA, offset: -5, length: 10 }),
      encode({ t: 'read', sha256: '../../etc/passwd', offset: 0, length: 10 }),
      encode({ t: 'fetching', root: manifest.root, files: Array(5000).fill(SHA), addrs: [] }),
      encode({ t: 'manifest', model: 'x'.repeat(300) })
    ]) {
      expect(await raw(relay, bad)).toMatchObject({ ok: false, code: 'MALFORMED' })
    }
    const f = manifest.shards[0].files[0]
    const src = remoteSource(client, { peer: relay.peerId.toString(), addrs: [relayAddr] }, 'relay')
    expect((await src.read(f.sha256, 0, 100, AbortSignal.timeout(5000))).byteLength).toBe(100)
  })

  it('reads nothing past a file, nor a file it does not hold, nor chunks a holder has not checked', async () => {
    const f = manifest.shards[0].files[1]
    const fromRelay = remoteSource(client, { peer: relay.peerId.toString(), addrs: [relayAddr] }, 'relay')
    expect(await codeOf(fromRelay.read(f.sha256, f.bytes - 10, 20, AbortSignal.timeout(5000)))).toBe('NOT_FOUND')
    expect(await codeOf(fromRelay.read(SHA, 0, 10, AbortSignal.timeout(5000)))).toBe('NOT_FOUND')
    expect(await fromRelay.have(SHA, AbortSignal.timeout(5000))).toBeUndefined()

    const fromHolder = remoteSource(client, { peer: holder.peerId.toString(), addrs: holder.getMultiaddrs().map(String) }, 'peer')
    const h = await fromHolder.have(SHA, AbortSignal.timeout(5000))
    expect(h).toEqual({ chunks: packBits([true, true, false, false]), pending: packBits([false, false, true, false]) })
    expect(Buffer.from(await fromHolder.read(SHA, 0, 16 * 1024, AbortSignal.timeout(5000)))).toEqual(Buffer.from(data.subarray(0, 16 * 1024)))
    // Chunk 2 is only on its way: not served, even in part.
    expect(await codeOf(fromHolder.read(SHA, 2 * 16 * 1024, 16 * 1024, AbortSignal.timeout(5000)))).toBe('NOT_FOUND')
    expect(await codeOf(fromHolder.read(SHA, 16 * 1024, 16 * 1024 + 1, AbortSignal.timeout(5000)))).toBe('NOT_FOUND')
  })

  it('says BUSY past its cap on reads in flight, and serves again once they are done', async () => {
    const fromHolder = remoteSource(client, { peer: holder.peerId.toString(), addrs: holder.getMultiaddrs().map(String) }, 'peer')
    slowReads = 0
    const codes = await Promise.all(Array.from({ length: 5 }, async () => await codeOf(fromHolder.read(SHA, 16 * 1024, 1024, AbortSignal.timeout(5000)))))
    expect(codes.filter((c) => c === undefined).length).toBe(2)
    expect(codes.filter((c) => c === 'BUSY').length).toBe(3)
    expect(slowReads).toBe(2)
    expect(await codeOf(fromHolder.read(SHA, 16 * 1024, 1024, AbortSignal.timeout(5000)))).toBeUndefined()
  })

  it('lists at most its bound of downloading peers, each only in its own name, and not for models it does not host', async () => {
    const files = manifest.shards[0].files.map((f) => f.sha256)
    // Ten fresh identities announce themselves, each claiming also a file of no model here (spaced:
    // libp2p itself refuses more than 5 new connections a second from one host).
    const swarm = await Promise.all(Array.from({ length: 10 }, async () => await createPeer({})))
    try {
      for (const s of swarm) {
        await announceFetching(s, relayAddr, manifest.root, [...files, SHA], s.getMultiaddrs().map(String), AbortSignal.timeout(5000))
        await new Promise((r) => setTimeout(r, 250))
      }
      const listed = await listHolders(client, relayAddr, manifest.root, AbortSignal.timeout(5000))
      const ids = new Set(swarm.map((s) => s.peerId.toString()))
      // The list's bound (6 here), the freshest first, each under the id it dialled with; files of no model here dropped.
      expect(listed.map((h) => h.peer)).toEqual(
        swarm
          .slice(-6)
          .reverse()
          .map((s) => s.peerId.toString())
      )
      for (const h of listed) {
        expect(ids.has(h.peer)).toBe(true)
        expect(h.files).toEqual(files)
      }
      expect(await codeOf(announceFetching(client, relayAddr, 'ab'.repeat(32), files, [], AbortSignal.timeout(5000)))).toBe('NOT_FOUND')
    } finally {
      await Promise.all(swarm.map(async (s) => await s.stop()))
    }
  })

  it("a listed holder's addresses are dialled as its own: another peer's address answers nothing in its name", async () => {
    const other = await createPeer({})
    const fake = other.peerId.toString()
    await other.stop()
    const withId = holder.getMultiaddrs().map(String)
    const bare = withId.map((a) => a.replace(/\/p2p\/[^/]+$/, ''))
    for (const addrs of [withId, bare]) {
      const posing = remoteSource(client, { peer: fake, addrs }, 'peer')
      await expect(posing.read(SHA, 0, 1024, AbortSignal.timeout(5000))).rejects.toThrow()
    }
  })

  it('catches a relay that hands out another manifest than the root asked for, and names a model it lacks', async () => {
    const liar = await createPeer({})
    try {
      const other = { ...manifest }
      await handleFiles(liar, { have: () => undefined, covered: () => false, read: async () => new Uint8Array(), manifest: () => other })
      const addr = liar.getMultiaddrs()[0].toString()
      expect(await codeOf(fetchManifest(client, [addr], 'cd'.repeat(32)))).toBe('SHARD_HASH')
      // A manifest altered in any byte fails its own root.
      const altered = structuredClone(manifest)
      altered.shards[0].files[0].chunks!.sha256[0] = '00'.repeat(32)
      other.shards = altered.shards
      expect(await codeOf(fetchManifest(client, [addr], manifest.root))).toBe('MODEL_FORMAT')
      await expect(fetchManifest(client, [relayAddr], 'nope')).rejects.toThrow(/hosts no model named nope; it hosts tiny/)
      expect((await fetchManifest(client, [relayAddr], 'tiny')).root).toBe(manifest.root)
    } finally {
      await liar.stop()
    }
  })
})
