/**
 * `npm run bench -- weights`: nodes joining by name (native-node/weights.ts) on loopback, in one
 * process: a node downloading a whole `small` model from the relay alone, against the same files
 * over the relay's HTTP (/shards, one GET each) in the same run; the same node restarted on its
 * cache; then two nodes joining at once beside it (a seed): how long each took and how many of
 * their bytes the relay sent.
 */
import { access, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { buildModel, readManifest } from '../../host/model-store.js'
import { startRelay } from '../../relay/relay.js'
import { startNode, type RunningNode } from '../../native-node/node.js'
import { preset } from '../../shared/model/config.js'
import { randomWeights } from '../../shared/model/random.js'
import { MANIFEST_FILE } from '../../shared/manifest.js'
import { tempDir } from '../helpers/paths.js'

export interface WeightsRow {
  case: string
  nodes: number
  /** Bytes each node needed. */
  bytes: number
  /** Slowest node's download (or check) time. */
  seconds: number
  /** Bytes per second per node. */
  rate: number
  /** Share of all the bytes fetched that the relay sent. */
  fromRelay: number
}

/** One node's row: `bytes` in `ms`. */
const single = (name: string, bytes: number, ms: number, fromRelay: number): WeightsRow => ({
  case: name,
  nodes: 1,
  bytes,
  seconds: ms / 1000,
  rate: bytes / (ms / 1000),
  fromRelay
})

/** `small` with chunk hashes (a bench model built before chunk lists has none, so this one has its own directory). */
async function chunkedModel(cacheDir: string, shards: number): Promise<string> {
  const dir = join(cacheDir, `weights-small-fp32-${shards}`)
  const built = await access(join(dir, MANIFEST_FILE)).then(
    () => true,
    () => false
  )
  if (built && JSON.parse(await readFile(join(dir, MANIFEST_FILE), 'utf8')).shards[0].files[0].chunks !== undefined) return dir
  console.error(`building small (fp32, ${shards} shards, with chunk hashes) into ${dir} …`)
  await buildModel(randomWeights(preset('small'), 1), dir, { source: 'random:small:1', shards, name: 'small-bench' })
  return dir
}

export async function benchWeights(cacheDir: string): Promise<Record<string, unknown>> {
  const dir = await chunkedModel(cacheDir, 4)
  const manifest = await readManifest(dir)
  const files = manifest.shards.flatMap((s) => s.files)
  const total = files.reduce((n, f) => n + f.bytes, 0)
  const relay = await startRelay({ httpPort: 0, p2pPort: 0, models: [dir], ledger: join(tempDir('bench-weights-ledger'), 'l.sqlite') })
  const all: [number, number] = [0, manifest.config.nLayers]
  const nodes: RunningNode[] = []
  const caches: string[] = []
  const cacheDir_ = (name: string): string => {
    const d = tempDir(name)
    caches.push(d)
    return d
  }
  const join_ = async (cache: string): Promise<RunningNode> => {
    const n = await startNode({ relay: relay.nodeAddr, model: manifest.name, layers: all, download: { cache }, rebalanceMs: 3_600_000 })
    nodes.push(n)
    return n
  }
  const rows: WeightsRow[] = []
  try {
    // The same bytes as plain HTTP GETs from the relay, one file after another.
    const t = performance.now()
    for (const f of files) await (await fetch(`${relay.httpUrl}/shards/${f.sha256}`)).arrayBuffer()
    const httpS = (performance.now() - t) / 1000
    rows.push(single('HTTP GET /shards from the relay (baseline)', total, httpS * 1000, 1))

    const seedCache = cacheDir_('bench-weights-seed')
    let served = relay.filesServed()
    const seed = await join_(seedCache)
    const solo = seed.weights.downloads[0]
    rows.push(single('one node, from the relay alone', solo.fetched, solo.ms, (relay.filesServed() - served) / solo.fetched))

    await seed.stop()
    nodes.pop()
    const again = await join_(seedCache)
    const check = again.weights.downloads[0]
    rows.push(single('the same node restarted on its cache (files hashed)', check.present, check.ms, 0))

    served = relay.filesServed()
    const pair = await Promise.all([join_(cacheDir_('bench-weights-b')), join_(cacheDir_('bench-weights-c'))])
    const reports = pair.map((n) => n.weights.downloads[0])
    const fetched = reports.reduce((n, r) => n + r.fetched, 0)
    const slowest = Math.max(...reports.map((r) => r.ms)) / 1000
    rows.push({
      case: 'two nodes joining at once beside that one',
      nodes: 2,
      bytes: reports[0].fetched,
      seconds: slowest,
      rate: reports[0].fetched / slowest,
      fromRelay: (relay.filesServed() - served) / fetched
    })
    const traded = (reports[0].bySource[pair[1].peerId] ?? 0) + (reports[1].bySource[pair[0].peerId] ?? 0)
    for (const r of rows) {
      console.log(
        `${r.case}: ${(r.bytes / 2 ** 20).toFixed(1)} MiB a node in ${r.seconds.toFixed(2)} s (${(r.rate / 2 ** 20).toFixed(0)} MiB/s), ${(r.fromRelay * 100).toFixed(0)}% from the relay`
      )
    }
    const tabs = Math.round((rows[1].rate / rows[0].rate) * 100) / 100
    console.log(`chunked download over libp2p ÷ HTTP GETs in the same run: × ${tabs}; the pair traded ${(traded / 2 ** 20).toFixed(1)} MiB`)
    return {
      preset: 'small',
      dtype: 'fp32',
      shards: manifest.shards.length,
      files: files.length,
      bytes: total,
      chunkBytes: files.map((f) => f.chunks?.bytes ?? f.bytes),
      rows,
      traded,
      libp2pOverHttp: tabs
    }
  } finally {
    for (const n of nodes) await n.stop().catch(() => {})
    await relay.stop()
    for (const d of caches) await rm(d, { recursive: true, force: true })
  }
}
