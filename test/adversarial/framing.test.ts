/**
 * Framing an honest peer with made-up identities, in process against the real SQLite ledger and the
 * relay's own checker (relay/evidence.ts): one real receipt of an honest node, taken as an ordinary
 * client would, plus two "witness" receipts signed with fresh keys that never joined. Witnesses
 * without standing testify to nothing, so the honest node keeps its stake; a reporter without
 * standing earns nothing, so the reward of a real slash is burned. Real detection still works.
 *
 * And framing with staked colluders, against a relay that re-executes disputed hops over its own
 * shard files (native-node/reexec.ts, as the CLI composes it): receipts of real hops of
 * stories260K, evidence carrying the hop's inputs, judged by recomputation whoever testifies.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { openSqliteLedger } from '../../relay/ledger-sqlite.js'
import { ledgerEvidenceChecker } from '../../relay/evidence.js'
import { createHttpApp } from '../../relay/http.js'
import { bytesToBase64 } from '../../shared/base64.js'
import type { Generator } from '../../shared/client/types.js'
import type { Evidence, Ledger } from '../../shared/ledger/types.js'
import { mismatchEvidence } from '../../shared/verify/evidence.js'
import { encodeFingerprint, fingerprint } from '../../shared/verify/fingerprint.js'
import { chainRows, EMPTY_CHAIN, signReceipt } from '../../shared/verify/receipt.js'
import { fillNormal, mulberry32 } from '../../shared/rng.js'
import { tempDir } from '../helpers/paths.js'
import { buildStories, modelRunners, type ModelRunners } from '../helpers/memory-model.js'
import { shardReexecutor, type Reexecutor } from '../../native-node/reexec.js'
import type { HopOutput } from '../../shared/runner.js'
import { HTTP_DEFAULTS } from '../../relay/config.js'
import { startRelay } from '../../relay/relay.js'

/** What an operator stakes a peer with (relay/config.ts RELAY_DEFAULTS.operatorStake). */
const JOIN_STAKE = 100
const WIDTH = 64
const ROOT = 'ab'.repeat(32)
const INPUT = chainRows(EMPTY_CHAIN, new Uint8Array(new Int32Array([1, 2, 3]).buffer), 3)
const HONEST = fillNormal(new Float32Array(3 * WIDTH), mulberry32(21), 1)
const WRONG = fillNormal(new Float32Array(3 * WIDTH), mulberry32(22), 1)

interface Signer {
  peer: string
  key: PrivateKey
}
const identity = async (): Promise<Signer> => {
  const key = await generateKeyPair('Ed25519')
  return { key, peer: peerIdFromPrivateKey(key).toString() }
}

/** A signed hop receipt: layers [0, 2) of ROOT over the 3 rows of INPUT, `out` as their output. */
async function receipt(s: Signer, out: Float32Array, session: string): Promise<{ peer: string; receipt: Uint8Array }> {
  const body = {
    peer: s.peer,
    session,
    step: 0,
    root: ROOT,
    layers: [0, 2] as [number, number],
    start: 0,
    input: INPUT,
    output: encodeFingerprint(fingerprint(out, 3, WIDTH))
  }
  return { peer: s.peer, receipt: await signReceipt(body, async (b) => await s.key.sign(b)) }
}

/** The attack: the accused's real receipt, and two receipts from keys minted for the occasion that say otherwise. */
async function framed(accused: Signer, session: string): Promise<Evidence> {
  const [f1, f2] = [await identity(), await identity()]
  return mismatchEvidence('redundant', await receipt(accused, HONEST, session), [await receipt(f1, WRONG, session), await receipt(f2, WRONG, session)], {})
}

describe('framing an honest peer with made-up witnesses', () => {
  const open: Ledger[] = []
  afterEach(async () => {
    for (const l of open.splice(0)) await l.close().catch(() => {})
  })

  /** The real ledger, with the checker wired as relay.ts wires it, and three honest peers staked as the relay's join does. */
  async function network(): Promise<{ ledger: Ledger; honest: Signer[] }> {
    let ref: Ledger | undefined
    const ledger = await openSqliteLedger(join(tempDir('framing'), 'l.db'), ledgerEvidenceChecker({ standing: async (p) => await ref!.standing(p) }))
    ref = ledger
    open.push(ledger)
    const honest = [await identity(), await identity(), await identity()]
    for (const h of honest) await ledger.stake(h.peer, JOIN_STAKE)
    return { ledger, honest }
  }

  it('refuses witnesses that never joined: no slash, a reject entry, no stake moved, nobody credited', async () => {
    const { ledger, honest } = await network()
    const before = await ledger.standings()
    const out = await ledger.slash(await framed(honest[0], 's0'), 'mallory')
    expect(out.slashed).toBe(false)
    expect(out.reason).toMatch(/may not witness \(no stake/)
    expect((await ledger.audit()).at(-1)).toMatchObject({ kind: 'reject', peer: honest[0].peer, data: { reporter: 'mallory' } })
    expect((await ledger.standing(honest[0].peer)).stake).toBe(JOIN_STAKE)
    expect(await ledger.standings()).toEqual(before)
    expect((await ledger.standing('mallory')).stake).toBe(0)
    expect((await ledger.audit()).filter((e) => e.kind === 'reward' || e.kind === 'slash')).toEqual([])
  })

  it('nine such attempts (three per honest peer) slash and blacklist no one, and the log verifies', async () => {
    const { ledger, honest } = await network()
    for (let i = 0; i < 9; i++) expect((await ledger.slash(await framed(honest[i % 3], `s${i}`), 'mallory')).slashed).toBe(false)
    for (const h of honest) {
      expect(await ledger.standing(h.peer)).toMatchObject({ stake: JOIN_STAKE, slashed: 0, blacklisted: false })
    }
    expect((await ledger.audit()).map((e) => e.kind)).toEqual([...Array(3).fill('stake'), ...Array(9).fill('reject')])
    expect(await ledger.verifyAudit()).toEqual({ ok: true, badSeq: null })
  })

  it('still slashes a faulty peer on two staked witnesses; the reward is burned for a made-up reporter, paid to a staked one', async () => {
    const { ledger, honest } = await network()
    const [w1, w2, reporter] = honest
    const cheat = await identity()
    await ledger.stake(cheat.peer, JOIN_STAKE)
    const caught = async (session: string): Promise<Evidence> =>
      mismatchEvidence('redundant', await receipt(cheat, WRONG, session), [await receipt(w1, HONEST, session), await receipt(w2, HONEST, session)], {})

    const first = await ledger.slash(await caught('a'), 'mallory')
    expect(first, first.reason).toMatchObject({ slashed: true, amount: 50 })
    expect((await ledger.audit()).at(-1)).toMatchObject({ kind: 'slash', peer: cheat.peer, data: { reporter: 'mallory', rewardBurned: true } })
    expect((await ledger.standing('mallory')).stake).toBe(0)

    expect(await ledger.slash(await caught('b'), reporter.peer)).toMatchObject({ slashed: true, amount: 25 })
    expect((await ledger.audit()).at(-1)).toMatchObject({ kind: 'reward', peer: reporter.peer, amount: 12.5 })
    expect((await ledger.standing(reporter.peer)).stake).toBe(JOIN_STAKE + 12.5)
    expect((await ledger.standing(cheat.peer)).stake).toBe(25)
    expect(await ledger.verifyAudit()).toEqual({ ok: true, badSeq: null })
  })

  it('POST /api/evidence with fabricated witnesses is refused and changes no standing', async () => {
    const { ledger, honest } = await network()
    const app = createHttpApp({ generator: {} as Generator, network: () => ({ models: [], peers: [] }), models: [], ledger })
    const e = await framed(honest[0], 'http')
    const body = JSON.stringify({ kind: e.kind, accused: e.accused, receipts: e.receipts.map(bytesToBase64), reporter: 'mallory' })
    const res = await app.request('/api/evidence', { method: 'POST', body, headers: { 'content-type': 'application/json' } })
    expect(res.status).toBe(200)
    const out = (await res.json()) as { slashed: boolean; reason: string }
    expect(out.slashed).toBe(false)
    expect(out.reason).toMatch(/may not witness/)
    expect(await ledger.standing(honest[0].peer)).toMatchObject({ stake: JOIN_STAKE, slashed: 0, blacklisted: false })
    expect((await ledger.standing('mallory')).stake).toBe(0)
  })
})

describe('framing an honest peer with staked colluders, before a relay that re-executes', () => {
  const PROMPT = [1, 45, 102, 7, 33, 250]
  const TOKENS = new Uint8Array(Int32Array.from(PROMPT).buffer)
  let model: ModelRunners
  let arbiter: Reexecutor
  let runs = 0
  const open: Ledger[] = []
  beforeAll(async () => {
    model = await modelRunners(await buildStories([2]))
    arbiter = shardReexecutor([{ dir: model.dir, manifest: model.manifest }], { ort: { device: 'cpu', threads: 1, spin: false } })
  }, 120_000)
  afterAll(async () => {
    await arbiter?.dispose()
    await model?.dispose()
  })
  afterEach(async () => {
    for (const l of open.splice(0)) await l.close().catch(() => {})
  })

  /** The relay's ledger and checker, wired as relay.ts wires them with the CLI's arbiter; every party staked. */
  async function network(): Promise<{ ledger: Ledger; honest: Signer; colluders: Signer[]; reporter: Signer }> {
    let ref: Ledger | undefined
    const reexecute: typeof arbiter.reexecute = async (job) => {
      runs++
      return await arbiter.reexecute(job)
    }
    const ledger = await openSqliteLedger(join(tempDir('framing'), 'l.db'), ledgerEvidenceChecker({ standing: async (p) => await ref!.standing(p), reexecute }))
    ref = ledger
    open.push(ledger)
    const [honest, c1, c2, reporter] = [await identity(), await identity(), await identity(), await identity()]
    for (const s of [honest, c1, c2, reporter]) await ledger.stake(s.peer, JOIN_STAKE)
    return { ledger, honest, colluders: [c1, c2], reporter }
  }

  /** The first hop [0, 2) over PROMPT, computed for real (the last step's output), and a receipt for `out` about it. */
  async function hop(): Promise<HopOutput> {
    const { runners } = await model.forPeer([0, 2])
    const s = runners[0].open()
    await s.forward({ tokens: PROMPT.slice(0, -1) })
    const out = await s.forward({ tokens: PROMPT.slice(-1) })
    s.close()
    return out
  }
  async function signed(s: Signer, out: HopOutput, session = 'x'): Promise<Uint8Array> {
    const body = {
      peer: s.peer,
      session,
      step: 1,
      root: model.manifest.root,
      layers: [0, 2] as [number, number],
      start: PROMPT.length - 1,
      input: chainRows(EMPTY_CHAIN, TOKENS, PROMPT.length),
      output: encodeFingerprint(fingerprint(out.data, out.seq, out.width))
    }
    return await signReceipt(body, async (b) => await s.key.sign(b))
  }
  const lie = (out: HopOutput): HopOutput => ({ ...out, data: fillNormal(new Float32Array(out.data.length), mulberry32(77), 2) })
  const inputs = { tokens: PROMPT, seq: PROMPT.length }
  const post = (e: Evidence, reporter: string): Request =>
    new Request('http://relay/api/evidence', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        kind: e.kind,
        accused: e.accused,
        receipts: e.receipts.map(bytesToBase64),
        reporter,
        ...(e.inputs !== undefined ? { inputs: e.inputs } : {})
      })
    })

  it('two staked colluders signing the same wrong output frame no one; the reply names the honest node as matching', async () => {
    const { ledger, honest, colluders } = await network()
    const app = createHttpApp({ generator: {} as Generator, network: () => ({ models: [], peers: [] }), models: [], ledger })
    const out = await hop()
    const bad = lie(out)
    const [r1, r2] = [await signed(colluders[0], bad), await signed(colluders[1], bad)]
    const framed: Evidence = { kind: 'redundant', accused: honest.peer, receipts: [await signed(honest, out), r1, r2], detail: {}, inputs }
    const before = await ledger.standings()
    const res = await app.request(post(framed, colluders[0].peer))
    expect(res.status).toBe(200)
    const reply = (await res.json()) as { slashed: boolean; reason: string; matches?: string[] }
    expect(reply.slashed, reply.reason).toBe(false)
    expect(reply.matches).toEqual([honest.peer])
    expect(reply.reason).toMatch(/re-ran layers \[0,2\) over 6 rows and the accused's receipt agrees with it/)
    expect(await ledger.standings()).toEqual(before)
    expect((await ledger.audit()).at(-1)).toMatchObject({ kind: 'reject', peer: honest.peer, data: { matches: [honest.peer] } })
    // Without the inputs, the witness rule would have convicted: both colluders have standing.
    const legacy = await ledgerEvidenceChecker({ standing: async (p) => await ledger.standing(p) }).check({ ...framed, inputs: undefined })
    expect(legacy.valid).toBe(true)
  }, 60_000)

  it('the same receipts with the colluders accused slash them, one prefill for the whole dispute', async () => {
    const { ledger, honest, colluders, reporter } = await network()
    const out = await hop()
    const bad = lie(out)
    const [r1, r2, rh] = [await signed(colluders[0], bad, 'y'), await signed(colluders[1], bad, 'y'), await signed(honest, out, 'y')]
    const before = runs
    const first = await ledger.slash({ kind: 'redundant', accused: colluders[0].peer, receipts: [r1, rh, r2], detail: {}, inputs }, reporter.peer)
    expect(first, first.reason).toMatchObject({ slashed: true, amount: JOIN_STAKE / 2, matches: [honest.peer] })
    // No witness at all: the accused's own receipt and the recomputation are the proof.
    const second = await ledger.slash({ kind: 'redundant', accused: colluders[1].peer, receipts: [r2], detail: {}, inputs }, reporter.peer)
    expect(second, second.reason).toMatchObject({ slashed: true, matches: [] })
    expect(runs - before).toBe(1) // the second report of the same hop is answered from the checker's cache
    for (const c of colluders) expect(await ledger.standing(c.peer)).toMatchObject({ stake: JOIN_STAKE / 2, slashed: 1 })
    expect(await ledger.standing(honest.peer)).toMatchObject({ stake: JOIN_STAKE, slashed: 0 })
    expect((await ledger.standing(reporter.peer)).stake).toBe(JOIN_STAKE + 2 * (JOIN_STAKE / 2) * 0.5)
    expect(await ledger.verifyAudit()).toEqual({ ok: true, badSeq: null })
  }, 60_000)

  it("dispute evidence (an optimistic referee's word) is re-executed too: a referee in league with the challenger frames no one", async () => {
    const { ledger, honest, colluders, reporter } = await network()
    const out = await hop()
    const bad = lie(out)
    const [rh, r1] = [await signed(honest, out, 'd'), await signed(colluders[0], bad, 'd')]
    // The referee's part statement and the openings never count once the relay has run the hop: junk stands in for them.
    const junk = [new Uint8Array([1]), new Uint8Array([2])]
    const framed = await ledger.slash({ kind: 'dispute', accused: honest.peer, receipts: [rh, r1, ...junk], detail: {}, inputs }, reporter.peer)
    expect(framed, framed.reason).toMatchObject({ slashed: false, matches: [honest.peer] })
    expect(await ledger.standing(honest.peer)).toMatchObject({ stake: JOIN_STAKE, slashed: 0 })
    const caught = await ledger.slash({ kind: 'dispute', accused: colluders[0].peer, receipts: [r1, rh, ...junk], detail: {}, inputs }, reporter.peer)
    expect(caught, caught.reason).toMatchObject({ slashed: true, matches: [honest.peer] })
  }, 60_000)

  it('evidence whose inputs are not the rows the receipts hash is refused, saying so, and moves nothing', async () => {
    const { ledger, honest, colluders } = await network()
    const out = await hop()
    const bad = lie(out)
    const e: Evidence = {
      kind: 'redundant',
      accused: honest.peer,
      receipts: [await signed(honest, out, 'z'), await signed(colluders[0], bad, 'z')],
      detail: {}
    }
    const before = await ledger.standings()
    const forged = [...PROMPT.slice(0, -1), 300]
    const r = await ledger.slash({ ...e, inputs: { tokens: forged, seq: forged.length } }, colluders[1].peer)
    expect(r.slashed).toBe(false)
    expect(r.reason).toMatch(/^invalid evidence: the inputs do not hash to the input chain of .*'s receipt$/)
    expect(await ledger.standings()).toEqual(before)
  }, 60_000)

  it('legacy evidence without inputs is still decided by the witness rule', async () => {
    const { ledger, honest, colluders } = await network()
    const out = await hop()
    const cheat = await identity()
    await ledger.stake(cheat.peer, JOIN_STAKE)
    const [w1, w2] = [await signed(honest, out, 'l'), await signed(colluders[0], out, 'l')]
    const lone = await ledger.slash({ kind: 'redundant', accused: cheat.peer, receipts: [await signed(cheat, lie(out), 'l'), w1], detail: {} }, 'mallory')
    expect(lone.reason).toMatch(/needs the accused's receipt and 2 witnesses/)
    const unstaked = await identity()
    const fresh = await ledger.slash(
      { kind: 'redundant', accused: cheat.peer, receipts: [await signed(cheat, lie(out), 'm'), w1, await signed(unstaked, out, 'l')], detail: {} },
      'mallory'
    )
    expect(fresh.reason).toMatch(/may not witness \(no stake/)
    const caught = await ledger.slash({ kind: 'redundant', accused: cheat.peer, receipts: [await signed(cheat, lie(out), 'n'), w1, w2], detail: {} }, 'mallory')
    expect(caught).toMatchObject({ slashed: true, amount: JOIN_STAKE / 2 })
    expect(caught.matches).toBeUndefined()
  }, 60_000)

  it('with requireInputs, staked colluders cannot fall back on the witness rule for a hop the relay runs', async () => {
    const { ledger, honest, colluders } = await network()
    const strict = ledgerEvidenceChecker({ standing: async (p) => await ledger.standing(p), reexecute: arbiter.reexecute, requireInputs: arbiter.serves })
    const out = await hop()
    const bad = lie(out)
    const framed: Evidence = {
      kind: 'redundant',
      accused: honest.peer,
      receipts: [await signed(honest, out, 'q'), await signed(colluders[0], bad, 'q'), await signed(colluders[1], bad, 'q')],
      detail: {}
    }
    expect((await ledgerEvidenceChecker({ standing: async (p) => await ledger.standing(p) }).check(framed)).valid).toBe(true) // the hole it closes
    const v = await strict.check(framed)
    expect(v).toMatchObject({ valid: false, reason: expect.stringMatching(/send the rows it was fed \(inputs\)/) })
    expect((await strict.check({ ...framed, inputs })).matches).toEqual([honest.peer])
    expect(arbiter.serves(model.manifest.root, [0, 2])).toBe(true)
    expect(arbiter.serves(model.manifest.root, [0, 1])).toBe(false) // off the shard boundaries: no node serves it
    expect(arbiter.serves('cd'.repeat(32), [0, 2])).toBe(false)
  }, 60_000)

  it('a real relay started with the arbiter (as the CLI starts it) refuses the frame over HTTP and slashes the colluders', async () => {
    const relay = await startRelay({
      httpPort: 0,
      p2pPort: 0,
      models: [model.dir],
      ledger: join(tempDir('framing-relay'), 'l.db'),
      reexecute: arbiter.reexecute
    })
    try {
      const [honest, c1, c2] = [await identity(), await identity(), await identity()]
      for (const s of [honest, c1, c2]) await relay.ledger.stake(s.peer, JOIN_STAKE)
      const out = await hop()
      const bad = lie(out)
      const [rh, r1, r2] = [await signed(honest, out, 'real'), await signed(c1, bad, 'real'), await signed(c2, bad, 'real')]
      const send = async (e: Evidence): Promise<{ slashed: boolean; reason: string; matches?: string[] }> =>
        (await (await fetch(new URL('/api/evidence', relay.httpUrl), post(e, c1.peer))).json()) as { slashed: boolean; reason: string; matches?: string[] }
      const framed = await send({ kind: 'redundant', accused: honest.peer, receipts: [rh, r1, r2], detail: {}, inputs })
      expect(framed, framed.reason).toMatchObject({ slashed: false, matches: [honest.peer] })
      expect(await relay.ledger.standing(honest.peer)).toMatchObject({ stake: JOIN_STAKE, slashed: 0 })
      const caught = await send({ kind: 'redundant', accused: c2.peer, receipts: [r2, rh, r1], detail: {}, inputs })
      expect(caught, caught.reason).toMatchObject({ slashed: true, matches: [honest.peer] })
      expect((await relay.ledger.standing(c2.peer)).stake).toBe(JOIN_STAKE / 2)
    } finally {
      await relay.stop()
    }
  }, 60_000)

  it('limits re-executing reports per address (429 + Retry-After) and a refused one changes nothing', async () => {
    const { ledger, honest, colluders } = await network()
    const app = createHttpApp({ generator: {} as Generator, network: () => ({ models: [], peers: [] }), models: [], ledger })
    const out = await hop()
    const e: Evidence = { kind: 'redundant', accused: honest.peer, receipts: [await signed(honest, out, 'r')], detail: {}, inputs }
    for (let i = 0; i < HTTP_DEFAULTS.reexecBurst; i++) expect((await app.request(post(e, 'mallory'))).status).toBe(200)
    const entries = (await ledger.audit()).length
    const res = await app.request(post(e, 'mallory'))
    expect(res.status).toBe(429)
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    expect((await ledger.audit()).length).toBe(entries)
    // Evidence without inputs costs no re-execution and is not limited by it.
    expect((await app.request(post({ ...e, accused: colluders[0].peer, inputs: undefined }, 'mallory'))).status).toBe(200)
    expect(await ledger.standing(honest.peer)).toMatchObject({ stake: JOIN_STAKE, slashed: 0 })
  }, 60_000)
})
