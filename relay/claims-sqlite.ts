/**
 * Optimistic claims in the relay's SQLite file, beside the ledger: a claim is written when it is
 * posted and its settlement when it settles, so a relay that restarts audits the claims it had
 * accepted instead of forgetting them, and `GET /api/claims/:id` still answers for old ones.
 */
import Database from 'better-sqlite3'
import { claimFromJson, claimToJson } from '../shared/optimistic/claim-sink.js'
import type { ClaimStore, StoredClaim } from '../shared/optimistic/board.js'
import type { Settlement } from '../shared/client/types.js'

const SCHEMA = `
CREATE TABLE IF NOT EXISTS claims (
  id TEXT PRIMARY KEY, claim TEXT NOT NULL, submitted_at INTEGER NOT NULL,
  status TEXT NOT NULL, settlement TEXT, webhook TEXT);
`

interface Row {
  id: string
  claim: string
  submitted_at: number
  status: StoredClaim['status']
  settlement: string | null
  webhook: string | null
}

const toStored = (r: Row): StoredClaim => ({
  claim: claimFromJson(JSON.parse(r.claim)),
  submittedAt: r.submitted_at,
  status: r.status,
  ...(r.settlement !== null ? { settlement: JSON.parse(r.settlement) as Settlement } : {}),
  ...(r.webhook !== null ? { webhook: r.webhook } : {})
})

export function openSqliteClaims(path: string): ClaimStore & { close: () => void } {
  const db = new Database(path)
  db.pragma('journal_mode = WAL')
  db.exec(SCHEMA)
  const q = {
    put: db.prepare<[string, string, number]>("INSERT OR IGNORE INTO claims (id, claim, submitted_at, status) VALUES (?, ?, ?, 'pending')"),
    settle: db.prepare<[string, string, string]>('UPDATE claims SET status = ?, settlement = ? WHERE id = ?'),
    hook: db.prepare<[string, string]>('UPDATE claims SET webhook = ? WHERE id = ?'),
    get: db.prepare<[string], Row>('SELECT * FROM claims WHERE id = ?'),
    pending: db.prepare<[], Row>("SELECT * FROM claims WHERE status = 'pending' ORDER BY submitted_at")
  }
  return {
    put(claim, submittedAt) {
      q.put.run(claim.id, JSON.stringify(claimToJson(claim)), submittedAt)
    },
    settle(s) {
      q.settle.run(s.status, JSON.stringify(s), s.claim)
    },
    webhook(id, url) {
      q.hook.run(url, id)
    },
    get(id) {
      const r = q.get.get(id)
      return r === undefined ? undefined : toStored(r)
    },
    pending() {
      return q.pending.all().map(toStored)
    },
    close() {
      db.close()
    }
  }
}
