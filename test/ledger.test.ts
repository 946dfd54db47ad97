import { describe, it, expect, afterEach } from 'vitest'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { openSqliteLedger } from '../relay/ledger-sqlite.js'
import {
  applySlash,
  applyStake,
  emaReputation,
  entryHash,
  evidenceHash,
  GENESIS_HASH,
  initialStanding,
  makeEntry,
  shouldBlacklist,
  verifyChain
} from '../shared/ledger/rules.js'
import { DEFAULT_RULES, type EvidenceChecker, type Ledger, type LedgerEntry } from '../shared/ledger/types.js'
import { InputError } from '../shared/errors.js'
import type { Generator } from '../shared/client/types.js'
import { createHttpApp } from '../relay/http.js'
import { tempDir } from './helpers/paths.js'
import { evidence, fakeChecker, ledgerContract } from './helpers/ledger-contract.js'

const R = DEFAULT_RULES

describe('ledger rules (pure)', () => {
  it('moves reputation as an EMA and blacklists on reputation, slash count, and for good', () => {
    expect(emaReputation(0.5, true, 0.1)).toBeCloseTo(0.55)
    expect(emaReputation(0.5, false, 0.1)).toBeCloseTo(0.45)
    const s = initialStanding('p', R)
    expect(s).toEqual({ peer: 'p', stake: 0, reputation: 0.5, slashed: 0, blacklisted: false })
    expect(shouldBlacklist(s, R)).toBe(false)
    expect(shouldBlacklist({ ...s, reputation: 0.29 }, R)).toBe(true)
    expect(shouldBlacklist({ ...s, slashed: 3 }, R)).toBe(true)
    expect(shouldBlacklist({ ...s, reputation: 1, blacklisted: true }, R)).toBe(true)
  })

  it('slashes a fraction, rewards a fraction of that, and refuses non-positive stakes', () => {
    const { standing, amount, reward } = applySlash({ ...initialStanding('p', R), stake: 100 }, R)
    expect([amount, reward, standing.stake, standing.slashed]).toEqual([50, 25, 50, 1])
    expect(standing.reputation).toBeCloseTo(0.45)
    expect(applyStake(initialStanding('p', R), 10).stake).toBe(10)
    for (const bad of [0, -1, NaN, Infinity]) expect(() => applyStake(initialStanding('p', R), bad)).toThrow(InputError)
  })

  it('identifies evidence by kind, accused and the set of receipts, not by detail or order', () => {
    const e = evidence(1)
    expect(evidenceHash({ ...e, detail: { other: true } })).toBe(evidenceHash(e))
    expect(evidenceHash({ ...e, receipts: [...e.receipts].reverse() })).toBe(evidenceHash(e))
    expect(evidenceHash({ ...e, accused: 'other' })).not.toBe(evidenceHash(e))
    expect(evidenceHash(evidence(2))).not.toBe(evidenceHash(e))
  })

  it('chains entries from genesis and finds the first bad one', () => {
    const chain: LedgerEntry[] = []
    for (let i = 0; i < 4; i++) chain.push(makeEntry(chain.at(-1) ?? null, { at: 1000 + i, kind: 'stake', peer: 'p', amount: i + 1, data: { b: 1, a: [i] } }))
    expect(chain[0].prevHash).toBe(GENESIS_HASH)
    expect(chain[2].prevHash).toBe(chain[1].hash)
    // Key order does not change the hash (cborg sorts map keys).
    expect(entryHash({ ...chain[1], data: { a: [1], b: 1 } })).toBe(chain[1].hash)
    expect(verifyChain(chain)).toEqual({ ok: true, badSeq: null })
    expect(verifyChain(chain.map((e) => (e.seq === 3 ? { ...e, amount: 99 } : e)))).toEqual({ ok: false, badSeq: 3 })
    expect(verifyChain(chain.filter((e) => e.seq !== 2))).toEqual({ ok: false, badSeq: 2 })
  })
})

describe('SQLite ledger', () => {
  const open: Ledger[] = []
  const ledgerAt = async (path: string, checker: EvidenceChecker = fakeChecker()): Promise<Ledger> => {
    const l = await openSqliteLedger(path, checker)
    open.push(l)
    return l
  }
  afterEach(async () => {
    for (const l of open.splice(0)) await l.close().catch(() => {})
  })

  ledgerContract(async (checker) => await ledgerAt(join(tempDir('ledger'), 'l.db'), checker))

  it('pays the reward only to a reporter with standing; otherwise it is burned, and the slash entry says so', async () => {
    const l = await ledgerAt(join(tempDir('ledger'), 'l.db'))
    await l.stake('cheat', 100)
    await l.stake('honest', 10)
    await l.stake('outcast', 10)
    for (let i = 0; i < 5; i++) await l.observe('outcast', false)
    expect(await l.isBlacklisted('outcast')).toBe(true)
    for (const [n, reporter] of [
      [1, 'mallory'],
      [2, 'outcast']
    ] as const) {
      expect((await l.slash(evidence(n), reporter)).slashed).toBe(true)
      expect((await l.audit()).at(-1)).toMatchObject({ kind: 'slash', peer: 'cheat', data: { reporter, rewardBurned: true } })
    }
    expect((await l.standing('mallory')).stake).toBe(0)
    expect((await l.standing('outcast')).stake).toBe(10)
    expect((await l.slash(evidence(3), 'honest')).amount).toBe(12.5)
    expect((await l.audit()).slice(-3).map((e) => [e.kind, e.peer, e.amount, e.data.rewardBurned])).toEqual([
      ['slash', 'cheat', 12.5, undefined],
      ['reward', 'honest', 6.25, undefined],
      ['blacklist', 'cheat', undefined, undefined]
    ])
    expect((await l.audit()).filter((e) => e.kind === 'reward')).toHaveLength(1)
    expect(await l.verifyAudit()).toEqual({ ok: true, badSeq: null })
  })

  it('survives reopening, and the chain verifies from genesis and keeps growing', async () => {
    const path = join(tempDir('ledger'), 'l.db')
    const l = await ledgerAt(path)
    await l.stake('cheat', 100)
    await l.stake('honest', 1)
    await l.slash(evidence(1), 'honest')
    await l.observe('honest', true)
    const standings = await l.standings()
    const audit = await l.audit()
    await l.close()

    const again = await ledgerAt(path)
    expect(await again.standings()).toEqual(standings)
    expect(await again.audit()).toEqual(audit)
    expect(await again.verifyAudit()).toEqual({ ok: true, badSeq: null })
    expect(await again.slash(evidence(1), 'honest')).toMatchObject({ reason: 'evidence already used' })
    const next = await again.observe('cheat', false)
    const tail = (await again.audit()).slice(-2)
    expect(tail[1].prevHash).toBe(tail[0].hash)
    expect(next.reputation).toBeCloseTo(0.405)
    expect(await again.verifyAudit()).toEqual({ ok: true, badSeq: null })
  })

  it('refuses edits to the log, and finds the tampered seq when an attacker drops the trigger', async () => {
    const path = join(tempDir('ledger'), 'l.db')
    const l = await ledgerAt(path)
    for (let i = 1; i <= 5; i++) await l.stake(`p${i}`, i)
    await l.close()

    const db = new Database(path)
    expect(() => db.prepare('UPDATE audit SET amount = 1000 WHERE seq = 3').run()).toThrow(/append-only/)
    expect(() => db.prepare('DELETE FROM audit WHERE seq = 5').run()).toThrow(/append-only/)
    db.exec('DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete')
    db.prepare('UPDATE audit SET amount = 1000 WHERE seq = 3').run()
    db.close()
    expect(await (await ledgerAt(path)).verifyAudit()).toEqual({ ok: false, badSeq: 3 })
  })

  it('a rewritten row whose hash is recomputed breaks the next link; unparseable data is bad too', async () => {
    const path = join(tempDir('ledger'), 'l.db')
    const l = await ledgerAt(path)
    for (let i = 1; i <= 4; i++) await l.stake('p', i)
    const [, second] = await l.audit()
    await l.close()

    const db = new Database(path)
    db.exec('DROP TRIGGER audit_no_update')
    const forged = { ...second, amount: 1000 }
    db.prepare('UPDATE audit SET amount = ?, hash = ? WHERE seq = 2').run(1000, entryHash(forged))
    expect(await (await ledgerAt(path)).verifyAudit()).toEqual({ ok: false, badSeq: 3 })
    // Opening the ledger put the trigger back.
    expect(() => db.prepare("UPDATE audit SET data = 'not json' WHERE seq = 1").run()).toThrow(/append-only/)
    db.exec('DROP TRIGGER audit_no_update')
    db.prepare("UPDATE audit SET data = 'not json' WHERE seq = 1").run()
    db.close()
    expect(await (await ledgerAt(path)).verifyAudit()).toEqual({ ok: false, badSeq: 1 })
  })

  it('GET /api/ledger shows standings, the log tail and whether the chain holds; 404 without a ledger', async () => {
    const deps = { generator: {} as Generator, network: () => ({ models: [], peers: [] }), models: [] }
    const none = await createHttpApp(deps).request('/api/ledger')
    expect(none.status).toBe(404)
    expect((await none.json()).error.code).toBe('ledger_not_found')
    const l = await ledgerAt(join(tempDir('ledger'), 'l.db'))
    for (let i = 0; i < 120; i++) await l.observe('p', true)
    const body = await (await createHttpApp({ ...deps, ledger: l }).request('/api/ledger')).json()
    expect(body.standings).toEqual([await l.standing('p')])
    expect(body.audit.map((e: LedgerEntry) => e.seq)).toEqual(Array.from({ length: 100 }, (_, i) => 21 + i))
    expect(body.chainOk).toBe(true)
  })
})
