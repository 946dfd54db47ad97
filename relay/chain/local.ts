/**
 * The chain `tessera up --ledger evm` runs against: a local anvil whose state is kept in a file
 * (so stakes and slashes survive a restart), with TesseraStake deployed once and reused while
 * its code is on the chain. anvil's dev account 0 is the arbiter: a local chain only. A deployment
 * record whose contract the chain no longer holds (the state file lost or reset) is refused, not
 * silently replaced by an empty contract at the same address: stakes and history would be gone.
 */
import { existsSync } from 'node:fs'
import { createPublicClient, http, type Hex } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { ConfigError } from '../../shared/errors.js'
import { logger } from '../../shared/log.js'
import type { EvmLedgerConfig } from '../ledger-evm.js'
import { startAnvil, type Anvil } from './anvil.js'
import { deployTessera, readDeployment, type Deployment } from './deploy.js'
import { CHAIN_DEFAULTS } from '../config.js'

const log = logger('tessera:chain')

export const LOCAL_STATE = CHAIN_DEFAULTS.localState
export const LOCAL_DEPLOYMENT = CHAIN_DEFAULTS.localDeployment

export interface LocalChain {
  anvil: Anvil
  deployment: Deployment
  config: EvmLedgerConfig
  /** One ledger configuration per arbiter (each relay of a federation its own key); `config` is the first. */
  configs: EvmLedgerConfig[]
}

/**
 * `arbiters` > 1: a federation's contract, dev accounts 0…n−1 its arbiters, a majority's approvals
 * needed for a slash on receipts; recorded in its own deployment file beside the single operator's.
 */
export async function startLocalChain(o: { stateFile?: string; deploymentFile?: string; arbiters?: number } = {}): Promise<LocalChain> {
  const stateFile = o.stateFile ?? LOCAL_STATE
  const n = o.arbiters ?? 1
  const file = o.deploymentFile ?? (n === 1 ? LOCAL_DEPLOYMENT : LOCAL_DEPLOYMENT.replace(/\.json$/, `-${n}-arbiters.json`))
  const anvil = await startAnvil({ stateFile })
  try {
    const key = anvil.accounts[0]
    let deployment: Deployment | undefined
    if (existsSync(file)) {
      const d = await readDeployment(file)
      const client = createPublicClient({ transport: http(anvil.url, { retryCount: 0 }) })
      const code = await client.getCode({ address: d.stakeAddress })
      const head = await client.getBlockNumber({ cacheTime: 0 })
      // The port is new each run; the contract and its history are what the state file kept.
      if (d.chainId !== anvil.chainId || code === undefined || code === '0x' || BigInt(d.deployBlock) > head) {
        throw new ConfigError(
          `${file} records TesseraStake at ${d.stakeAddress} (chain ${d.chainId}, block ${d.deployBlock}) but the chain loaded from ${stateFile} ` +
            `(chain ${anvil.chainId}, at block ${head}) does not hold it: its stakes and history are gone. ` +
            `Restore ${stateFile}, or to start a new, empty ledger on purpose delete ${file}`
        )
      }
      deployment = { ...d, rpcUrl: anvil.url }
    }
    if (n > anvil.accounts.length) throw new ConfigError(`a local chain has ${anvil.accounts.length} dev accounts: at most that many arbiters, not ${n}`)
    const keys = anvil.accounts.slice(0, n)
    if (deployment === undefined) {
      const federation = n > 1 ? { arbiters: keys.map((k) => privateKeyToAccount(k as Hex).address), threshold: Math.floor(n / 2) + 1 } : {}
      deployment = await deployTessera({ rpcUrl: anvil.url, chainId: anvil.chainId, privateKey: key, out: file, ...federation })
      log.info(`deployed TesseraStake at ${deployment.stakeAddress} (${deployment.gas} gas)`)
    } else {
      log.info(`TesseraStake at ${deployment.stakeAddress}, state from ${stateFile}`)
    }
    const at = deployment
    const configs = keys.map((k) => ({ rpcUrl: anvil.url, chainId: anvil.chainId, stakeAddress: at.stakeAddress, privateKey: k, fromBlock: at.deployBlock }))
    return { anvil, deployment, config: configs[0], configs }
  } catch (err) {
    await anvil.stop()
    throw err
  }
}
