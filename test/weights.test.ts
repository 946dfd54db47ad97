/**
 * Weights to the node, as real processes on loopback: `tessera node --model NAME` with an empty
 * cache downloads exactly the shard files of the layers it takes (from the relay and from peers,
 * over /tessera/files/1.0.0), joins, and serves the reference ids; a restart downloads nothing; a
 * download killed half-way resumes; a peer serving a corrupted chunk is dropped at that chunk;
 * nodes joining beside peers that hold the files take less than half of their bytes from the relay.
 */
import { spawn } from 'node:child_process'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildModel } from '../host/model-store.js'
import type { Manifest } from '../shared/manifest.js'
import { reference, stories } from './helpers/reference.js'
import { REPO, tempDir } from './helpers/paths.js'
import { api, spawnRelay, spawnTessera, waitFor, type Proc } from './helpers/network.js'
import { tessera } from './helpers/cli.js'

const c = reference()[0]
let model: string
let manifest: Manifest
let relay: Proc
const procs: Proc[] = []

/** Bytes of the shard files of [a, b). */
const bytesOf = ([a, b]: [number, number]): number =>
  manifest.shards.filter((s) => s.layers[0] >= a && s.layers[1] <= b).reduce((n, s) => n + s.files.reduce((m, f) => m + f.bytes, 0), 0)
const filesOf = ([a, b]: [number, number]): string[] =>
  manifest.shards
    .filter((s) => s.layers[0] >= a && s.layers[1] <= b)
    .flatMap((s) => s.files.map((f) => f.name))
    .sort()

async function join_(args: string[]): Promise<Proc> {
  const p = await spawnTessera(['node', '--relay', relay.ready.relay, ...args])
  procs.push(p)
  await waitFor(async () => (await api(relay.ready.http, '/api/network')).peers.some((x: { peer: string }) => x.peer === p.ready.peer))
  return p
}

/** Still running (a child killed by a signal has no exit code, only a signal code). */
const running = (p: Proc): boolean => p.proc.exitCode === null && p.proc.signalCode === null

const stop = async (p: Proc): Promise<void> => {
  if (!running(p)) return
  const gone = new Promise((r) => p.proc.once('exit', r))
  p.proc.kill('SIGKILL')
  await gone
  await waitFor(async () => !(await api(relay.ready.http, '/api/network')).peers.some((x: { peer: string }) => x.peer === p.ready.peer))
}

async function relayFileBytes(): Promise<number> {
  const text = await (await fetch(`${relay.ready.http}/metrics`)).text()
  const m = /^tessera_file_bytes_served_total\{via="libp2p"\} (\d+)/m.exec(text)
  return m === null ? 0 : Number(m[1])
}

async function generated(): Promise<number[]> {
  const r = await api(relay.ready.http, '/v1/completions', { prompt: c.prompt, max_tokens: c.decisive_prefix, temperature: 0 })
  return r.tessera.tokens
}

beforeAll(async () => {
  model = tempDir('weights-model')
  manifest = await buildModel(await stories(), model, { source: 'stories260K.bin', cuts: [2, 4], name: 'stories' })
  relay = await spawnRelay(model)
})
afterAll(async () => {
  for (const p of [...procs, relay]) if (p !== undefined && running(p)) p.proc.kill('SIGKILL')
})

describe('a node joining by name', () => {
  const caches = { a: tempDir('cache-a'), b: tempDir('cache-b') }

  it('downloads exactly the shards of the layers it takes, joins, and serves the reference ids; a restart downloads nothing', async () => {
    const a = await join_(['--model', 'stories', '--cache', caches.a, '--max-layers', '2'])
    expect(a.ready.layers).toEqual([0, 2])
    expect(a.ready.downloaded.fetched).toBe(bytesOf([0, 2]))
    expect(a.ready.downloaded.present).toBe(0)
    // By root as well as by name; the second node takes what the network lacks.
    const b = await join_(['--model', manifest.root, '--cache', caches.b, '--max-layers', '3'])
    expect(b.ready.layers).toEqual([2, 5])
    expect(b.ready.downloaded.fetched).toBe(bytesOf([2, 5]))
    for (const [p, dir] of [
      [a, caches.a],
      [b, caches.b]
    ] as const) {
      const held = (await readdir(join(dir, 'models', manifest.root))).filter((f) => f !== 'manifest.json').sort()
      expect(held).toEqual(filesOf(p.ready.layers))
      expect(p.ready.cache).toBe(join(dir, 'models', manifest.root))
    }
    expect(JSON.parse(await readFile(join(caches.a, 'models', manifest.root, 'manifest.json'), 'utf8')).root).toBe(manifest.root)
    expect(await generated()).toEqual(c.greedy.slice(0, c.decisive_prefix))

    await stop(a)
    const again = await join_(['--model', 'stories', '--cache', caches.a, '--max-layers', '2'])
    expect(again.ready.layers).toEqual([0, 2])
    expect(again.ready.downloaded).toMatchObject({ fetched: 0, present: bytesOf([0, 2]), bySource: {} })
    expect(await generated()).toEqual(c.greedy.slice(0, c.decisive_prefix))

    // The cache, as doctor reports it.
    const doctor = await tessera(['doctor', '--cache', caches.a, '--json'])
    const cache = JSON.parse(doctor.stdout).checks.find((x: { name: string }) => x.name === 'cache')
    expect(cache.status).toBe('ok')
    expect(cache.value).toContain(`stories: 1 of 3 shards`)
  })

  it("takes chunks from an HTTP mirror too (--mirror: the relay's own HTTP here), alongside the relay over libp2p", async () => {
    const metric = async (): Promise<number> =>
      Number(/^tessera_file_bytes_served_total\{via="http"\} (\d+)/m.exec(await (await fetch(`${relay.ready.http}/metrics`)).text())?.[1] ?? 0)
    // No peer may hold [0,2)'s files, or the relay's kind of source (the relay, a mirror) would be asked for nothing.
    for (const p of procs.filter((x) => running(x) && x.ready.layers[0] === 0)) await stop(p)
    const before = await metric()
    const m = await join_(['--model', 'stories', '--cache', tempDir('cache-mirror'), '--layers', '0-2', '--mirror', relay.ready.http])
    const fromHttp = m.ready.downloaded.bySource[relay.ready.http] ?? 0
    expect(m.ready.downloaded.fetched).toBe(bytesOf([0, 2]))
    expect(fromHttp).toBeGreaterThan(0)
    expect((await metric()) - before).toBe(fromHttp)
    await stop(m)
  })

  it('says clearly when the relay has no such model, or a directory holds none', async () => {
    const unknown = await tessera(['node', '--relay', relay.ready.relay, '--model', 'nope', '--cache', tempDir('cache-nope')])
    expect(unknown.code).not.toBe(0)
    expect(unknown.stderr).toMatch(/this relay hosts no model named nope; it hosts stories \(/)
    const empty = await tessera(['node', '--relay', relay.ready.relay, '--model', tempDir('no-model')])
    expect(empty.stderr).toMatch(/build a model there first/)
    expect(`${unknown.stderr}${empty.stderr}`).not.toMatch(/^\s+at /m)
  })

  it('resumes a download killed half-way, fetching only what it lacked', async () => {
    const cache = tempDir('cache-resume')
    const dir = join(cache, 'models', manifest.root)
    const total = bytesOf([0, 5])
    // ~200 KiB/s over 1.2 MiB: killed (-9) a second and a half into the download, some chunks are in.
    const slow = spawn(
      process.execPath,
      [
        join(REPO, 'bin', 'tessera.js'),
        'node',
        '--relay',
        relay.ready.relay,
        '--model',
        'stories',
        '--cache',
        cache,
        '--layers',
        '0-5',
        '--max-download-rate',
        '200KB'
      ],
      {
        stdio: 'ignore'
      }
    )
    await waitFor(async () => (await readdir(dir)).some((f) => f.endsWith('.part')))
    await new Promise((r) => setTimeout(r, 1500))
    expect((await readdir(dir)).filter((f) => f.endsWith('.part')).length).toBeGreaterThan(0)
    const gone = new Promise((r) => slow.once('exit', r))
    slow.kill('SIGKILL')
    await gone

    const resumed = await join_(['--model', 'stories', '--cache', cache, '--layers', '0-5'])
    const d = resumed.ready.downloaded
    expect(d.present).toBeGreaterThan(0)
    expect(d.present + d.fetched).toBe(total)
    expect(d.fetched).toBeLessThan(total)
    await stop(resumed)
  })

  it('drops a peer that serves a corrupted chunk at that chunk, and completes from another source', async () => {
    const [a] = procs.filter((p) => running(p) && p.ready.layers[0] === 0)
    if (a !== undefined) await stop(a)
    // A node from a built directory whose file server flips a byte in each file's middle chunk.
    const liar = await join_(['--model', model, '--layers', '0-2', '--fault', 'bad-chunk'])
    const e = await join_(['--model', 'stories', '--cache', tempDir('cache-e'), '--layers', '0-2'])
    const d = e.ready.downloaded
    expect(d.fetched).toBe(bytesOf([0, 2]))
    expect(d.dropped.length).toBe(1)
    expect(d.dropped[0].source).toBe(liar.ready.peer)
    expect(d.dropped[0].reason).toMatch(/^chunk \d+ of shard-0\.onnx(\.data)? failed its hash$/)
    // Only the first file it sent a bad chunk of was ever checked wrong: it sent no more after.
    expect(e.log.join('\n')).toMatch(new RegExp(`dropped peer ${liar.ready.peer.slice(-8)} as a source`))
    expect(await generated()).toEqual(c.greedy.slice(0, c.decisive_prefix))
    await stop(liar)
  })

  it('a node that moves to other layers downloads them while it still serves the old ones', async () => {
    for (const p of procs.filter(running)) await stop(p)
    await join_(['--model', model, '--layers', '4-5'])
    const cache = tempDir('cache-move')
    const mover = await join_(['--model', 'stories', '--cache', cache, '--max-layers', '2', '--rebalance', '1'])
    expect(mover.ready.layers).toEqual([0, 2])
    // Another node takes the same layers: the mover is redundant there, and [2,4) is bare.
    await join_(['--model', model, '--layers', '0-2'])
    const listed = async (): Promise<number[] | undefined> =>
      (await api(relay.ready.http, '/api/network')).peers.find((x: { peer: string }) => x.peer === mover.ready.peer)?.layers
    const seen: string[] = []
    await waitFor(async () => {
      seen.push(String(await listed()))
      return seen.at(-1) === '2,4'
    }, 30_000)
    const log = mover.log.join('\n')
    // The new shard's files came down after the move was decided and before it was made; it was listed all along.
    const moving = log.indexOf('moving from layers [0,2) to [2,4)')
    const downloaded = log.indexOf('downloaded', moving)
    expect(moving).toBeGreaterThan(0)
    expect(downloaded).toBeGreaterThan(moving)
    expect(seen.every((l) => l === '0,2' || l === '2,4')).toBe(true)
    const held = (await readdir(join(cache, 'models', manifest.root))).filter((f) => f !== 'manifest.json').sort()
    expect(held).toEqual([...filesOf([0, 2]), ...filesOf([2, 4])].sort())
    expect(await generated()).toEqual(c.greedy.slice(0, c.decisive_prefix))
  })

  it('two nodes joining beside a peer that holds the files take less than half their bytes from the relay', async () => {
    const before = await relayFileBytes()
    const [f, g] = await Promise.all(
      ['f', 'g'].map(async (x) => await join_(['--model', 'stories', '--cache', tempDir(`cache-${x}`), '--layers', '2-5', '--max-download-rate', '2MB']))
    )
    const fetched = f.ready.downloaded.fetched + g.ready.downloaded.fetched
    expect(fetched).toBe(2 * bytesOf([2, 5]))
    const fromRelay = (await relayFileBytes()) - before
    expect(fromRelay).toBeLessThan(fetched / 2)
    const peers = (p: Proc): number =>
      Object.entries(p.ready.downloaded.bySource as Record<string, number>)
        .filter(([peer]) => peer !== relay.ready.peer)
        .reduce((n, [, b]) => n + b, 0)
    expect(peers(f) + peers(g)).toBeGreaterThan(fetched / 2)
    const traded = (f.ready.downloaded.bySource[g.ready.peer] ?? 0) + (g.ready.downloaded.bySource[f.ready.peer] ?? 0)
    console.log(`two joiners: ${fetched} bytes fetched, ${fromRelay} from the relay, ${peers(f) + peers(g)} from peers (${traded} from each other)`)
    expect(await generated()).toEqual(c.greedy.slice(0, c.decisive_prefix))
  })
})
