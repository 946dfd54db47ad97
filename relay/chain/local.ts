/**
 * The chain `tessera up --ledger evm` runs against: a local anvil whose state is kept in a file
 * (so stakes and slashes survive a restart), with TesseraStake deployed once and reused while
 * its code is on the chain. anvil's dev account 0 is the arbiter: a local chain only.
 */
import { existsSync } from 'node:fs'
import { createPublicClient, http } from 'viem'
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
}

export async function startLocalChain(o: { stateFile?: string; deploymentFile?: string } = {}): Promise<LocalChain> {
  const stateFile = o.stateFile ?? LOCAL_STATE
  const file = o.deploymentFile ?? LOCAL_DEPLOYMENT
  const anvil = await startAnvil({ stateFile })
  try {
    const key = anvil.accounts[0]
    let deployment: Deployment | undefined
    if (existsSync(file)) {
      const d = await readDeployment(file)
      const code = await createPublicClient({ transport: http(anvil.url, { retryCount: 0 }) }).getCode({ address: d.stakeAddress })
      // The port is new each run; the contract and its history are what the state file kept.
      if (d.chainId === anvil.chainId && code !== undefined && code !== '0x') deployment = { ...d, rpcUrl: anvil.url }
      else log.info(`${file} names a contract this chain does not hold (${stateFile} was reset?): deploying anew`)
    }
    if (deployment === undefined) {
      deployment = await deployTessera({ rpcUrl: anvil.url, chainId: anvil.chainId, privateKey: key, out: file })
      log.info(`deployed TesseraStake at ${deployment.stakeAddress} (${deployment.gas} gas)`)
    } else {
      log.info(`TesseraStake at ${deployment.stakeAddress}, state from ${stateFile}`)
    }
    const config = { rpcUrl: anvil.url, chainId: anvil.chainId, stakeAddress: deployment.stakeAddress, privateKey: key, fromBlock: deployment.deployBlock }
    return { anvil, deployment, config }
  } catch (err) {
    await anvil.stop()
    throw err
  }
}
