/**
 * `tessera stake <peer-id> <amount>` — the operator stakes a peer in the relay's SQLite ledger (the
 * relay grants none on its own: relay/config.ts RELAY_DEFAULTS.joinStake says why). Safe while the
 * relay runs: the ledger takes its write lock per change. Prints the peer's standing as JSON.
 */
import { mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { Command } from 'commander'
import { InvalidArgumentError } from 'commander'
import { peerIdFromString } from '@libp2p/peer-id'
import { openSqliteLedger } from '../../relay/ledger-sqlite.js'
import { RELAY_DEFAULTS } from '../../relay/config.js'
import type { EvidenceChecker } from '../../shared/ledger/types.js'

/** Staking checks no evidence: a checker that refuses all, should anything ask. */
const NO_EVIDENCE: EvidenceChecker = { check: async () => ({ valid: false, reason: 'tessera stake checks no evidence' }) }

/** A peer id as libp2p prints it: a truncated or mangled paste fails here instead of staking a string. */
export function peerIdArg(v: string): string {
  try {
    return peerIdFromString(v).toString()
  } catch {
    throw new InvalidArgumentError(`${v} is not a libp2p peer id (12D3KooW…, as tessera node prints it)`)
  }
}

export function stakeAmount(v: string): number {
  const n = Number(v)
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive amount')
  return n
}

export function registerStake(program: Command): void {
  program
    .command('stake')
    .description("stake a peer in the relay's SQLite ledger: staked peers may witness, vote and earn rewards; the relay grants no stake by itself")
    .argument('<peer-id>', "the peer's libp2p id (tessera node prints it on its ready line)", peerIdArg)
    .argument('<amount>', 'stake to add', stakeAmount)
    .option('--ledger-file <file>', "the relay's SQLite ledger (tessera relay --ledger-file)", RELAY_DEFAULTS.ledger)
    .option('--db <file>', 'the same as --ledger-file')
    .action(async (peer: string, amount: number, o: { ledgerFile: string; db?: string }) => {
      const file = o.db ?? o.ledgerFile
      await mkdir(dirname(file), { recursive: true })
      const ledger = await openSqliteLedger(file, NO_EVIDENCE)
      try {
        const s = await ledger.stake(peer, amount)
        console.log(JSON.stringify(s))
      } finally {
        await ledger.close()
      }
    })
}
