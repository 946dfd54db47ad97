/**
 * Downloading a node's shard files from every source that holds them at once: the relay, the
 * peers serving those shards, and other peers still downloading them (which serve the chunks they
 * have checked). Each chunk is checked against the manifest on arrival, so a source that sends one
 * bad chunk is dropped then and there and the chunk is fetched again elsewhere. Chunks are written
 * where they belong as they come (ChunkStore), so a download that stops resumes with what it had.
 *
 * Peers are asked before the relay, and the relay only for what no peer holds: a relay is
 * everyone's last resort, and the bytes peers give each other are bytes it does not have to send. Each downloader starts at its own seeded chunk
 * and goes on in order, so two joining at once fetch different stretches and trade them.
 */
import type { FileEntry } from '../manifest.js'
import { TesseraError } from '../errors.js'
import { hash32, mulberry32 } from '../rng.js'
import { logger, type Logger } from '../log.js'
import { bitAt, packBits, type Holding } from './protocol.js'
import { chunkRange, type FileChunks } from './chunks.js'

/** Someone to ask for bytes of files: a relay or a peer. Nothing it sends is trusted. */
export interface FileSource {
  /** The peer id (for reports, and to drop it). */
  readonly id: string
  readonly kind: 'relay' | 'peer'
  /** What it holds of a file (shared/files/protocol.ts Holding), or undefined: nothing. */
  have(sha256: string, signal: AbortSignal): Promise<Holding | undefined>
  read(sha256: string, offset: number, length: number, signal: AbortSignal): Promise<Uint8Array>
}

/** Where downloaded chunks go (host/file-store.ts on disk). */
export interface ChunkStore {
  /** Prepares a file; a copy left by an earlier run is checked chunk by chunk. Returns the chunks already here. */
  open(file: FileEntry, chunks: FileChunks): Promise<boolean[]>
  write(file: FileEntry, offset: number, bytes: Uint8Array): Promise<void>
  /** Every chunk is in: checks the whole file's sha256 and puts it in place (ShardHashError if it differs). */
  finish(file: FileEntry): Promise<void>
  /** Bytes free where the files go. */
  free(): Promise<number>
}

export interface DownloadProgress {
  /** Bytes of the files present, counting what was already here. */
  done: number
  total: number
  /** Over the last few seconds. */
  bytesPerSecond: number
  /** Seconds left at that rate; undefined until there is a rate. */
  etaS?: number
  /** Sources that sent bytes so far. */
  sources: number
}

export interface DownloadReport {
  files: number
  /** Bytes of all the files. */
  bytes: number
  /** Bytes received (and kept) in this run. */
  fetched: number
  /** Bytes found already here: whole files, and checked chunks of partial ones. */
  present: number
  /** Bytes kept from each source, by peer id. */
  bySource: Record<string, number>
  /** Sources dropped, and why (a bad chunk, repeated failures). */
  dropped: Array<{ source: string; reason: string }>
  ms: number
}

export interface DownloadOptions {
  files: FileEntry[]
  store: ChunkStore
  /** The sources to use; asked again every `refreshMs` (peers come and go). */
  sources: () => Promise<FileSource[]>
  /** sha256 (hex) of a chunk: the host's native one. */
  hash: (bytes: Uint8Array) => string
  /** Chunk requests in flight at once, over all sources (default 8). */
  parallel?: number
  /** Chunk requests in flight to one source (default 4: a stream's round trip, not the bytes, bounds fewer on loopback). */
  perSource?: number
  refreshMs?: number
  /** How often peers are asked which chunks they have (default 500 ms). */
  haveMs?: number
  /** Fail when nothing arrives for this long (default 60 s). */
  stallMs?: number
  /** A source that has not answered one request in this long has failed it (default 60 s). */
  requestTimeoutMs?: number
  /** Cap on the download rate, bytes/s (an operator sharing a link). */
  maxBytesPerSecond?: number
  /** Kept free beyond the files themselves (default 64 MiB). */
  reserveBytes?: number
  /** Orders the chunks (each downloader its own: a peer id). */
  seed?: string
  signal?: AbortSignal
  progress?: (p: DownloadProgress) => void
  log?: Logger
}

export interface Download {
  readonly done: Promise<DownloadReport>
  /** What this download holds of a file, checked (and what it is fetching): for serving it to others meanwhile. */
  have(sha256: string): Holding | undefined
}

/** Failures before a source is dropped for the rest of the download. */
const STRIKES = 3

/** A file's chunk list; a file from a manifest without one is a single chunk checked by its sha256. */
export const chunksOf = (f: FileEntry): FileChunks => f.chunks ?? { bytes: Math.max(1, f.bytes), sha256: [f.sha256] }

interface FileState {
  file: FileEntry
  chunks: FileChunks
  have: boolean[]
  /** Chunks being fetched now. */
  pending: boolean[]
  missing: number
  finished: boolean
}

interface SourceState {
  src: FileSource
  haves: Map<string, Holding | undefined>
  inflight: number
  strikes: number
  dropped: boolean
  polled: number
}

interface Task {
  f: FileState
  i: number
  busy: boolean
}

export function downloadFiles(o: DownloadOptions): Download {
  const files = new Map<string, FileState>()
  const download = run(o, files)
  return {
    done: download,
    have(sha256) {
      const s = files.get(sha256)
      if (s === undefined) return undefined
      return s.finished ? 'all' : { chunks: packBits(s.have), pending: packBits(s.pending) }
    }
  }
}

async function run(o: DownloadOptions, files: Map<string, FileState>): Promise<DownloadReport> {
  const log = o.log ?? logger('tessera:download')
  const started = Date.now()
  const signal = new Stop(o.signal)
  const report: DownloadReport = { files: o.files.length, bytes: 0, fetched: 0, present: 0, bySource: {}, dropped: [], ms: 0 }
  const unique = [...new Map(o.files.map((f) => [f.sha256, f])).values()]

  for (const file of unique) {
    const chunks = chunksOf(file)
    const have = await o.store.open(file, chunks)
    const state: FileState = { file, chunks, have, pending: have.map(() => false), missing: have.filter((h) => !h).length, finished: false }
    files.set(file.sha256, state)
    report.bytes += file.bytes
    have.forEach((h, i) => {
      if (h) report.present += size(state, i)
    })
  }
  // The whole shortfall is checked before the first byte moves: a disk that fills half-way helps nobody.
  const need = report.bytes - report.present
  const free = await o.store.free()
  const reserve = o.reserveBytes ?? 64 * 2 ** 20
  if (need > 0 && free < need + reserve) {
    throw new TesseraError(
      'NO_SPACE',
      `the shard files need ${mib(need)} more (plus ${mib(reserve)} to spare) but only ${mib(free)} is free; free some space or choose another cache directory (--cache DIR)`
    )
  }

  // Chunks in order from a seeded starting point: downloaders joining together start apart and
  // work through different stretches, so each finds what the other has fetched when it gets there.
  const rand = mulberry32(hash32(o.seed ?? 'tessera'))
  const all: Task[] = []
  for (const f of files.values()) for (const [i, h] of f.have.entries()) if (!h) all.push({ f, i, busy: false })
  const from = Math.floor(rand() * all.length)
  const tasks = [...all.slice(from), ...all.slice(0, from)]

  const finishing = new Map<string, Promise<void>>()
  const finish = (f: FileState): Promise<void> => {
    let p = finishing.get(f.file.sha256)
    if (p === undefined) {
      p = o.store.finish(f.file).then(() => {
        f.finished = true
      })
      finishing.set(f.file.sha256, p)
    }
    return p
  }
  // Files already whole (or whose partial copy turned out complete) are put in place now.
  for (const f of files.values()) if (f.missing === 0) await finish(f)
  if (tasks.length === 0) return { ...report, ms: Date.now() - started }

  const sources = new Map<string, SourceState>()
  let wake: () => void = () => {}
  let woken = new Promise<void>((r) => {
    wake = r
  })
  const poke = (): void => {
    const w = wake
    woken = new Promise<void>((r) => {
      wake = r
    })
    w()
  }
  const wanted = (): FileState[] => [...files.values()].filter((f) => f.missing > 0)

  // Who has what: sources listed afresh every refreshMs, peers' bitmaps every haveMs.
  const refreshMs = o.refreshMs ?? 1000
  const haveMs = o.haveMs ?? 500
  let listedAt = 0
  let changed = false
  const poll = async (s: SourceState): Promise<void> => {
    if (s.dropped || Date.now() - s.polled < (s.src.kind === 'relay' ? refreshMs * 10 : haveMs)) return
    s.polled = Date.now()
    for (const f of wanted()) {
      if (s.haves.get(f.file.sha256) === 'all') continue
      try {
        s.haves.set(f.file.sha256, await signal.bounded(o.requestTimeoutMs ?? 60_000, async (sig) => await s.src.have(f.file.sha256, sig)))
        changed = true
      } catch (err) {
        strike(s, `asking which chunks it has failed: ${(err as Error).message}`)
        return
      }
    }
  }
  let refreshing = false
  const refresh = async (): Promise<void> => {
    if (refreshing) return
    refreshing = true
    try {
      if (Date.now() - listedAt >= refreshMs) {
        listedAt = Date.now()
        const listed = await o.sources().catch((err: Error) => {
          log.debug(`listing sources failed: ${err.message}`)
          return [] as FileSource[]
        })
        for (const src of listed) {
          if (!sources.has(src.id)) sources.set(src.id, { src, haves: new Map(), inflight: 0, strikes: 0, dropped: false, polled: 0 })
        }
      }
      await Promise.all([...sources.values()].map(poll))
    } finally {
      refreshing = false
      // Only news wakes the scheduler: a refresh that learnt nothing must not spin it.
      if (changed) poke()
      changed = false
    }
  }
  const strike = (s: SourceState, why: string): void => {
    s.strikes++
    if (s.strikes >= STRIKES) drop(s, why)
  }
  const drop = (s: SourceState, why: string): void => {
    if (s.dropped) return
    s.dropped = true
    report.dropped.push({ source: s.src.id, reason: why })
    log.warn(`dropped ${s.src.kind} ${s.src.id.slice(-8)} as a source: ${why}`)
  }
  const holds = (s: SourceState, t: Task): boolean => {
    const h = s.haves.get(t.f.file.sha256)
    return h === 'all' || (h !== undefined && bitAt(h.chunks, t.i))
  }
  // A peer fetching a chunk will have it soon: the relay is asked for others first.
  const coming = (t: Task): boolean =>
    [...sources.values()].some((s) => {
      const h = s.haves.get(t.f.file.sha256)
      return !s.dropped && h !== undefined && h !== 'all' && h.pending !== undefined && bitAt(h.pending, t.i)
    })
  const atPeer = (t: Task): boolean => [...sources.values()].some((s) => !s.dropped && s.src.kind === 'peer' && holds(s, t))
  const perSource = o.perSource ?? 4
  /**
   * The next chunk some free source holds. Peers first; the relay only for chunks no peer holds
   * (a busy peer is waited for), those no peer is fetching first: the relay sends what only it has.
   */
  const pick = (): { t: Task; s: SourceState } | undefined => {
    for (const pass of ['peer', 'relay', 'relay-any'] as const) {
      const kind = pass === 'peer' ? 'peer' : 'relay'
      for (const t of tasks) {
        if (t.busy || t.f.have[t.i]) continue
        if (kind === 'relay' && atPeer(t)) continue
        if (pass === 'relay' && coming(t)) continue
        let best: SourceState | undefined
        for (const s of sources.values()) {
          if (s.dropped || s.src.kind !== kind || s.inflight >= perSource || !holds(s, t)) continue
          if (best === undefined || s.inflight < best.inflight) best = s
        }
        if (best !== undefined) return { t, s: best }
      }
    }
    return undefined
  }

  const rate = pacer(o.maxBytesPerSecond)
  const window: Array<[number, number]> = [] // (time, bytes) of recent chunks, for the rate shown
  let lastProgress = Date.now()
  const stallMs = o.stallMs ?? 60_000
  let remaining = tasks.length
  let failed: unknown

  const fetchOne = async (t: Task, s: SourceState): Promise<void> => {
    t.f.pending[t.i] = true
    const [start, end] = chunkRange(t.f.file.bytes, t.f.chunks.bytes, t.i)
    const name = t.f.file.name
    try {
      await rate(end - start, signal)
      const bytes = await signal.bounded(o.requestTimeoutMs ?? 60_000, async (sig) => await s.src.read(t.f.file.sha256, start, end - start, sig))
      if (bytes.byteLength !== end - start || o.hash(bytes) !== t.f.chunks.sha256[t.i]) {
        drop(s, `chunk ${t.i} of ${name} failed its hash`)
        return
      }
      if (t.f.have[t.i]) return
      await o.store.write(t.f.file, start, bytes)
      t.f.have[t.i] = true
      t.f.missing--
      remaining--
      report.fetched += bytes.byteLength
      report.bySource[s.src.id] = (report.bySource[s.src.id] ?? 0) + bytes.byteLength
      lastProgress = Date.now()
      window.push([lastProgress, bytes.byteLength])
      while (window.length > 0 && window[0][0] < lastProgress - 5000) window.shift()
      if (t.f.missing === 0) await finish(t.f)
      emit()
    } catch (err) {
      if (signal.aborted) return
      if (err instanceof TesseraError && err.code === 'SHARD_HASH') {
        failed = err
        return
      }
      // A holder that no longer has a chunk it listed says NOT_FOUND: ask it again later.
      if (err instanceof TesseraError && err.code === 'NOT_FOUND') s.haves.delete(t.f.file.sha256)
      else strike(s, `reading ${name} failed: ${(err as Error).message}`)
    } finally {
      s.inflight--
      t.busy = false
      t.f.pending[t.i] = false
      poke()
    }
  }
  const emit = (): void => {
    if (o.progress === undefined) return
    const span = window.length > 1 ? (window[window.length - 1][0] - window[0][0]) / 1000 : 0
    const bytesPerSecond = span > 0 ? window.slice(1).reduce((a, [, b]) => a + b, 0) / span : 0
    const done = report.present + report.fetched
    o.progress({
      done,
      total: report.bytes,
      bytesPerSecond,
      ...(bytesPerSecond > 0 ? { etaS: (report.bytes - done) / bytesPerSecond } : {}),
      sources: Object.keys(report.bySource).length
    })
  }

  emit()
  await refresh()
  const parallel = o.parallel ?? 8
  let inflight = 0
  const running = new Set<Promise<void>>()
  while (remaining > 0 && failed === undefined && !signal.aborted) {
    let next = inflight < parallel ? pick() : undefined
    while (next !== undefined) {
      const { t, s } = next
      t.busy = true
      s.inflight++
      inflight++
      const p = fetchOne(t, s).finally(() => {
        inflight--
        running.delete(p)
      })
      running.add(p)
      next = inflight < parallel ? pick() : undefined
    }
    if (Date.now() - lastProgress > stallMs && inflight === 0) {
      const t = tasks.find((x) => !x.f.have[x.i])
      const live = [...sources.values()].filter((s) => !s.dropped).length
      throw new TesseraError(
        'UNREACHABLE',
        `no chunk arrived for ${Math.round(stallMs / 1000)} s${t === undefined ? '' : `; chunk ${t.i} of ${t.f.file.name} is still missing`} (${live} live sources, ${report.dropped.length} dropped${report.dropped.length > 0 ? `: ${report.dropped.map((d) => d.reason).join('; ')}` : ''}); check that the relay still hosts the model`
      )
    }
    void refresh()
    await Promise.race([woken, signal.sleep(Math.min(haveMs, refreshMs))])
  }
  // In-flight chunks land (or fail) before this returns, so nothing writes after it.
  await Promise.all(running)
  if (signal.aborted) throw signal.reason ?? new Error('the download was stopped')
  if (failed !== undefined) throw failed
  await Promise.all([...files.values()].map(async (f) => await finish(f)))
  return { ...report, ms: Date.now() - started }
}

const size = (f: FileState, i: number): number => {
  const [a, b] = chunkRange(f.file.bytes, f.chunks.bytes, i)
  return b - a
}

const mib = (n: number): string => `${(n / 2 ** 20).toFixed(1)} MiB`

/** Spaces requests so the bytes asked for average at most `rate` per second. */
function pacer(rate: number | undefined): (bytes: number, stop: Stop) => Promise<void> {
  let next = 0
  return async (bytes, stop) => {
    if (rate === undefined || rate <= 0) return
    const start = Math.max(next, Date.now())
    next = start + (bytes / rate) * 1000
    await stop.sleep(start - Date.now())
  }
}

/**
 * The caller's signal, fanned out: one listener on it however many requests and waits are in
 * flight (each adding its own would pile up listeners on a long download).
 */
class Stop {
  private readonly waiting = new Set<(reason: unknown) => void>()
  private readonly signal: AbortSignal | undefined

  constructor(signal: AbortSignal | undefined) {
    this.signal = signal
    signal?.addEventListener('abort', () => {
      for (const f of this.waiting) f(signal.reason)
    })
  }

  get aborted(): boolean {
    return this.signal?.aborted === true
  }

  get reason(): unknown {
    return this.signal?.reason
  }

  /** Runs `f` with a signal that aborts when the download stops or after `ms`, whichever is first. */
  async bounded<T>(ms: number, f: (s: AbortSignal) => Promise<T>): Promise<T> {
    const c = new AbortController()
    const t = setTimeout(() => c.abort(new TesseraError('TIMEOUT', `no answer in ${ms} ms`)), ms)
    const stop = (reason: unknown): void => c.abort(reason)
    if (this.aborted) stop(this.reason)
    this.waiting.add(stop)
    try {
      return await f(c.signal)
    } finally {
      clearTimeout(t)
      this.waiting.delete(stop)
    }
  }

  /** Waits `ms`, or less if the download stops. */
  async sleep(ms: number): Promise<void> {
    if (ms <= 0 || this.aborted) return
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(t)
        this.waiting.delete(done)
        resolve()
      }
      const t = setTimeout(done, ms)
      this.waiting.add(done)
    })
  }
}
