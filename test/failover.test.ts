/**
 * kill -9 a node in the middle of a generation while another node serves the same layers: the
 * generation finishes with the same ids as without the failure, and the route shows the switch.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildModel } from '../host/model-store.js'
import { reference, stories } from './helpers/reference.js'
import { tempDir } from './helpers/paths.js'
import { readSse, startNetwork, type TestNetwork } from './helpers/network.js'

let net: TestNetwork

beforeAll(async () => {
  const model = tempDir('failover-model')
  await buildModel(await stories(), model, { source: 'stories260K.bin', cuts: [2, 4] })
  net = await startNetwork(model, ['0-2', '0-2', '2-4', '2-4', '4-5'])
})
afterAll(async () => {
  await net?.stop()
})

describe('failover', () => {
  // The middle hop replays hidden states; the first hop replays token ids.
  for (const [label, layers, range] of [
    ['a middle node', '2,4', '2-4'],
    ['the first node', '0,2', '0-2']
  ] as const) {
    it(`kill -9 of ${label} mid-generation: same ids, route shows the switch`, async () => {
      const c = reference()[0]
      const res = await fetch(`${net.http}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt: c.prompt, max_tokens: c.decisive_prefix, stream: true })
      })
      const ids: number[] = []
      let killed: string | undefined
      const chunks = await readSse(res, (ch) => {
        if (ch.tessera?.token === undefined) return
        ids.push(ch.tessera.token)
        if (ids.length === 10) {
          const victim = ch.tessera.hops.find((h: { layers: number[] }) => h.layers.join(',') === layers).peer
          const node = net.nodes.find((n) => n.ready.peer === victim)!
          node.proc.kill('SIGKILL')
          killed = victim
        }
      })
      const final = chunks.at(-1).tessera
      expect(chunks.at(-1).error, JSON.stringify(chunks.at(-1).error)).toBeUndefined()
      expect(killed).toBeDefined()
      expect(final.tokens).toEqual(c.greedy.slice(0, c.decisive_prefix))
      expect(ids).toEqual(final.tokens)
      expect(final.route.switches.length).toBeGreaterThanOrEqual(1)
      const sw = final.route.switches[0]
      expect(sw.failed).toBe(killed)
      expect(sw.layers.join(',')).toBe(layers)
      expect(sw.replacement.map((h: { peer: string }) => h.peer)).not.toContain(killed)
      expect(final.route.hops.find((h: { layers: number[] }) => h.layers.join(',') === layers).peer).not.toBe(killed)
      // Bring the layers back for the next case.
      await net.addNode(range)
    })
  }
})
