/**
 * A colluding pair: two peers with the same wrong weights beside three honest peers on a slot (enough that k = 3 still runs once the pair is blacklisted). Their
 * outputs agree with each other, so a vote by numbers would return their tokens as agreed and
 * slash the honest peer. The drill's ledger re-executes the disputed hop as the relay does
 * (helpers/memory-board.ts): every generation must return the honest output or fail with
 * VERIFICATION_FAILED, and the honest peer must never be slashed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { VerificationError } from '../../shared/errors.js'
import type { Client } from '../../shared/client/client.js'
import type { GenerationRequest, GenerationResult } from '../../shared/client/types.js'
import { buildStories, modelRunners, type ModelRunners } from '../helpers/memory-model.js'
import { drillNetwork } from '../helpers/memory-drill.js'
import { reference } from '../helpers/reference.js'
import { waitFor } from '../helpers/network.js'

let model: ModelRunners

beforeAll(async () => {
  model = await modelRunners(await buildStories([2]))
})
afterAll(async () => {
  await model?.dispose()
})

async function run(client: Client, req: GenerationRequest): Promise<GenerationResult | VerificationError> {
  try {
    const gen = client.generate(req)
    for (let r = await gen.next(); ; r = await gen.next()) if (r.done === true) return r.value
  } catch (err) {
    if (err instanceof VerificationError) return err
    throw err
  }
}

describe('a colluding pair with the same wrong weights on one slot', () => {
  for (const [k, audit] of [
    [2, 1],
    [3, 0]
  ] as const) {
    it(`k = ${k}${audit > 0 ? `, audit ${audit}` : ''}: honest output or VERIFICATION_FAILED, never wrong tokens; the honest peer never slashed`, async () => {
      const d = await drillNetwork(model, {
        honest: [
          [0, 2],
          [0, 2],
          [0, 2],
          [2, 5],
          [2, 5],
          [2, 5]
        ],
        seed: 11
      })
      const honest = d.honest.filter((p) => p.layers[0] === 0)
      const pair = [await d.add({ layers: [0, 2], fault: 'wrong-weights=7' }), await d.add({ layers: [0, 2], fault: 'wrong-weights=7' })]
      await waitFor(async () => (await d.client.network()).peers.length === 8, 10_000)
      const cases = reference()
      let right = 0
      let failed = 0
      try {
        for (let g = 0; g < 6; g++) {
          const c = cases[g % cases.length]
          const n = Math.min(4, c.decisive_prefix)
          const r = await run(d.client, { prompt: c.prompt, maxTokens: n, verification: { mode: 'redundant', k, audit } })
          if (r instanceof VerificationError) failed++
          else {
            expect(r.tokens, `generation ${g}`).toEqual(c.greedy.slice(0, n))
            right++
          }
          for (const h of honest) expect(await d.ledger.standing(h.id)).toMatchObject({ slashed: 0, blacklisted: false })
        }
        // The pair is caught on the relay's word: slashed, not the honest peer.
        const caught = await Promise.all(pair.map(async (p) => (await d.ledger.standing(p.id)).slashed))
        expect(caught.some((n) => n > 0)).toBe(true)
        console.log(`colluding pair, k=${k} audit=${audit}: ${right} honest outputs, ${failed} refused of 6; pair slashed ${caught.join(', ')} times`)
        expect(right + failed).toBe(6)
      } finally {
        await d.stop()
      }
    }, 120_000)
  }
})
