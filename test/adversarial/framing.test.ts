/**
 * Framing an honest peer with made-up identities, in process against the real SQLite ledger and the
 * relay's own checker (relay/evidence.ts): one real receipt of an honest node, taken as an ordinary
 * client would, plus two "witness" receipts signed with fresh keys that never joined. Witnesses
 * without standing testify to nothing, so the honest node keeps its stake; a reporter without
 * standing earns nothing, so the reward of a real slash is burned. Real detection still works.
 */
import { afterEach, describe, expect, it } from 'vitest'
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

/** The relay's join stake (relay/config.ts RELAY_DEFAULTS.joinStake). */
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
