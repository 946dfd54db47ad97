/**
 * The ledger in an embedded SQLite file (better-sqlite3, WAL). Every state change commits in one
 * transaction with its audit entry, so the standings and the hash-chained log never disagree;
 * the log is append-only by trigger, and used evidence is remembered so it slashes only once.
 */
import Database from 'better-sqlite3'
import { InputError } from '../shared/errors.js'
import { applyObservation, applySlash, applyStake, evidenceHash, hasStanding, initialStanding, makeEntry, verifyChain } from '../shared/ledger/rules.js'
import {
  DEFAULT_RULES,
  type Evidence,
  type EvidenceChecker,
  type Ledger,
  type LedgerEntry,
  type LedgerRules,
  type PeerStanding,
  type SlashResult,
  type Verdict
} from '../shared/ledger/types.js'

const SCHEMA = `
CREATE TABLE IF NOT EXISTS standings (
  peer TEXT PRIMARY KEY, stake REAL NOT NULL, reputation REAL NOT NULL,
  slashed INTEGER NOT NULL, blacklisted INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, kind TEXT NOT NULL, peer TEXT NOT NULL,
  amount REAL, data TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS evidence (hash TEXT PRIMARY KEY, accused TEXT NOT NULL, kind TEXT NOT NULL, seq INTEGER NOT NULL);
`

interface StandingRow {
  peer: string
  stake: number
  reputation: number
  slashed: number
  blacklisted: number
}
interface AuditRow {
  seq: number
  at: number
  kind: LedgerEntry['kind']
  peer: string
  amount: number | null
  data: string
  prev_hash: string
  hash: string
}

const KINDS = new Set(['redundant', 'spot', 'optimistic', 'dispute', 'signature', 'proof'])

const toStanding = (r: StandingRow): PeerStanding => ({
  peer: r.peer,
  stake: r.stake,
  reputation: r.reputation,
  slashed: r.slashed,
  blacklisted: r.blacklisted === 1
})
function toEntry(r: AuditRow): LedgerEntry {
  const e: LedgerEntry = { seq: r.seq, at: r.at, kind: r.kind, peer: r.peer, data: JSON.parse(r.data), prevHash: r.prev_hash, hash: r.hash }
  if (r.amount !== null) e.amount = r.amount
  return e
}

export async function openSqliteLedger(path: string, checker: EvidenceChecker, rules: LedgerRules = DEFAULT_RULES): Promise<Ledger> {
  const db = new Database(path)
  db.pragma('journal_mode = WAL')
  db.exec(SCHEMA)
  const q = {
    get: db.prepare<[string], StandingRow>('SELECT * FROM standings WHERE peer = ?'),
    all: db.prepare<[], StandingRow>('SELECT * FROM standings ORDER BY peer'),
    put: db.prepare<[string, number, number, number, number]>(`INSERT INTO standings VALUES (?, ?, ?, ?, ?) ON CONFLICT(peer) DO UPDATE SET
      stake = excluded.stake, reputation = excluded.reputation, slashed = excluded.slashed, blacklisted = excluded.blacklisted`),
    head: db.prepare<[], { seq: number; hash: string }>('SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1'),
    append: db.prepare<[number, number, string, string, number | null, string, string, string]>('INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
    from: db.prepare<[number], AuditRow>('SELECT * FROM audit WHERE seq >= ? ORDER BY seq'),
    used: db.prepare<[string], { seq: number }>('SELECT seq FROM evidence WHERE hash = ?'),
    use: db.prepare<[string, string, string, number]>('INSERT INTO evidence VALUES (?, ?, ?, ?)')
  }

  const get = (peer: string): PeerStanding => {
    const r = q.get.get(peer)
    return r === undefined ? initialStanding(peer, rules) : toStanding(r)
  }
  const put = (s: PeerStanding): void => {
    q.put.run(s.peer, s.stake, s.reputation, s.slashed, s.blacklisted ? 1 : 0)
  }
  // Only ever called inside a transaction, so the head it links to cannot move underneath it.
  const append = (e: Pick<LedgerEntry, 'kind' | 'peer' | 'amount' | 'data'>): LedgerEntry => {
    const entry = makeEntry(q.head.get() ?? null, { ...e, at: Date.now() })
    q.append.run(entry.seq, entry.at, entry.kind, entry.peer, entry.amount ?? null, JSON.stringify(entry.data), entry.prevHash, entry.hash)
    return entry
  }
  const blacklistIfNew = (before: PeerStanding, after: PeerStanding): void => {
    if (after.blacklisted && !before.blacklisted) {
      append({ kind: 'blacklist', peer: after.peer, data: { reputation: after.reputation, slashed: after.slashed } })
    }
  }
  // IMMEDIATE takes the write lock up front: a second process on the same file waits instead of forking the chain.
  const atomically = <T>(fn: () => T): T => db.transaction(fn).immediate()

  // `matches`: the peers whose receipts the checker's re-execution agreed with, kept in the log and passed on.
  const reject = (e: Evidence, id: string, reporter: string, reason: string, matches?: string[], unjudged?: boolean): SlashResult =>
    atomically(() => {
      append({
        kind: 'reject',
        peer: e.accused,
        data: { evidence: id, kind: e.kind, reporter, reason, detail: e.detail, ...(matches !== undefined ? { matches } : {}) }
      })
      return { slashed: false, amount: 0, reason, ...(matches !== undefined ? { matches } : {}), ...(unjudged === true ? { unjudged } : {}) }
    })

  return {
    async stake(peer, amount) {
      return atomically(() => {
        const s = applyStake(get(peer), amount)
        put(s)
        append({ kind: 'stake', peer, amount, data: { stake: s.stake } })
        return s
      })
    },

    async slash(e, reporter) {
      const wellFormed =
        KINDS.has(e?.kind) &&
        typeof e.accused === 'string' &&
        Array.isArray(e.receipts) &&
        e.receipts.every((r) => r instanceof Uint8Array) &&
        typeof e.detail === 'object' &&
        e.detail !== null
      if (!wellFormed) {
        throw new InputError('evidence needs a known kind, an accused peer id, receipts as bytes and a detail object')
      }
      const id = evidenceHash(e)
      if (reporter === e.accused) return reject(e, id, reporter, 'a peer cannot report itself')
      if (q.used.get(id) !== undefined) return reject(e, id, reporter, 'evidence already used')
      let verdict: Verdict
      try {
        verdict = await checker.check(e)
      } catch (err) {
        return reject(e, id, reporter, `checker failed: ${(err as Error).message}`, undefined, true)
      }
      if (!verdict.valid) return reject(e, id, reporter, `invalid evidence: ${verdict.reason}`, verdict.matches, verdict.unjudged)
      return atomically(() => {
        // Checked again under the lock: the same evidence may have been slashed while we awaited the checker.
        if (q.used.get(id) !== undefined) return reject(e, id, reporter, 'evidence already used')
        const before = get(e.accused)
        const { standing, amount, reward } = applySlash(before, rules)
        put(standing)
        // The reward goes only to a reporter with standing (staked, not blacklisted), as of now: an id
        // anyone can type (an HTTP caller's `reporter`) earns nothing, and that share is burned with the rest.
        const paid = reward > 0 && hasStanding(get(reporter))
        const data = {
          evidence: id,
          kind: e.kind,
          reporter,
          reason: verdict.reason,
          detail: e.detail,
          stake: standing.stake,
          reputation: standing.reputation,
          slashed: standing.slashed,
          ...(reward > 0 && !paid ? { rewardBurned: true } : {}),
          ...(verdict.matches !== undefined ? { matches: verdict.matches } : {})
        }
        const entry = append({ kind: 'slash', peer: e.accused, amount, data })
        q.use.run(id, e.accused, e.kind, entry.seq)
        if (paid) {
          const prev = get(reporter)
          const r = { ...prev, stake: prev.stake + reward }
          put(r)
          append({ kind: 'reward', peer: reporter, amount: reward, data: { evidence: id, accused: e.accused, stake: r.stake } })
        }
        blacklistIfNew(before, standing)
        return { slashed: true, amount, reason: verdict.reason, ...(verdict.matches !== undefined ? { matches: verdict.matches } : {}) }
      })
    },

    async observe(peer, ok) {
      return atomically(() => {
        const before = get(peer)
        const after = applyObservation(before, ok, rules)
        put(after)
        append({ kind: 'reputation', peer, data: { ok, reputation: after.reputation } })
        blacklistIfNew(before, after)
        return after
      })
    },

    async standing(peer) {
      return get(peer)
    },
    async standings() {
      return q.all.all().map(toStanding)
    },
    async isBlacklisted(peer) {
      return get(peer).blacklisted
    },
    async audit(fromSeq = 1) {
      return q.from.all(fromSeq).map(toEntry)
    },

    async verifyAudit() {
      // Streams the rows (the log only grows); a row whose data no longer parses is simply bad.
      const rows = q.from.iterate(1)
      return verifyChain(
        (function* () {
          for (const r of rows) {
            let e: LedgerEntry
            try {
              e = toEntry(r)
            } catch {
              e = { ...toEntry({ ...r, data: '{}' }), hash: '' }
            }
            yield e
          }
        })()
      )
    },

    async close() {
      db.close()
    }
  }
}
