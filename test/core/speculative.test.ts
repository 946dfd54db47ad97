/**
 * Speculative decoding across the pipeline (client/draft.ts) on stories260K in two hops, through
 * the real client and handlers in process: whatever the draft, greedy tokens are the reference
 * ids; a draft that is the model itself has every guess kept, a draft that guesses wrong has its
 * rows dropped from every hop's cache (the next step rewinds them) and still changes nothing; a
 * kill -9 mid-generation replays only the rows kept; redundant checking runs over the γ-row steps.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildStories, modelRunners, type ModelRunners } from '../helpers/memory-model.js'
import { memoryNet, type MemoryNet } from '../helpers/memory-net.js'
import { generateAll, memoryClient } from '../helpers/memory-client.js'
import { reference } from '../helpers/reference.js'
import { modelDraft, type Draft } from '../../shared/client/draft.js'
import { InputError } from '../../shared/errors.js'

let model: ModelRunners
const c = reference()[0]
const n = c.decisive_prefix

beforeAll(async () => {
  model = await modelRunners(await buildStories([2]))
})
afterAll(async () => {
  await model?.dispose()
})

async function network(perHop = 1): Promise<MemoryNet> {
  const net = memoryNet(model)
  for (let i = 0; i < perHop; i++) {
    await net.add({ layers: [0, 2], msPerLayer: 1 + i })
    await net.add({ layers: [2, 5], msPerLayer: 1 + i })
  }
  return net
}

/** The model itself, run in the client: every guess is the target's. */
async function selfDraft(): Promise<Draft & { close(): void }> {
  return modelDraft((await model.forPeer([0, 5])).runners)
}
/** Guesses a token the model never picks next: every guess is rejected. */
const wrongDraft: Draft = {
  async propose(context, k) {
    return Array.from({ length: k }, (_, i) => (context[context.length - 1] + 7 + i) % 512)
  }
}

describe('speculative decoding', () => {
  it('returns the reference ids with a perfect draft (every guess kept) and with a wrong one (every guess dropped)', async () => {
    const net = await network()
    const draft = await selfDraft()
    try {
      const good = await generateAll(memoryClient(net, { draft }), { prompt: c.prompt, maxTokens: n, speculate: { gamma: 4 } })
      expect(good.tokens).toEqual(c.greedy.slice(0, n))
      expect(good.yielded).toEqual(good.tokens)
      expect(good.speculation?.kept).toBe(good.speculation?.drafted)
      expect(good.speculation?.passes).toBeLessThanOrEqual(Math.ceil(n / 5) + 1) // 5 tokens a pass

      // What each hop's cache holds as it starts a step (the drafts of the pass before already dropped).
      let held = 0
      for (const p of net.peers)
        p.onStep = () => {
          held = Math.max(held, p.handler.stats.cachedTokens)
        }
      const bad = await generateAll(memoryClient(net, { draft: wrongDraft }), { prompt: c.prompt, maxTokens: n, speculate: { gamma: 3 } })
      expect(bad.tokens).toEqual(c.greedy.slice(0, n))
      expect(bad.speculation?.kept).toBe(0)
      expect(bad.speculation?.passes).toBe(n - 1) // a token a pass; the last pass has nothing left to draft
      // Only the rows kept, the prompt and the tokens before the last: kept, the 3 drafts a pass would have piled up.
      expect(held).toBeLessThanOrEqual(c.prompt.length + n - 1)
    } finally {
      draft.close()
      net.stop()
    }
  })

  it('replays only the rows kept when a hop dies mid-generation, and checks γ-row steps under redundant k = 2', async () => {
    const net = await network(2)
    const half = Math.floor(n / 2)
    try {
      // Wrong guesses dropped before the kill: a replay that fed them would shift every position after.
      const victim = net.peers[1] // [2,5), the cheaper one: the route's
      victim.onStep = (served) => {
        if (served === half) victim.kill()
      }
      const failed = await generateAll(memoryClient(net, { draft: wrongDraft }), { prompt: c.prompt, maxTokens: n, speculate: { gamma: 2 } })
      expect(failed.tokens).toEqual(c.greedy.slice(0, n))
      expect(failed.route.switches.some((s) => s.failed === victim.id)).toBe(true)

      const net2 = await network(2)
      const draft = await selfDraft()
      try {
        const checked = await generateAll(memoryClient(net2, { draft }), {
          prompt: c.prompt,
          maxTokens: n,
          speculate: { gamma: 3 },
          verification: { mode: 'redundant', k: 2 }
        })
        expect(checked.tokens).toEqual(c.greedy.slice(0, n))
        expect(checked.verification.faults).toEqual([])
        expect(checked.route.hops.every((h) => h.checkedBy?.length === 1 && h.verdict === 'agreed')).toBe(true)
      } finally {
        draft.close()
        net2.stop()
      }
    } finally {
      net.stop()
    }
  })

  it('refuses what it cannot do yet, before dialling: optimistic checks, no draft, a bad γ', async () => {
    const net = await network()
    try {
      const refused = async (req: object, cfg: object = { draft: wrongDraft }): Promise<unknown> =>
        await generateAll(memoryClient(net, cfg), { prompt: c.prompt, maxTokens: 4, speculate: { gamma: 2 }, ...req }).catch((e: unknown) => e)
      expect(await refused({ verification: { mode: 'optimistic', window: 1000 } })).toBeInstanceOf(InputError)
      expect(await refused({}, {})).toMatchObject({ message: expect.stringMatching(/needs a draft model/) })
      expect(await refused({ speculate: { gamma: 0 } })).toMatchObject({ message: expect.stringMatching(/gamma must be an integer from 1 to 16/) })
      expect(await refused({ speculate: { gamma: 2, adapt: 'yes' } })).toMatchObject({ message: expect.stringMatching(/adapt must be a boolean/) })
    } finally {
      net.stop()
    }
  })
})
