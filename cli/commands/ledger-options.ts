/**
 * Where a relay keeps stakes and slashes, for `tessera relay` and `tessera up`: `sqlite` (a file
 * this operator controls) or `evm` (the TesseraStake contract on a chain; see relay/ledger-evm.ts).
 */
import { Option, type Command } from 'commander'
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
