/**
 * A stalling peer (`--fault slow=MS`: honest outputs, each sent MS ms late) on the real relay and
 * nodes. Its steps are due by what its measured speed predicts (a few seconds at most for a decode
 * step, not a 15 s floor): it is failed over, the generation finishes with the reference tokens,
 * the staller loses reputation, and nobody is slashed (being slow is not being wrong).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildModel } from '../../host/model-store.js'
import { reference, stories } from '../helpers/reference.js'
import { tempDir } from '../helpers/paths.js'
import { api, startNetwork, waitFor, type Proc, type TestNetwork } from '../helpers/network.js'

let net: TestNetwork
let slow: Proc

beforeAll(async () => {
  const model = tempDir('slow-model')
  await buildModel(await stories(), model, { source: 'stories260K.bin', cuts: [2, 4] })
  // One slot of the whole model: redundant k = 2 draws two of its three peers each generation.
  net = await startNetwork(model, ['0-5', '0-5'])
  slow = await net.addNode('0-5', ['--fault', 'slow=6000'])
  await waitFor(async () => (await api(net.http, '/api/network')).peers.length === 3)
}, 120_000)
afterAll(async () => {
  await net?.stop()
})

interface Standing {
  peer: string
  reputation: number
  slashed: number
}

describe('a peer that stalls every step', () => {
  it('is failed over within its step deadline; the tokens are right, it loses reputation, nobody is slashed', async () => {
    const c = reference()[0]
    const n = Math.min(4, c.decisive_prefix)
    const standing = async (peer: string): Promise<Standing | undefined> =>
      (await api(net.http, '/api/ledger')).standings.find((s: Standing) => s.peer === peer)
    const before = (await standing(slow.ready.peer))?.reputation
    // Lanes are drawn at random: the staller is one of the two with probability 2/3 each time.
    let caught: { step: number; reason: string } | undefined
    for (let g = 0; g < 8 && caught === undefined; g++) {
      const started = Date.now()
      const r = await api(net.http, '/v1/completions', { prompt: c.prompt, max_tokens: n, verification: { mode: 'redundant', k: 2 } })
      expect(r.tessera.tokens, JSON.stringify(r)).toEqual(c.greedy.slice(0, n))
      const sw = r.tessera.route.switches.find((s: { failed: string }) => s.failed === slow.ready.peer)
      if (sw !== undefined) {
        caught = { step: sw.step, reason: sw.reason }
        // Prefill (due in 15 s) plus one decode step (due in 4 s) at most before the switch, then honest speed.
        console.log(`staller failed over at step ${sw.step} (${sw.reason}); generation took ${Date.now() - started} ms`)
        expect(Date.now() - started).toBeLessThan(6000 + 4000 + 15_000)
      }
    }
    expect(caught, 'the staller was drawn as a lane in one of 8 generations and failed over').toBeDefined()
    expect(caught!.reason).toMatch(/no reply|late/)
    const after = await standing(slow.ready.peer)
    expect(after!.reputation).toBeLessThan(before ?? Number.POSITIVE_INFINITY)
    for (const p of net.nodes.map((x) => x.ready.peer)) expect((await standing(p))?.slashed ?? 0).toBe(0)
  }, 240_000)
})
