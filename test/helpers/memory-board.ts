/**
 * The claim board over an in-process network, wired as relay/relay.ts wires it: the real SQLite
 * ledger re-checking every piece of evidence, a cached link to it, the board dialing watchers
 * and referees through the network's dialer. All board construction is here, so a change to
 * its options is one edit.
 */
import { join } from 'node:path'
import { ClaimBoard } from '../../shared/optimistic/board.js'
import { cachedLedgerLink, type LedgerLink } from '../../shared/client/ledger-link.js'
import { ledgerEvidenceChecker } from '../../relay/evidence.js'
import type { Evidence, Ledger } from '../../shared/ledger/types.js'
import { openSqliteLedger } from '../../relay/ledger-sqlite.js'
import { TEST_TIMEOUTS } from './memory-client.js'
import type { MemoryNet } from './memory-net.js'
import { tempDir } from './paths.js'
import type { ModelRunners } from './memory-model.js'
import type { HopOutput } from '../../shared/runner.js'
import type { Reexecute } from '../../shared/verify/reexec.js'

/** What an operator stakes a peer with (relay/config.ts RELAY_DEFAULTS.operatorStake; `tessera up` does it for its nodes). */
export const JOIN_STAKE = 100

/**
 * The relay's arbiter over the model's honest runners (native-node/reexec.ts does the same over a
 * relay's shard files): one fresh session per shard, from position 0. `runs` counts re-executions.
 */
export function modelReexecute(model: ModelRunners): Reexecute & { runs: number } {
  const f = (async ({ root, layers, inputs }) => {
    if (root !== model.manifest.root) return undefined
    const peer = await model.forPeer(layers).catch(() => undefined)
    if (peer === undefined) return undefined // layers off the shard boundaries: no node serves them
    f.runs++
    const sessions = peer.runners.map((r) => r.open())
    try {
      let out: HopOutput = await sessions[0].forward(inputs)
      for (const s of sessions.slice(1)) out = await s.forward({ hidden: out.data, seq: out.seq })
      return out
    } finally {
      for (const s of sessions) s.close()
    }
  }) as Reexecute & { runs: number }
  f.runs = 0
  return f
}

export interface BoardRig {
  board: ClaimBoard
  ledger: Ledger
  link: LedgerLink
  /** Every piece of evidence handed to the ledger, in order. */
  reports: Evidence[]
  close: () => Promise<void>
}

/**
 * `random` draws watchers and referees' order (default: always the first, the cheapest
 * candidate, so tests choose who watches by the speeds they advertise); `revealMs` is how long
 * a dispute party has to answer each reveal. Every peer on the network now, and each that joins
 * later, is staked; a peer the ledger blacklists drops out of the network's listings.
 */
export async function memoryBoard(net: MemoryNet, o: { revealMs?: number; random?: () => number; seededDraws?: boolean } = {}): Promise<BoardRig> {
  let ledger: Ledger | undefined
  // The relay's own rules: a re-execution decides where the evidence carries the hop's inputs; else a witness counts only when staked.
  const checker = ledgerEvidenceChecker({ standing: async (p) => await ledger!.standing(p), reexecute: modelReexecute(net.model) })
  ledger = await openSqliteLedger(join(tempDir('memnet-ledger'), 'ledger.sqlite'), checker)
  const l = ledger
  for (const p of net.peers) await l.stake(p.id, JOIN_STAKE)
  net.onJoin = async (p) => {
    await l.stake(p.id, JOIN_STAKE)
    await cached.refresh() // the relay refreshes its view every second; here at once
  } // a newcomer, as the relay's registry onJoin stakes it
  const cached = cachedLedgerLink({
    standings: async () => await l.standings(),
    slash: async (e) => await l.slash(e, 'test-board'),
    observe: async (peer, ok) => await l.observe(peer, ok)
  })
  await cached.refresh()
  net.excluded = (peer) => cached.excluded(peer) // the registry lists no blacklisted peer
  const reports: Evidence[] = []
  const link: LedgerLink = {
    ...cached,
    report: async (e) => {
      reports.push(e)
      return await cached.report(e)
    }
  }
  const board = new ClaimBoard({
    dialer: net.dialer,
    peers: async () => await net.directory.list(),
    find: async (p) => net.find(p),
    ledger: link,
    timeouts: TEST_TIMEOUTS,
    random: o.random ?? (() => 0),
    seededDraws: o.seededDraws,
    // Left out, not undefined, when not given: the board's own default applies.
    ...(o.revealMs !== undefined ? { revealMs: o.revealMs } : {})
  })
  return {
    board,
    ledger: l,
    link,
    reports,
    close: async () => {
      board.close()
      net.onJoin = undefined // the network may outlive its board
      net.excluded = undefined
      await l.close()
    }
  }
}
