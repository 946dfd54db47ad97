/**
 * Many relays, one network (relay/federation.ts), as real processes on loopback: three relays
 * (B configured with A, C with B only), nodes announcing to different ones. Every relay lists
 * every node; a client of C generates through nodes that only ever talked to A; kill -9 of the
 * relay a node and a client use, mid-generation, loses nothing.
 */
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildModel } from '../host/model-store.js'
import { reference, stories } from './helpers/reference.js'
import { REPO, tempDir } from './helpers/paths.js'
import { api, spawnRelay, spawnTessera, waitFor, type Proc } from './helpers/network.js'

let model: string
const procs: Proc[] = []
let a: Proc
let b: Proc
let c: Proc

const relay = async (peers: Proc[]): Promise<Proc> => {
  const p = await spawnRelay(model, { extra: peers.flatMap((r) => ['--peer-relay', r.ready.nodeRelay]) })
  procs.push(p)
  return p
}
const node = async (layers: string, relays: Proc[]): Promise<Proc> => {
  const p = await spawnTessera(['node', ...relays.flatMap((r) => ['--relay', r.ready.nodeRelay]), '--model', model, '--layers', layers])
  procs.push(p)
  return p
}
const listed = async (r: Proc): Promise<string[]> => (await api(r.ready.http, '/api/network')).peers.map((p: { peer: string }) => p.peer)
const listedEverywhere = async (rs: Proc[], peers: Proc[]): Promise<void> => {
  await waitFor(async () => {
    for (const r of rs) {
      const seen = await listed(r)
      if (!peers.every((p) => seen.includes(p.ready.peer))) return false
    }
    return true
  }, 15_000)
}

/** `tessera generate` through the network, its ids read as it prints them; `onIds` sees each batch. */
async function generate(relays: Proc[], maxTokens: number, onIds?: (n: number) => void): Promise<{ ids: number[]; log: string }> {
  const cs = reference()[0]
  const args = ['generate', ...relays.flatMap((r) => ['--relay', r.ready.nodeRelay]), '--prompt-ids', cs.prompt.join(','), '--max-tokens', String(maxTokens)]
  // Slowed links (40 ms a round trip) make the generation last long enough to kill a relay under it.
  const proc = spawn(process.execPath, [join(REPO, 'bin', 'tessera.js'), ...args], { cwd: REPO, env: { ...process.env, TESSERA_LINK_RTT_MS: '40' } })
  let out = ''
  let err = ''
  proc.stdout.on('data', (d: Buffer) => {
    out += d.toString()
    onIds?.(
      out
        .trim()
        .split(/\s+/)
        .filter((x) => x !== '').length
    )
  })
  proc.stderr.on('data', (d: Buffer) => {
    err += d.toString()
  })
  const code = await new Promise<number | null>((resolve) => proc.once('exit', resolve))
  expect(code, err).toBe(0)
  return { ids: out.trim().split(/\s+/).map(Number), log: err }
}

beforeAll(async () => {
  model = tempDir('fed-model')
  await buildModel(await stories(), model, { source: 'stories260K.bin', cuts: [3] })
  a = await relay([])
  b = await relay([a])
  c = await relay([b]) // C knows only B: A's records reach it through B
}, 120_000)
afterAll(() => {
  for (const p of procs) if (p.proc.exitCode === null) p.proc.kill('SIGKILL')
})

describe('a federation of relays', () => {
  let n1: Proc
  let n2: Proc
  let n3: Proc
  let n4: Proc

  it('lists nodes announced to any relay at every relay; a client of C generates through nodes that only talked to A', async () => {
    ;[n1, n2] = await Promise.all([node('0-3', [a]), node('3-5', [a])])
    const t0 = Date.now()
    await listedEverywhere([a, b, c], [n1, n2])
    console.log(`federation: 2 records announced to A listed by A, B and C ${Date.now() - t0} ms after both nodes were ready`)
    // Each relay names the others it shares records with.
    for (const r of [a, b, c]) expect((await api(r.ready.http, '/api/network')).relays.length).toBeGreaterThanOrEqual(1)
    expect((await api(c.ready.http, '/v1/models')).data.map((m: { id: string }) => m.id).length).toBeGreaterThan(0)

    const cs = reference()[0]
    const r = await api(c.ready.http, '/v1/completions', { prompt: cs.prompt, max_tokens: cs.decisive_prefix, temperature: 0 })
    expect(r.tessera.tokens).toEqual(cs.greedy.slice(0, cs.decisive_prefix))
    expect(r.tessera.route.hops.map((h: { peer: string }) => h.peer)).toEqual([n1.ready.peer, n2.ready.peer])
  }, 120_000)

  it('kill -9 of the relay a node and a client use, mid-generation: same ids; the node stays listed; the next generation moves to another relay', async () => {
    ;[n3, n4] = await Promise.all([node('0-3', [a, b]), node('3-5', [c])])
    await listedEverywhere([a, b, c], [n3, n4])
    const cs = reference()[0]
    const want = cs.greedy.slice(0, cs.decisive_prefix)
    let killed = false
    const first = await generate([a, c], cs.decisive_prefix, (n) => {
      if (n >= 3 && !killed) {
        killed = true
        a.proc.kill('SIGKILL')
      }
    })
    expect(killed).toBe(true)
    expect(first.ids).toEqual(want)
    // n3 announced to A and B: B lists it itself, C through B.
    await waitFor(async () => (await listed(b)).includes(n3.ready.peer) && (await listed(c)).includes(n3.ready.peer), 5_000)
    await new Promise((resolve) => setTimeout(resolve, 12_000)) // past n3's next announce, which A no longer takes
    for (const r of [b, c]) expect(await listed(r)).toContain(n3.ready.peer)
    expect(n3.log.join('\n')).toMatch(/announcing to .* failed .*still listed by the others/)

    const second = await generate([a, c], cs.decisive_prefix)
    expect(second.ids).toEqual(want)
    expect(second.log).toMatch(/reading peers from relay .* did not answer/)
  }, 120_000)

  it('an optimistic claim posted to relay B is held and audited by C too, and settles there after kill -9 of B', async () => {
    // Watchers for every hop listed at C (A, the only relay n1 and n2 announced to, is gone).
    await Promise.all([node('0-3', [b, c]), node('3-5', [c, b])])
    const cs = reference()[0]
    const r = await api(b.ready.http, '/v1/completions', { prompt: cs.prompt, max_tokens: 4, verification: { mode: 'optimistic', window: 4000 } })
    expect(r.tessera.tokens).toEqual(cs.greedy.slice(0, 4))
    const id = r.tessera.verification.claim
    await waitFor(async () => (await fetch(`${c.ready.http}/api/claims/${id}`)).ok, 5_000)
    b.proc.kill('SIGKILL')
    let settled: { status: string; settlement?: { status: string; audits: unknown[] } } | undefined
    await waitFor(async () => {
      settled = await api(c.ready.http, `/api/claims/${id}`)
      return settled?.status !== 'pending'
    }, 30_000)
    expect(settled?.status).toBe('final')
    expect(settled?.settlement?.audits.length).toBeGreaterThanOrEqual(2)
  }, 120_000)
})
