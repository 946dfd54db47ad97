/**
 * `tessera chain` — a local EVM chain (anvil) on 127.0.0.1 for the staking ledger, until Ctrl-C;
 * `--state` keeps its history across restarts. `tessera chain deploy` — deploys TesseraStake
 * (and ZK verifiers) to a node and writes .tessera/chain.json for the relay's EVM ledger.
 */
import type { Command } from 'commander'
import { Option } from 'commander'
import { chainKey, DEFAULT_KEY_SOURCE, startAnvil } from '../../relay/chain/anvil.js'
import { DEFAULT_DEPLOYMENT, DEFAULT_WITHDRAW_DELAY, deployTessera, type Deployment } from '../../relay/chain/deploy.js'
import { ZK_MODELS } from '../../shared/zk/model.js'
import { releaseZkWorkers } from '../../shared/zk/verify.js'
import { logger } from '../../shared/log.js'
import { CHAIN_PORT, CHAIN_RPC } from '../config.js'
import { int } from './options.js'

const log = logger('tessera:node:chain')

interface DeployFlags {
  rpc: string
  key: string
  out: string
  withdrawDelay: number
  zk?: string[]
}

export function registerChain(program: Command): void {
  const chain = program
    .command('chain')
    .description('run a local EVM chain (anvil) for the staking ledger, until Ctrl-C')
    .option('--port <n>', 'port on 127.0.0.1 (0: any free one)', int(0), CHAIN_PORT)
    .option('--state <file>', 'load the chain from this file if it exists, save it there on exit')
    .option('--block-time <s>', 'seconds per block (default: one block per transaction)', int(1))
    .option('--deploy', 'also deploy TesseraStake and write .tessera/chain.json')
    .action(async (o: { port: number; state?: string; blockTime?: number; deploy?: boolean }) => {
      const anvil = await startAnvil({ port: o.port, stateFile: o.state, blockTime: o.blockTime })
      console.log(`chain ${anvil.chainId} at ${anvil.url}${o.state !== undefined ? ` (state in ${o.state})` : ''}`)
      console.log(`dev account 0 key ${anvil.accounts[0]} (public knowledge: local use only)`)
      if (o.deploy === true) report(await deployTessera({ rpcUrl: anvil.url, chainId: anvil.chainId, privateKey: anvil.accounts[0] }), DEFAULT_DEPLOYMENT)
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve)
        process.once('SIGTERM', resolve)
      })
      await anvil.stop()
      log.info('chain stopped')
    })

  chain
    .command('deploy')
    .description('deploy TesseraStake (this key becomes the arbiter) and write the deployment JSON')
    .option('--rpc <url>', 'JSON-RPC URL of the node', CHAIN_RPC)
    .option(
      '--key <hex|ENV>',
      `private key, or the environment variable holding it (default ${DEFAULT_KEY_SOURCE}; ` + "anvil's dev key 0 on a local anvil)",
      DEFAULT_KEY_SOURCE
    )
    .option('--out <file>', 'where to write the deployment', DEFAULT_DEPLOYMENT)
    .option('--withdraw-delay <s>', 'seconds between a withdrawal request and its payout', int(0), DEFAULT_WITHDRAW_DELAY)
    .addOption(new Option('--zk <models...>', 'also deploy and register the Groth16 verifier of these seeded ZK models').choices(Object.keys(ZK_MODELS)))
    .action(async (o: DeployFlags) => {
      const { createPublicClient, http } = await import('viem')
      const chainId = await createPublicClient({ transport: http(o.rpc, { retryCount: 0 }) })
        .getChainId()
        .catch(() => undefined)
      // A local anvil's dev key is the obvious default there; anywhere else a key must be given.
      const key = chainKey(o.key, chainId)
      if (key !== o.key) log.info(`no ${DEFAULT_KEY_SOURCE}: using anvil's dev account 0`)
      try {
        const zk = []
        if (o.zk !== undefined) {
          const { seededZkModel, setupZkModel } = await import('../../host/zk/setup.js')
          for (const name of o.zk) {
            const s = await setupZkModel(seededZkModel(name))
            zk.push({ entry: s.entry, zkey: s.keys.zkey })
          }
        }
        report(await deployTessera({ rpcUrl: o.rpc, chainId, privateKey: key, out: o.out, withdrawDelay: o.withdrawDelay, zk }), o.out)
      } finally {
        await releaseZkWorkers()
      }
    })
}

function report(d: Deployment, out: string): void {
  console.log(`TesseraStake at ${d.stakeAddress} (block ${d.deployBlock}, arbiter ${d.arbiter}), ${d.gas} gas`)
  for (const z of d.zkModels) console.log(`  ${z.name}: verifier ${z.verifier}, commitment ${z.weightCommitment.slice(0, 12)}…`)
  console.log(`wrote ${out}`)
}
