/**
 * The shard downloader (shared/files/download.ts) against in-memory sources and a real disk
 * store (host/file-store.ts): every chunk checked on arrival, a source that sends one bad chunk
 * dropped at that chunk, a stopped download resumed with what it had, a short disk refused before
 * any byte moves, peers asked before the relay, and two downloaders trading chunks.
 */
import { readFile, readdir, writeFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { digestBytes } from '../../shared/files/chunks.js'
import { downloadFiles, type FileSource } from '../../shared/files/download.js'
import { bitAt } from '../../shared/files/protocol.js'
import type { FileEntry } from '../../shared/manifest.js'
import { TesseraError } from '../../shared/errors.js'
import { mulberry32 } from '../../shared/rng.js'
import { diskStore, sha256Hex } from '../../host/file-store.js'
import { httpSource } from '../../shared/files/http.js'
import { createServer } from 'node:http'
import { tempDir } from '../helpers/paths.js'

/** Seeded bytes and their manifest entry, in chunks of `chunk` bytes. */
function file(name: string, bytes: number, seed: number, chunk = 16 * 1024): { entry: FileEntry; data: Uint8Array } {
  const rand = mulberry32(seed)
  const data = Uint8Array.from({ length: bytes }, () => Math.floor(rand() * 256))
  return { entry: { name, bytes, ...digestBytes(data, chunk) }, data }
}

interface Fake extends FileSource {
  reads: Array<{ sha256: string; offset: number }>
}

/** A source holding `files`; `corrupt` flips a byte of the chunk starting at that offset; `onRead` runs before each read. */
function source(
  id: string,
  kind: 'relay' | 'peer',
  files: Array<{ entry: FileEntry; data: Uint8Array }>,
  o: { corrupt?: number; onRead?: (n: number) => void } = {}
): Fake {
  const reads: Fake['reads'] = []
  return {
    id,
    kind,
    reads,
    have: async (sha256) => (files.some((f) => f.entry.sha256 === sha256) ? 'all' : undefined),
    async read(sha256, offset, length) {
      reads.push({ sha256, offset })
      o.onRead?.(reads.length)
      const f = files.find((x) => x.entry.sha256 === sha256)
      if (f === undefined) throw new TesseraError('NOT_FOUND', 'not here')
      const out = f.data.slice(offset, offset + length)
      if (offset === o.corrupt) out[0] ^= 0xff
      return out
    }
  }
}

const quick = { refreshMs: 10, haveMs: 10, stallMs: 3000 }

describe('downloading shard files', () => {
  const a = file('shard-0.onnx.data', 200_000, 1)
  const b = file('shard-0.onnx', 5_000, 2)

  it('fetches every chunk once, checks it, and puts each file in place under its name', async () => {
    const dir = tempDir('dl-plain')
    const relay = source('relay', 'relay', [a, b])
    const report = await downloadFiles({ files: [a.entry, b.entry], store: diskStore(dir), sources: async () => [relay], hash: sha256Hex, ...quick }).done
    expect(report.fetched).toBe(a.entry.bytes + b.entry.bytes)
    expect(report.bytes).toBe(report.fetched)
    expect(relay.reads.length).toBe(a.entry.chunks!.sha256.length + b.entry.chunks!.sha256.length)
    expect(await readFile(join(dir, a.entry.name))).toEqual(Buffer.from(a.data))
    expect(await readFile(join(dir, b.entry.name))).toEqual(Buffer.from(b.data))
    expect((await readdir(dir)).filter((f) => f.endsWith('.part'))).toEqual([])
  })

  it('a liar is dropped where its bad chunk arrives; it is asked nothing after; the relay fills in', async () => {
    const dir = tempDir('dl-liar')
    const bad = 3 * 16 * 1024
    const liar = source('liar', 'peer', [a], { corrupt: bad })
    const relay = source('relay', 'relay', [a])
    // The liar is the only source until it has been asked for the chunk it spoils.
    const sources = async (): Promise<FileSource[]> => (liar.reads.some((r) => r.offset === bad) ? [liar, relay] : [liar])
    const report = await downloadFiles({ files: [a.entry], store: diskStore(dir), sources, hash: sha256Hex, ...quick, perSource: 2 }).done
    const at = liar.reads.findIndex((r) => r.offset === bad)
    expect(at).toBeGreaterThanOrEqual(0)
    // Nothing was asked of it once that chunk came back (a read already in flight, at most perSource - 1, may follow).
    expect(liar.reads.length - 1 - at).toBeLessThanOrEqual(1)
    expect(report.dropped).toEqual([{ source: 'liar', reason: `chunk 3 of ${a.entry.name} failed its hash` }])
    expect(relay.reads.some((r) => r.offset === bad)).toBe(true)
    expect(report.fetched).toBe(a.entry.bytes)
    expect(sha256Hex(await readFile(join(dir, a.entry.name)))).toBe(a.entry.sha256)
  })

  it('resumes a stopped download with the chunks it had, fetching only the rest', async () => {
    const dir = tempDir('dl-resume')
    const stop = new AbortController()
    const first = source('relay', 'relay', [a], { onRead: (n) => n === 5 && stop.abort(new Error('killed')) })
    const err = await downloadFiles({
      files: [a.entry],
      store: diskStore(dir),
      sources: async () => [first],
      hash: sha256Hex,
      signal: stop.signal,
      ...quick
    }).done.catch((e: unknown) => e)
    expect((err as Error).message).toBe('killed')
    expect((await stat(join(dir, `${a.entry.name}.part`))).size).toBe(a.entry.bytes)
    const again = source('relay', 'relay', [a])
    const report = await downloadFiles({ files: [a.entry], store: diskStore(dir), sources: async () => [again], hash: sha256Hex, ...quick }).done
    // The first run's reads that landed are kept (in-flight ones land before it returns), and only the others are asked for.
    expect(report.present).toBeGreaterThanOrEqual(4 * 16 * 1024)
    expect(report.present + report.fetched).toBe(a.entry.bytes)
    const chunk = (offset: number): number => Math.min(16 * 1024, a.entry.bytes - offset)
    expect(new Set(again.reads.map((r) => r.offset)).size).toBe(again.reads.length)
    expect(again.reads.reduce((n, r) => n + chunk(r.offset), 0)).toBe(report.fetched)
    expect(sha256Hex(await readFile(join(dir, a.entry.name)))).toBe(a.entry.sha256)
  })

  it('a damaged partial copy loses only its damaged chunk; a damaged whole file is fetched again', async () => {
    const dir = tempDir('dl-damaged')
    const partial = Buffer.from(a.data)
    partial[7 * 16 * 1024 + 10] ^= 1
    await writeFile(join(dir, `${a.entry.name}.part`), partial)
    const wrongWhole = Buffer.from(b.data)
    wrongWhole[0] ^= 1
    await writeFile(join(dir, b.entry.name), wrongWhole)
    const relay = source('relay', 'relay', [a, b])
    const report = await downloadFiles({ files: [a.entry, b.entry], store: diskStore(dir), sources: async () => [relay], hash: sha256Hex, ...quick }).done
    expect(relay.reads.filter((r) => r.sha256 === a.entry.sha256).map((r) => r.offset)).toEqual([7 * 16 * 1024])
    expect(report.fetched).toBe(16 * 1024 + b.entry.bytes)
    expect(sha256Hex(await readFile(join(dir, a.entry.name)))).toBe(a.entry.sha256)
    expect(sha256Hex(await readFile(join(dir, b.entry.name)))).toBe(b.entry.sha256)
  })

  it('a complete .part left by a run stopped before its rename is checked and put in place', async () => {
    const dir = tempDir('dl-renamed')
    await writeFile(join(dir, `${a.entry.name}.part`), a.data)
    const relay = source('relay', 'relay', [a])
    const report = await downloadFiles({ files: [a.entry], store: diskStore(dir), sources: async () => [relay], hash: sha256Hex, ...quick }).done
    expect(report).toMatchObject({ fetched: 0, present: a.entry.bytes })
    expect(await readdir(dir)).toEqual([a.entry.name])
  })

  it('a whole file already here is checked and kept: nothing is fetched', async () => {
    const dir = tempDir('dl-cached')
    await writeFile(join(dir, a.entry.name), a.data)
    const relay = source('relay', 'relay', [a])
    const report = await downloadFiles({ files: [a.entry], store: diskStore(dir), sources: async () => [relay], hash: sha256Hex, ...quick }).done
    expect(report).toMatchObject({ fetched: 0, present: a.entry.bytes })
    expect(relay.reads).toEqual([])
  })

  it('refuses a disk that cannot hold the files before fetching anything', async () => {
    const dir = tempDir('dl-full')
    const relay = source('relay', 'relay', [a])
    const err = await downloadFiles({
      files: [a.entry],
      store: diskStore(dir, async () => 100_000),
      sources: async () => [relay],
      hash: sha256Hex,
      ...quick
    }).done.catch((e: unknown) => e)
    expect(err).toBeInstanceOf(TesseraError)
    expect((err as TesseraError).code).toBe('NO_SPACE')
    expect((err as Error).message).toMatch(/need 0\.2 MiB more .* only 0\.1 MiB is free/)
    expect(relay.reads).toEqual([])
    expect(await readdir(dir)).toEqual([])
  })

  it('asks the relay only for what no peer holds, and fails clearly when no source holds a chunk', async () => {
    const dir = tempDir('dl-peers')
    const peer = source('peer', 'peer', [a])
    const relay = source('relay', 'relay', [a])
    const report = await downloadFiles({ files: [a.entry], store: diskStore(dir), sources: async () => [relay, peer], hash: sha256Hex, ...quick }).done
    // The relay sends only what no peer holds: here, nothing.
    expect(report.bySource).toEqual({ peer: a.entry.bytes })
    expect(relay.reads).toEqual([])

    const none = await downloadFiles({
      files: [b.entry],
      store: diskStore(tempDir('dl-none')),
      sources: async () => [source('empty', 'relay', [])],
      hash: sha256Hex,
      ...quick,
      stallMs: 200
    }).done.catch((e: unknown) => e)
    expect((none as TesseraError).code).toBe('UNREACHABLE')
    expect((none as Error).message).toMatch(/chunk 0 of shard-0\.onnx is still missing/)
  })

  it('an HTTP mirror is read by range; one that ignores Range, or lacks the file, is refused or passed over', async () => {
    const dir = tempDir('dl-http')
    let ranged = true
    const server = createServer((req, res) => {
      if (!req.url?.endsWith(a.entry.sha256)) return res.writeHead(404).end()
      if (req.method === 'HEAD') return res.writeHead(200).end()
      const m = /bytes=(\d+)-(\d+)/.exec(req.headers.range ?? '')
      if (!ranged || m === null) return res.writeHead(200).end(Buffer.from(a.data))
      res.writeHead(206).end(Buffer.from(a.data.subarray(Number(m[1]), Number(m[2]) + 1)))
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    try {
      const base = `http://127.0.0.1:${(server.address() as { port: number }).port}/`
      const report = await downloadFiles({ files: [a.entry], store: diskStore(dir), sources: async () => [httpSource(base)], hash: sha256Hex, ...quick }).done
      expect(report.bySource).toEqual({ [base.replace(/\/$/, '')]: a.entry.bytes })
      expect(await httpSource(base).have(b.entry.sha256, AbortSignal.timeout(5000))).toBeUndefined()
      ranged = false
      const err = await httpSource(base)
        .read(a.entry.sha256, 0, 100, AbortSignal.timeout(5000))
        .catch((e: unknown) => e)
      expect((err as TesseraError).code).toBe('BAD_REPLY')
    } finally {
      server.close()
    }
  })

  it('two downloaders trade the chunks each has checked, so the relay sends far fewer than every chunk twice', async () => {
    const relay = source('relay', 'relay', [a])
    const stores = [diskStore(tempDir('dl-trade-a')), diskStore(tempDir('dl-trade-b'))]
    const downloads: Array<ReturnType<typeof downloadFiles>> = []
    // Each is a source to the other: it serves exactly the chunks its download has checked.
    const peerOf = (i: number, id: string): FileSource => ({
      id,
      kind: 'peer',
      have: async () => downloads[i]?.have(a.entry.sha256),
      async read(_sha, offset, length) {
        const h = downloads[i].have(a.entry.sha256)
        const chunk = Math.floor(offset / (16 * 1024))
        if (h === undefined || (h !== 'all' && !bitAt(h.chunks, chunk))) throw new TesseraError('NOT_FOUND', 'not yet')
        return await stores[i].read(a.entry, offset, length)
      }
    })
    const pace = source('slow-relay', 'relay', [a])
    // A relay slower than the peers (as a shared upload is): 20 ms a chunk.
    const slow: FileSource = {
      ...pace,
      read: async (...args) => {
        await new Promise((r) => setTimeout(r, 20))
        return await relay.read(...args)
      }
    }
    for (const [i, id] of ['a', 'b'].entries()) {
      downloads.push(
        downloadFiles({
          files: [a.entry],
          store: stores[i],
          sources: async () => [slow, peerOf(1 - i, id === 'a' ? 'b' : 'a')],
          hash: sha256Hex,
          seed: id,
          ...quick
        })
      )
    }
    const [ra, rb] = await Promise.all(downloads.map(async (d) => await d.done))
    const fromRelay = (ra.bySource['slow-relay'] ?? 0) + (rb.bySource['slow-relay'] ?? 0)
    const fromPeers = (ra.bySource.b ?? 0) + (rb.bySource.a ?? 0)
    expect(ra.fetched + rb.fetched).toBe(2 * a.entry.bytes)
    expect(fromPeers).toBeGreaterThan(0)
    // Without trading the relay would send every byte twice (here ~1.2×: both ask at the same instants, each a poll behind the other).
    expect(fromRelay).toBeLessThan(1.4 * a.entry.bytes)
    for (const s of stores) expect(sha256Hex(await s.read(a.entry, 0, a.entry.bytes))).toBe(a.entry.sha256)
  })
})
