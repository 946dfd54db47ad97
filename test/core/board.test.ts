/**
 * The optimistic claim board over the in-process network: stories260K cut [0,2) [2,5), the
 * real client posting its claim, watchers re-executing, bisection over the per-layer
 * commitments, a referee, and the SQLite ledger checking the evidence before it slashes.
 *
 * Who does what is set by advertised speed: the client and the board both take the cheapest
 * peer they may (random() = 0), so the claim's [0,2) hop is run by the cheapest peer there,
 * the next cheapest watches it, and the third referees.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { buildStories, modelRunners, type ModelRunners } from '../helpers/memory-model.js'
import { memoryNet, type MemoryNet, type MemoryPeer } from '../helpers/memory-net.js'
import { generateAll, memoryClient } from '../helpers/memory-client.js'
import { JOIN_STAKE, memoryBoard, type BoardRig } from '../helpers/memory-board.js'
import { reference } from '../helpers/reference.js'

let model: ModelRunners
let net: MemoryNet
let rig: BoardRig | undefined
const c = reference()[0]
const n = Math.min(6, c.decisive_prefix)

beforeAll(async () => {
  model = await modelRunners(await buildStories([2]))
})
afterAll(async () => {
  await model?.dispose()
})
afterEach(async () => {
  await rig?.close()
  rig = undefined
  net?.stop()
})

/**
 * Three peers on [0,2), fastest first (`faults[i]` for the i-th), two honest on [2,5); a board
 * over them; a generation in optimistic mode. Returns the peers and the result.
 */
async function claimThrough(faults: Array<string | undefined>, o: { window: number; revealMs?: number }) {
  net = memoryNet(model)
  const first: MemoryPeer[] = []
  for (const [i, fault] of faults.entries()) first.push(await net.add({ layers: [0, 2], msPerLayer: i + 1, fault }))
  const second = [await net.add({ layers: [2, 5], msPerLayer: 1 }), await net.add({ layers: [2, 5], msPerLayer: 2 })]
  rig = await memoryBoard(net, { revealMs: o.revealMs })
  const client = memoryClient(net, { board: rig.board, ledger: rig.link, random: () => 0 })
  const result = await generateAll(client, { prompt: c.prompt, maxTokens: n, verification: { mode: 'optimistic', window: o.window } })
  expect(result.verification).toMatchObject({ mode: 'optimistic', window: o.window, status: 'pending' })
  expect(result.verification.hops.find((h) => h.layers[0] === 0)!.ranBy).toEqual([first[0].id])
  return { first, second, result, settlement: await result.settlement! }
}

const standing = async (p: MemoryPeer) => await rig!.ledger.standing(p.id)
const untouched = { stake: JOIN_STAKE, slashed: 0 }

describe('claim board (in-process)', () => {
  it('overturns a claim through a peer that skips layer 1: bisection finds block 1, the referee re-executes it alone, the cheater is slashed', async () => {
    const window = 20_000
    const {
      first: [faulty, watcher, referee],
      second,
      settlement: s
    } = await claimThrough(['skip-layer=1', undefined, undefined], { window })
    expect(s.status).toBe('overturned')
    expect(s.afterMs, 'settled as soon as proven, not at the window').toBeLessThan(window)
    expect(s.challenges).toHaveLength(1)
    const ch = s.challenges[0]
    expect(ch).toMatchObject({ layers: [0, 2], accused: faulty.id, challenger: watcher.id, referee: referee.id })
    expect(ch).toMatchObject({ outcome: 'overturned', slashed: { peer: faulty.id } })
    expect(ch.located?.layer, ch.located?.note).toBe(1)
    // log2 of the hop's two blocks, plus the last block first: two reveals a round.
    expect(ch.located!.reveals).toBeLessThanOrEqual(2 * (1 + Math.ceil(Math.log2(2))))
    expect(ch.reexecuted).toEqual({ layers: 1, of: 2, what: 'block 1' })
    expect(s.audits[0]).toMatchObject({ layers: [0, 2], watcher: watcher.id, ok: false })
    // Regenerated around the cheater: the reference ids.
    expect(s.tokens).toEqual(c.greedy.slice(0, n))
    // The ledger checked the dispute evidence itself before slashing half the stake.
    expect(rig!.reports.map((e) => [e.kind, e.accused])).toEqual([['dispute', faulty.id]])
    expect(await standing(faulty)).toMatchObject({ stake: JOIN_STAKE / 2, slashed: 1 })
    for (const p of [watcher, referee, ...second]) expect(await standing(p)).toMatchObject(untouched)
    expect(await rig!.ledger.verifyAudit()).toEqual({ ok: true, badSeq: null })
  })

  it('lets an honest claim go final when its window closes, every hop audited and matching', async () => {
    const window = 400
    const { first, second, result, settlement: s } = await claimThrough([undefined, undefined, undefined], { window })
    expect(result.tokens).toEqual(c.greedy.slice(0, n))
    expect(s).toMatchObject({ claim: result.verification.claim, status: 'final', challenges: [] })
    expect(s.afterMs).toBeGreaterThanOrEqual(window)
    expect(s.audits.map((a) => [a.layers, a.watcher, a.ok])).toEqual([
      [[0, 2], first[1].id, true],
      [[2, 5], second[1].id, true]
    ])
    expect(rig!.reports).toEqual([])
    for (const p of [...first, ...second]) expect(await standing(p)).toMatchObject(untouched)
  })

  it('an accused that does not answer reveals loses the bisection by time-out; the referee replays the whole hop', async () => {
    const {
      first: [faulty],
      settlement: s
    } = await claimThrough(['skip-layer=1+mute', undefined, undefined], { window: 20_000, revealMs: 500 })
    expect(s.status).toBe('overturned')
    const ch = s.challenges[0]
    expect(ch.located).toMatchObject({ timedOut: faulty.id })
    expect(ch.located!.note).toMatch(/the accused did not answer a reveal/)
    expect(ch.reexecuted).toEqual({ layers: 2, of: 2, what: 'the whole hop' })
    expect(ch).toMatchObject({ outcome: 'overturned', slashed: { peer: faulty.id } })
    expect(s.tokens).toEqual(c.greedy.slice(0, n))
    expect(await standing(faulty)).toMatchObject({ slashed: 1 })
  })

  it('a watcher that challenges an honest claim, then does not answer reveals, loses by time-out: frivolous, slashed, the claim final', async () => {
    const window = 3_000
    const run = await claimThrough([undefined, 'skip-layer=1+mute', undefined], { window, revealMs: 500 })
    const {
      first: [honest, watcher, referee],
      result,
      settlement: s
    } = run
    expect(result.tokens).toEqual(c.greedy.slice(0, n))
    expect(s.status).toBe('final')
    expect(s.challenges).toHaveLength(1)
    const ch = s.challenges[0]
    expect(ch).toMatchObject({ accused: honest.id, challenger: watcher.id, referee: referee.id, outcome: 'frivolous', slashed: { peer: watcher.id } })
    expect(ch.located).toMatchObject({ timedOut: watcher.id })
    expect(ch.reexecuted).toEqual({ layers: 2, of: 2, what: 'the whole hop' })
    expect(await standing(watcher)).toMatchObject({ slashed: 1 })
    for (const p of [honest, referee]) expect(await standing(p)).toMatchObject(untouched)
  })
})
