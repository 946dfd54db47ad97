/**
 * What every Ledger backend must do the same way (SQLite, EVM): the cases both suites run, each
 * on a fresh ledger from `open`. The checker is a fake that trusts `detail.valid`, so each case
 * chooses the verdict; the real receipt checks have their own tests.
 */
import { expect, it, vi } from 'vitest'
import { InputError } from '../../shared/errors.js'
import type { Evidence, EvidenceChecker, Ledger } from '../../shared/ledger/types.js'

const bytes = (...b: number[]): Uint8Array => new Uint8Array(b)
export const evidence = (n: number, accused = 'cheat', valid = true): Evidence => ({
  kind: 'redundant',
  accused,
  receipts: [bytes(n, 1), bytes(n, 2)],
  detail: { valid, note: `case ${n}` }
})

export const fakeChecker = () =>
  ({
    check: vi.fn(async (e: Evidence) => (e.detail.valid === true ? { valid: true, reason: 'receipts disagree' } : { valid: false, reason: 'receipts agree' }))
  }) satisfies EvidenceChecker

export function ledgerContract(open: (checker?: EvidenceChecker) => Promise<Ledger>): void {
  it('stakes and observes, and knows unseen peers', async () => {
    const l = await open()
    expect(await l.standing('new')).toEqual({ peer: 'new', stake: 0, reputation: 0.5, slashed: 0, blacklisted: false })
    expect((await l.stake('a', 10)).stake).toBe(10)
    expect((await l.stake('a', 5)).stake).toBe(15)
    await expect(l.stake('a', -1)).rejects.toThrow(InputError)
    expect((await l.observe('a', true)).reputation).toBeCloseTo(0.55)
    expect((await l.observe('a', false)).reputation).toBeCloseTo(0.495)
    expect(await l.standings()).toEqual([await l.standing('a')])
    expect((await l.audit()).map((e) => [e.seq, e.kind, e.amount])).toEqual([
      [1, 'stake', 10],
      [2, 'stake', 5],
      [3, 'reputation', undefined],
      [4, 'reputation', undefined]
    ])
    expect((await l.audit(3)).map((e) => e.seq)).toEqual([3, 4])
  })

  it('blacklists once observations pull reputation under the threshold', async () => {
    const l = await open()
    for (let i = 0; i < 4; i++) expect((await l.observe('flaky', false)).blacklisted).toBe(false)
    expect((await l.observe('flaky', false)).blacklisted).toBe(true) // 0.5 · 0.9⁵ ≈ 0.295
    expect((await l.observe('flaky', true)).blacklisted).toBe(true)
    expect((await l.audit()).filter((e) => e.kind === 'blacklist')).toHaveLength(1)
  })

  it('slashes on valid evidence, rewards the reporter, leaves bystanders alone, blacklists after the third slash', async () => {
    const checker = fakeChecker()
    const l = await open(checker)
    await l.stake('cheat', 100)
    await l.stake('honest', 10)
    await l.stake('bystander', 7)
    expect(await l.slash(evidence(1), 'honest')).toEqual({ slashed: true, amount: 50, reason: 'receipts disagree' })
    expect(checker.check).toHaveBeenCalledTimes(1)
    const cheat = await l.standing('cheat')
    expect([cheat.stake, cheat.slashed, cheat.blacklisted]).toEqual([50, 1, false])
    expect(cheat.reputation).toBeCloseTo(0.45)
    expect((await l.standing('honest')).stake).toBe(35)
    expect((await l.audit(4)).map((e) => [e.kind, e.peer, e.amount])).toEqual([
      ['slash', 'cheat', 50],
      ['reward', 'honest', 25]
    ])

    await l.slash(evidence(2), 'honest')
    expect(await l.isBlacklisted('cheat')).toBe(false)
    await l.slash(evidence(3), 'honest')
    expect(await l.isBlacklisted('cheat')).toBe(true)
    expect((await l.standing('cheat')).stake).toBe(12.5)
    expect((await l.audit()).at(-1)).toMatchObject({ kind: 'blacklist', peer: 'cheat', data: { slashed: 3 } })
    expect(await l.standing('bystander')).toEqual({ peer: 'bystander', stake: 7, reputation: 0.5, slashed: 0, blacklisted: false })
  })

  it('invalid evidence, reused evidence and self-reports change nothing but the log', async () => {
    const checker = fakeChecker()
    const l = await open(checker)
    await l.stake('cheat', 100)
    // The reporter is a staked peer: only a reporter with standing is paid a reward.
    await l.stake('honest', 1)
    const before = await l.standings()
    expect(await l.slash(evidence(1, 'cheat', false), 'honest')).toEqual({ slashed: false, amount: 0, reason: 'invalid evidence: receipts agree' })
    expect(await l.standings()).toEqual(before)
    expect((await l.audit()).at(-1)).toMatchObject({ kind: 'reject', peer: 'cheat', data: { reporter: 'honest', reason: 'invalid evidence: receipts agree' } })

    expect((await l.slash(evidence(2), 'honest')).slashed).toBe(true)
    const after = await l.standings()
    // Same receipts, new wording and order: still the same evidence, refused without asking the checker.
    const again = { ...evidence(2), receipts: [...evidence(2).receipts].reverse(), detail: { valid: true, note: 'again' } }
    expect(await l.slash(again, 'someone-else')).toEqual({ slashed: false, amount: 0, reason: 'evidence already used' })
    expect(checker.check).toHaveBeenCalledTimes(2)
    expect(await l.slash(evidence(3), 'cheat')).toMatchObject({ slashed: false, reason: 'a peer cannot report itself' })
    expect(await l.standings()).toEqual(after)
    expect((await l.audit()).map((e) => e.kind)).toEqual(['stake', 'stake', 'reject', 'slash', 'reward', 'reject', 'reject'])
    await expect(l.slash({ ...evidence(4), receipts: ['x' as unknown as Uint8Array] }, 'honest')).rejects.toThrow(InputError)
  })

  it('the same evidence sent twice at once slashes once', async () => {
    const slow: EvidenceChecker = {
      check: async () => {
        await new Promise((resolve) => setTimeout(resolve, 20))
        return { valid: true, reason: 'ok' }
      }
    }
    const l = await open(slow)
    await l.stake('cheat', 100)
    const results = await Promise.all([l.slash(evidence(1), 'a'), l.slash(evidence(1), 'b')])
    expect(results.map((r) => r.reason).sort()).toEqual(['evidence already used', 'ok'])
    expect((await l.standing('cheat')).stake).toBe(50)
    expect(await l.verifyAudit()).toEqual({ ok: true, badSeq: null })
  })

  it('a throwing checker rejects instead of slashing', async () => {
    const l = await open({
      check: async () => {
        throw new Error('rpc down')
      }
    })
    await l.stake('cheat', 10)
    expect(await l.slash(evidence(1), 'honest')).toMatchObject({ slashed: false, reason: 'checker failed: rpc down' })
    expect((await l.standing('cheat')).stake).toBe(10)
  })
}
