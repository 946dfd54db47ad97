/**
 * A partition between relays that run as processes: C (configured with A and B) is cut off from
 * both by its block list (`--deny-file`, read again every second), a node leaves and another
 * joins on the other side meanwhile, and the cut heals. C's records converge on the others' (the
 * leaver gone, the joiner listed, each peer once) and a generation through C returns the
 * reference ids.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildModel } from '../host/model-store.js'
import { reference, stories } from './helpers/reference.js'
import { tempDir } from './helpers/paths.js'
import { api, spawnRelay, spawnTessera, waitFor, type Proc } from './helpers/network.js'

let model: string
const procs: Proc[] = []
let a: Proc
let b: Proc
let c: Proc
const denyFile = join(tempDir('fed-deny'), 'deny.txt')

const node = async (layers: string, relay: Proc): Promise<Proc> => {
  const p = await spawnTessera(['node', '--relay', relay.ready.nodeRelay, '--model', model, '--layers', layers])
  procs.push(p)
  return p
}
const listed = async (r: Proc): Promise<string[]> => (await api(r.ready.http, '/api/network')).peers.map((p: { peer: string }) => p.peer)

beforeAll(async () => {
  model = tempDir('fed-partition-model')
  await buildModel(await stories(), model, { source: 'stories260K.bin', cuts: [3] })
  await writeFile(denyFile, '')
  a = await spawnRelay(model)
  b = await spawnRelay(model, { extra: ['--peer-relay', a.ready.nodeRelay] })
  c = await spawnRelay(model, { extra: ['--peer-relay', a.ready.nodeRelay, '--peer-relay', b.ready.nodeRelay, '--deny-file', denyFile] })
  procs.push(a, b, c)
}, 120_000)
afterAll(() => {
  for (const p of procs) if (p.proc.exitCode === null) p.proc.kill('SIGKILL')
})

describe('a partition between relay processes', () => {
  it('C cut from A and B, a node leaving and one joining meanwhile, then healed: records converge, each peer once; C generates', async () => {
    const [first, leaver] = await Promise.all([node('0-3', a), node('3-5', a)])
    await waitFor(async () => (await listed(c)).length === 2, 15_000)

    await writeFile(denyFile, `# partition\n${a.ready.peer}\n${b.ready.peer}\n`)
    await waitFor(async () => (await api(c.ready.http, '/api/network')).relays.length === 0, 10_000)
    // Apart: one node leaves (its withdrawal reaches A and B only), another joins through A.
    leaver.proc.kill('SIGTERM')
    await new Promise<void>((resolve) => leaver.proc.once('exit', () => resolve()))
    const joiner = await node('3-5', a)
    await waitFor(async () => (await listed(b)).includes(joiner.ready.peer) && !(await listed(b)).includes(leaver.ready.peer), 15_000)
    expect(await listed(c)).toContain(leaver.ready.peer)
    expect(await listed(c)).not.toContain(joiner.ready.peer)

    await writeFile(denyFile, '')
    const t0 = Date.now()
    await waitFor(async () => {
      const seen = await listed(c)
      return seen.includes(joiner.ready.peer) && !seen.includes(leaver.ready.peer)
    }, 20_000)
    console.log(`federation: relay processes converged ${Date.now() - t0} ms after the partition healed`)
    for (const r of [a, b, c]) expect((await listed(r)).sort()).toEqual([first.ready.peer, joiner.ready.peer].sort())

    const cs = reference()[0]
    const r = await api(c.ready.http, '/v1/completions', { prompt: cs.prompt, max_tokens: cs.decisive_prefix, temperature: 0 })
    expect(r.tessera.tokens).toEqual(cs.greedy.slice(0, cs.decisive_prefix))
  }, 180_000)
})
