/**
 * Where a relay keeps stakes and slashes, for `tessera relay` and `tessera up`: `sqlite` (a file
 * this operator controls) or `evm` (the TesseraStake contract on a chain; see relay/ledger-evm.ts).
 */
import { readFile } from 'node:fs/promises'
import { Option, type Command } from 'commander'
import { peerIdFromString } from '@libp2p/peer-id'
import { InputError } from '../../shared/errors.js'
import { CHAIN_DEFAULTS, RELAY_DEFAULTS } from '../../relay/config.js'
import type { EvmLedgerConfig } from '../../relay/ledger-evm.js'

export interface LedgerFlags {
  ledger: 'sqlite' | 'evm'
  ledgerFile: string
  chain?: string
  chainKey?: string
}

export function ledgerOptions(cmd: Command, o: { deployment: boolean }): Command {
  cmd
    .addOption(
      new Option('--ledger <kind>', 'where stakes, slashes and the audit log are kept: sqlite (a file) or evm (a chain)')
        .choices(['sqlite', 'evm'])
        .default('sqlite')
    )
    .option('--ledger-file <file>', 'SQLite file of the ledger (sqlite) and of pending optimistic claims (both kinds)', RELAY_DEFAULTS.ledger)
  if (o.deployment) {
    const keyHelp = "evm: the arbiter's private key, or the environment variable holding it (on a local anvil, its dev key 0 if unset)"
    cmd
      .option('--chain <file>', 'evm: the deployment written by tessera chain deploy', CHAIN_DEFAULTS.deploymentFile)
      .option('--chain-key <hex|ENV>', keyHelp, CHAIN_DEFAULTS.keySource)
  }
  return cmd
}

/** The EVM ledger's configuration from a deployment file and a key source. */
export async function evmConfig(f: LedgerFlags): Promise<EvmLedgerConfig> {
  const [{ readDeployment }, { chainKey }] = await Promise.all([import('../../relay/chain/deploy.js'), import('../../relay/chain/anvil.js')])
  if (f.chain === undefined) throw new InputError('--ledger evm needs --chain <deployment file>')
  const d = await readDeployment(f.chain)
  return { rpcUrl: d.rpcUrl, chainId: d.chainId, stakeAddress: d.stakeAddress, privateKey: chainKey(f.chainKey, d.chainId), fromBlock: d.deployBlock }
}

/**
 * `--stake-file`: the peers the relay stakes on their first announce, and how much. JSON
 * (`{ "12D3…": 100 }` or `[{ "peer": "12D3…", "amount": 100 }]`) or lines `PEER-ID AMOUNT`
 * (`#` starts a comment). Every id and amount is checked, so a typo fails the start, not a peer.
 */
export async function readStakeFile(file: string): Promise<Map<string, number>> {
  const text = await readFile(file, 'utf8')
  let pairs: Array<[unknown, unknown]>
  if (/^\s*[[{]/.test(text)) {
    let j: unknown
    try {
      j = JSON.parse(text)
    } catch (err) {
      throw new InputError(`${file} is not valid JSON: ${(err as Error).message}`)
    }
    pairs = Array.isArray(j)
      ? j.map((e) => [(e as { peer?: unknown })?.peer, (e as { amount?: unknown })?.amount])
      : Object.entries(j as Record<string, unknown>)
  } else {
    pairs = text
      .split('\n')
      .map((l) => l.replace(/#.*/, '').trim())
      .filter((l) => l !== '')
      .map((l) => {
        const [peer, amount, ...rest] = l.split(/\s+/)
        if (rest.length > 0) throw new InputError(`${file}: "${l}" should be PEER-ID AMOUNT`)
        return [peer, amount === undefined ? undefined : Number(amount)]
      })
  }
  const out = new Map<string, number>()
  for (const [peer, amount] of pairs) {
    let id: string
    try {
      id = peerIdFromString(String(peer)).toString()
    } catch {
      throw new InputError(`${file}: ${String(peer)} is not a libp2p peer id`)
    }
    if (typeof amount !== 'number' || !Number.isFinite(amount) || amount <= 0) throw new InputError(`${file}: the stake of ${id} must be a positive number`)
    out.set(id, amount)
  }
  return out
}
