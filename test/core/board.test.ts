/**
 * The optimistic claim board over the in-process network: stories260K cut [0,2) [2,5), the
 * real client posting its claim, watchers re-executing, bisection over the per-layer
 * commitments, a referee, and the SQLite ledger checking the evidence before it slashes.
 *
 * Who does what is set by advertised speed: the client and the board both take the cheapest
 * peer they may (random() = 0: every weighted draw takes the first candidate, cheapest first),
 * so the claim's [0,2) hop is run by the cheapest peer there, the next two cheapest watch it (two
 * watchers a hop), and the next referees. Attacks on the board itself are at the end.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { buildStories, modelRunners, type ModelRunners } from '../helpers/memory-model.js'
import { memoryNet, type MemoryNet, type MemoryPeer } from '../helpers/memory-net.js'
import { generateAll, memoryClient, TEST_TIMEOUTS } from '../helpers/memory-client.js'
import { JOIN_STAKE, memoryBoard, type BoardRig } from '../helpers/memory-board.js'
import { reference } from '../helpers/reference.js'
import { bytesOf, DISPUTE_PROTOCOL, f32 } from '../../shared/protocol/infer.js'
import { MAX_MESSAGE_BYTES } from '../../shared/protocol/limits.js'
import { request } from '../../shared/client/request.js'
import { prefill, type BoardContext } from '../../shared/optimistic/context.js'
import { openReceipt } from '../../shared/verify/receipt.js'
import { compareFingerprints, fingerprint } from '../../shared/verify/fingerprint.js'
import { checkDisputeEvidence } from '../../shared/verify/dispute.js'
import type { Evidence } from '../../shared/ledger/types.js'
import { ClaimBoard, type Claim, type ClaimSink, type ClaimStore, type StoredClaim } from '../../shared/optimistic/board.js'
import type { Settlement } from '../../shared/client/types.js'
import { mulberry32 } from '../../shared/rng.js'

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
async function claimThrough(faults: Array<string | undefined>, o: { window: number; revealMs?: number; stall?: { peer: number; ms: number } }) {
  net = memoryNet(model)
  const first: MemoryPeer[] = []
  for (const [i, fault] of faults.entries()) first.push(await net.add({ layers: [0, 2], msPerLayer: i + 1, fault }))
  if (o.stall !== undefined) stallDisputes(net, first[o.stall.peer].id, o.stall.ms)
  const second = [await net.add({ layers: [2, 5], msPerLayer: 1 }), await net.add({ layers: [2, 5], msPerLayer: 2 })]
  rig = await memoryBoard(net, { revealMs: o.revealMs })
  const client = memoryClient(net, { board: rig.board, ledger: rig.link, random: () => 0 })
  const result = await generateAll(client, { prompt: c.prompt, maxTokens: n, verification: { mode: 'optimistic', window: o.window } })
  expect(result.verification).toMatchObject({ mode: 'optimistic', window: o.window, status: 'pending' })
  expect(result.verification.hops.find((h) => h.layers[0] === 0)!.ranBy).toEqual([first[0].id])
  return { first, second, result, settlement: await result.settlement! }
}

/** `peer` answers every dispute request only after `ms` (a party that stalls): the network's dialer waits before it connects. */
function stallDisputes(net: MemoryNet, peer: string, ms: number): void {
  const dial = net.dialer.dial.bind(net.dialer)
  net.dialer.dial = async (cap, protocol, signal) => {
    if (protocol === DISPUTE_PROTOCOL && cap.peer === peer) await new Promise((r) => setTimeout(r, ms))
    signal.throwIfAborted()
    return await dial(cap, protocol, signal)
  }
}

const standing = async (p: MemoryPeer) => await rig!.ledger.standing(p.id)
const untouched = { stake: JOIN_STAKE, slashed: 0 }

describe('claim board (in-process)', () => {
  it("overturns a claim through a peer that skips layer 1: bisection finds block 1, the referee re-executes up to it from the hop's input, the cheater is slashed", async () => {
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
    // From the hop's own input, blocks 0 and 1: nothing the referee ran on came from a party.
    expect(ch.reexecuted).toEqual({ layers: 2, of: 2, what: 'block 1' })
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
    // Two watchers where two may watch ([0,2) has three peers), one where only one may.
    expect(s.audits.map((a) => [a.layers, a.watcher, a.ok])).toEqual([
      [[0, 2], first[1].id, true],
      [[0, 2], first[2].id, true],
      [[2, 5], second[1].id, true]
    ])
    expect(rig!.reports).toEqual([])
    for (const p of [...first, ...second]) expect(await standing(p)).toMatchObject(untouched)
  })

  it('boards holding the same claim with seeded draws (federated relays) draw the same watchers, whatever their own randomness', async () => {
    net = memoryNet(model)
    for (let i = 0; i < 4; i++) await net.add({ layers: [0, 2], msPerLayer: i + 1 })
    for (let i = 0; i < 3; i++) await net.add({ layers: [2, 5], msPerLayer: i + 1 })
    rig = await memoryBoard(net, { random: mulberry32(1), seededDraws: true })
    const replica = new ClaimBoard({
      dialer: net.dialer,
      peers: async () => await net.directory.list(),
      find: async (p) => net.find(p),
      ledger: rig.link,
      timeouts: TEST_TIMEOUTS,
      random: mulberry32(2),
      seededDraws: true
    })
    // The claim goes to both, as a federation passes it on; the replica is audited too.
    let held: Promise<Settlement> | undefined
    const sink: ClaimSink = {
      submit: async (claim, correct) => {
        held = (await replica.post(claim, undefined, { replica: true })).settled
        return await rig!.board.submit(claim, correct)
      }
    }
    const client = memoryClient(net, { board: sink, ledger: rig.link, random: () => 0 })
    const result = await generateAll(client, { prompt: c.prompt, maxTokens: n, verification: { mode: 'optimistic', window: 300 } })
    const [a, b] = [await result.settlement!, await held!]
    expect(a.status).toBe('final')
    expect(b.status).toBe('final')
    const watchers = (s: Settlement) => s.audits.map((x) => [x.layers, x.watcher])
    expect(watchers(b)).toEqual(watchers(a))
    // Two of the three other [0,2) peers watch: the seed, not either board's randomness, chose which.
    expect(a.audits.filter((x) => x.layers[0] === 0)).toHaveLength(2)
    replica.close()
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
    // The second watcher vouches for the accused, so it may not referee: the fourth does.
    const run = await claimThrough([undefined, 'skip-layer=1+mute', undefined, undefined], { window, revealMs: 500 })
    const {
      first: [honest, watcher, , referee],
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

/**
 * Attacks on the board itself: peers in league, stalling, claims no peer signed. `wrong-weights`
 * with the same seed gives two peers the same wrong weights, so they agree with each other.
 */
describe('claim board attacks (in-process)', () => {
  const honestOnes = async (peers: MemoryPeer[]) => {
    for (const p of peers) expect(await standing(p), p.id).toMatchObject(untouched)
  }

  it('a pair with the same wrong weights, one serving and one watching, cannot vouch its claim to final', async () => {
    // The cheater serves, its twin is the first watcher (it vouches), an honest peer the second, another honest one referees.
    const {
      first: [cheat, twin, h1, h2],
      second,
      result,
      settlement: s
    } = await claimThrough(['wrong-weights', 'wrong-weights', undefined, undefined], { window: 300 })
    expect(result.tokens, 'the claim is wrong').not.toEqual(c.greedy.slice(0, n))
    expect(s.status).toBe('unverified')
    expect(s.audits.filter((a) => a.layers[0] === 0).map((a) => [a.watcher, a.ok])).toEqual(
      expect.arrayContaining([
        [h1.id, false],
        [twin.id, true]
      ])
    )
    const ch = s.challenges[0]
    expect(ch).toMatchObject({ accused: cheat.id, challenger: h1.id, referee: h2.id, outcome: 'undecided' })
    expect(ch.reason).toMatch(/the watchers disagree/)
    await honestOnes([h1, h2, ...second])
  })

  it('a pair with the same wrong weights, as challenger and referee, cannot get an honest peer slashed', async () => {
    // An honest peer serves; the first watcher and the referee are the twins; the second watcher is honest and vouches.
    const {
      first: [honest, cheat, h2, twin],
      second,
      result,
      settlement: s
    } = await claimThrough([undefined, 'wrong-weights', undefined, 'wrong-weights'], { window: 300 })
    expect(result.tokens).toEqual(c.greedy.slice(0, n))
    const ch = s.challenges[0]
    expect(ch).toMatchObject({ accused: honest.id, challenger: cheat.id, referee: twin.id, outcome: 'undecided' })
    expect(ch.slashed).toBeUndefined()
    expect(s.status).not.toBe('overturned')
    expect(rig!.reports, 'no evidence against anyone').toEqual([])
    await honestOnes([honest, h2, ...second])
  })

  it('a watcher with a crafted state (its top-k fingerprint right, the rest not) steers no referee and frames nobody', async () => {
    const {
      first: [honest, watcher, h2, referee],
      second,
      result,
      settlement: s
    } = await claimThrough([undefined, 'skip-layer=1', undefined, undefined], { window: 300 })
    // On the board: the referee ran the hop from its own input up to block 1, so the watcher had nothing to hand over, and lost.
    expect(s.status).toBe('final')
    const ch = s.challenges[0]
    expect(ch).toMatchObject({ accused: honest.id, challenger: watcher.id, referee: referee.id, outcome: 'frivolous', slashed: { peer: watcher.id } })
    expect(ch.reexecuted).toEqual({ layers: 2, of: 2, what: 'block 1' })
    // Before the ledger: the watcher turns the dispute evidence around, with a referee's statement of block 1 alone on a
    // state it crafted: block 0's true output with every value outside each row's top 16 set to zero.
    const [convicted] = rig!.reports
    const [watcherReceipt, honestReceipt, , openings] = convicted.receipts
    const end = convicted.detail.end as number
    const tokens = [...c.prompt, ...result.tokens].slice(0, end)
    const ctx = { dialer: net.dialer, ledger: rig!.link, timeouts: TEST_TIMEOUTS } as unknown as BoardContext
    const root = (await openReceipt(honestReceipt)).root
    const replay = await prefill(ctx, net.find(h2.id)!, { root, session: 'attacker', layers: [0, 2], input: { tokens }, keep: true })
    const st = await request(
      net.dialer,
      net.find(h2.id)!,
      DISPUTE_PROTOCOL,
      { t: 'state', session: (await openReceipt(replay.receipt)).session, step: 0, layer: 0 },
      { ms: 5000, maxBytes: MAX_MESSAGE_BYTES }
    )
    const state = f32(st.data as Uint8Array)
    const width = st.width as number
    const crafted = state.slice()
    const fp = fingerprint(state, end, width)
    for (let p = 0; p < end; p++) {
      const top = new Set(Array.from(fp.idx.subarray(p * fp.k, (p + 1) * fp.k)))
      for (let i = 0; i < width; i++) if (!top.has(i)) crafted[p * width + i] = 0
    }
    expect(compareFingerprints(fingerprint(crafted, end, width), fp).verdict, 'the fingerprint cannot tell the crafted state from the true one').toBe('match')
    const part = await request(
      net.dialer,
      net.find(referee.id)!,
      DISPUTE_PROTOCOL,
      { t: 'execute', root, hop: [0, 2], layer: 1, seq: end, hidden: bytesOf(crafted) },
      { ms: 5000, maxBytes: MAX_MESSAGE_BYTES }
    )
    const framed: Evidence = {
      kind: 'dispute',
      accused: honest.id,
      receipts: [honestReceipt, watcherReceipt, part.statement as Uint8Array, openings],
      detail: {}
    }
    expect((await checkDisputeEvidence(framed)).reason).toMatch(/did not re-execute from the hop's input/)
    expect(await rig!.ledger.slash(framed, watcher.id)).toMatchObject({ slashed: false })
    await honestOnes([honest, h2, referee, ...second])
  })

  it('a hop no watcher can audit leaves the claim unverified, never final', async () => {
    const { settlement: s } = await claimThrough([undefined], { window: 300 })
    expect(s.status).toBe('unverified')
    expect(s.audits.find((a) => a.layers[0] === 0)).toMatchObject({ ok: false, note: expect.stringMatching(/unaudited/) })
  })

  it('a challenge no referee can decide leaves a wrong claim unverified, never final, and slashes nobody', async () => {
    const {
      first: [cheat, watcher],
      result,
      settlement: s
    } = await claimThrough(['skip-layer=1', undefined], { window: 300 })
    expect(result.tokens).not.toEqual(c.greedy.slice(0, n))
    expect(s.status).toBe('unverified')
    expect(s.challenges[0]).toMatchObject({ accused: cheat.id, challenger: watcher.id, outcome: 'undecided' })
    expect(rig!.reports).toEqual([])
    await honestOnes([watcher])
  })

  it('an accused that stalls its reveals past their deadline loses: the claim waits for the challenge and is overturned, not final', async () => {
    const window = 300
    const {
      first: [cheat],
      settlement: s
    } = await claimThrough(['skip-layer=1', undefined, undefined, undefined], { window, revealMs: 1000, stall: { peer: 0, ms: 1200 } })
    expect(s.status).toBe('overturned')
    expect(s.afterMs, 'the window closed while the challenge was open').toBeGreaterThan(1000)
    expect(s.challenges[0]).toMatchObject({ accused: cheat.id, outcome: 'overturned', located: { timedOut: cheat.id }, slashed: { peer: cheat.id } })
    expect(s.tokens).toEqual(c.greedy.slice(0, n))
  })

  it('a claim resumed after the board died (kill -9) is audited before it settles: no watcher back, it ends unverified everywhere', async () => {
    net = memoryNet(model)
    await net.add({ layers: [0, 2], msPerLayer: 1 }) // nobody else holds [0,2): no watcher will come
    await net.add({ layers: [2, 5], msPerLayer: 1 })
    await net.add({ layers: [2, 5], msPerLayer: 2 })
    rig = await memoryBoard(net)
    const rows = new Map<string, StoredClaim>()
    const store: ClaimStore = {
      put: (claim, submittedAt) => void rows.set(claim.id, { claim, submittedAt, status: 'pending' }),
      settle: (st) => void rows.set(st.claim, { ...rows.get(st.claim)!, status: st.status, settlement: JSON.parse(JSON.stringify(st)) }),
      webhook: () => {},
      get: (id) => rows.get(id),
      pending: () => [...rows.values()].filter((r) => r.status === 'pending')
    }
    const boardOf = () =>
      new ClaimBoard({
        dialer: net.dialer,
        peers: async () => await net.directory.list(),
        ledger: rig!.link,
        timeouts: TEST_TIMEOUTS,
        store,
        resumeWaitMs: 300,
        random: () => 0
      })
    const before = boardOf()
    const client = memoryClient(net, { board: before, ledger: rig.link, random: () => 0 })
    const result = await generateAll(client, { prompt: c.prompt, maxTokens: n, verification: { mode: 'optimistic', window: 1500 } })
    const id = result.verification.claim!
    while (!rows.has(id)) await new Promise((r) => setTimeout(r, 10)) // accepted once its receipts are checked
    before.close() // the relay dies with the claim pending
    expect(rows.get(id)?.status).toBe('pending')
    const after = boardOf()
    try {
      expect(after.resume()).toBe(1)
      const s = await after.settled(id)
      expect(s.status).toBe('unverified')
      expect(s.audits.find((a) => a.layers[0] === 0)).toMatchObject({ ok: false, note: expect.stringMatching(/unaudited/) })
      // One status everywhere: the board's answer, its settlement, and the stored copy.
      expect(after.get(id)).toMatchObject({ status: 'unverified', settlement: s })
      expect(rows.get(id)).toMatchObject({ status: 'unverified', settlement: s })
    } finally {
      after.close()
    }
  })

  it('refuses claims whose receipts do not check: another peer named, a byte changed, another model, other inputs', async () => {
    net = memoryNet(model)
    const first = [await net.add({ layers: [0, 2], msPerLayer: 1 }), await net.add({ layers: [0, 2], msPerLayer: 2 })]
    await net.add({ layers: [2, 5], msPerLayer: 1 })
    await net.add({ layers: [2, 5], msPerLayer: 2 })
    rig = await memoryBoard(net)
    const board = rig.board
    let posted: Claim | undefined
    const sink: ClaimSink = {
      submit: async (claim, rerun) => {
        posted = claim
        return await board.submit(claim, rerun)
      }
    }
    const client = memoryClient(net, { board: sink, ledger: rig.link, random: () => 0 })
    const result = await generateAll(client, { prompt: c.prompt, maxTokens: n, verification: { mode: 'optimistic', window: 200 } })
    expect((await result.settlement!).status).toBe('final')
    const claim = posted!
    type Hop = Claim['hops'][number]
    const hop0 = (f: (h: Hop) => Hop): Claim => ({ ...claim, id: `${claim.id}-x${Math.random()}`, hops: claim.hops.map((h, i) => (i === 0 ? f(h) : h)) })
    const entry0 = (h: Hop, f: (e: Hop['entries'][number]) => Hop['entries'][number]): Hop => ({ ...h, entries: h.entries.map((e, k) => (k === 0 ? f(e) : e)) })
    const flipped = (r: Uint8Array): Uint8Array => {
      const x = r.slice()
      x[x.length - 5] ^= 1
      return x
    }
    const forged: Array<[Claim, RegExp]> = [
      [hop0((h) => entry0(h, (e) => ({ ...e, peer: first[1].id }))), /is signed by .*, not by/],
      [hop0((h) => entry0(h, (e) => ({ ...e, receipt: flipped(e.receipt) }))), /is not a signed receipt/],
      [{ ...claim, id: `${claim.id}-root`, root: 'ab'.repeat(32) }, /is about model/],
      [hop0((h) => ({ ...h, layers: [0, 3] })), /is about layers/],
      [hop0((h) => entry0(h, (e) => ({ ...e, end: e.end + 1 }))), /covers rows/],
      [hop0((h) => ({ ...h, inputs: { tokens: Array.from((h.inputs as { tokens: number[] }).tokens, (t) => (t + 1) % 512) } })), /the inputs do not match/]
    ]
    for (const [bad, why] of forged) {
      await expect(board.submit(bad)).rejects.toMatchObject({ code: 'BAD_CLAIM', message: expect.stringMatching(why) })
      expect(board.get(bad.id), 'refused, not pending').toBeUndefined()
    }
    expect(rig.reports).toEqual([])
    expect(board.stats()).toMatchObject({ pending: 0, final: 1 })

    // A board holding its most pending claims refuses the next (BUSY: the relay answers 503 with Retry-After).
    const full = new ClaimBoard({ dialer: net.dialer, peers: async () => await net.directory.list(), ledger: rig.link, timeouts: TEST_TIMEOUTS, maxPending: 1 })
    try {
      const held = await full.post({ ...claim, id: `${claim.id}-1`, window: 60_000 })
      void held.settled.catch(() => {})
      await expect(full.post({ ...claim, id: `${claim.id}-2` })).rejects.toMatchObject({ code: 'BUSY' })
      expect(full.pending()).toBe(1)
    } finally {
      full.close()
    }
  })
})
