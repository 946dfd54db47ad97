/**
 * `tessera chain` — a local EVM chain (anvil) on 127.0.0.1 for the staking ledger, until Ctrl-C;
 * `--state` keeps its history across restarts. `tessera chain deploy` — deploys TesseraStake
 * (and ZK verifiers) to a node and writes .tessera/chain.json for the relay's EVM ledger.
 * `tessera chain bind` — a node's own key binds its peer id to an EVM address (the only way it can
 * be paid rewards or withdraw as that peer); `tessera chain stake` — stakes from the operator's own address.
 */
import type { Command } from 'commander'
import { Option } from 'commander'
import { resolve } from 'node:path'
import { chainKey, DEFAULT_KEY_SOURCE, startAnvil } from '../../relay/chain/anvil.js'
import { DEFAULT_DEPLOYMENT, DEFAULT_WITHDRAW_DELAY, deployTessera, readDeployment, type Deployment } from '../../relay/chain/deploy.js'
import { InputError } from '../../shared/errors.js'
import type { EvidenceChecker } from '../../shared/ledger/types.js'
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
  arbiters?: string[]
  threshold?: number
}

export function registerChain(program: Command): void {
  const chain = program
    .command('chain')
    .description('run a local EVM chain (anvil) for the staking ledger, until Ctrl-C')
    .option('--port <n>', 'port on 127.0.0.1 (0: any free one)', int(0), CHAIN_PORT)
    .option('--state <file>', 'load the chain from this file if it exists, save it there on exit (best kept under .tessera/, which git ignores)')
    .option('--block-time <s>', 'seconds per block (default: one block per transaction)', int(1))
    .option('--deploy', 'also deploy TesseraStake and write .tessera/chain.json')
    .action(async (o: { port: number; state?: string; blockTime?: number; deploy?: boolean }) => {
      // The deployment file is JSON too: anvil would overwrite it with its state dump on exit.
      if (o.state !== undefined && resolve(o.state) === resolve(DEFAULT_DEPLOYMENT)) {
        throw new InputError(`--state ${o.state} is the deployment file; give the state its own, e.g. .tessera/anvil-state.json`)
      }
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
    .option('--arbiters <addresses>', "a federation: every relay's EVM address, comma-separated (default: this key's address alone)", (v: string) =>
      v.split(',').map((a) => a.trim())
    )
    .option('--threshold <m>', 'approvals of distinct arbiters a slash on receipt evidence needs (default 1)', int(1))
    .addOption(new Option('--zk <models...>', 'also deploy and register the Groth16 verifier of these seeded ZK models').choices(Object.keys(ZK_MODELS)))
    .action(async (o: DeployFlags) => {
      const { createPublicClient, getAddress, http, isAddress } = await import('viem')
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
        const arbiters = o.arbiters?.map((a) => {
          if (!isAddress(a)) throw new InputError(`--arbiters: ${a} is not an EVM address`)
          return getAddress(a)
        })
        const federation = { ...(arbiters !== undefined ? { arbiters } : {}), ...(o.threshold !== undefined ? { threshold: o.threshold } : {}) }
        report(await deployTessera({ rpcUrl: o.rpc, chainId, privateKey: key, out: o.out, withdrawDelay: o.withdrawDelay, zk, ...federation }), o.out)
      } finally {
        await releaseZkWorkers()
      }
    })

  registerBindAndStake(chain)
}

/** Binding and staking check no evidence: a checker that refuses all, should anything ask. */
const NO_EVIDENCE: EvidenceChecker = { check: async () => ({ valid: false, reason: 'tessera chain bind/stake checks no evidence' }) }

interface KeyFlags {
  chain: string
  key: string
}

async function openDeployed(f: KeyFlags) {
  const d = await readDeployment(f.chain)
  const { openEvmLedger } = await import('../../relay/ledger-evm.js')
  const privateKey = chainKey(f.key, d.chainId)
  return await openEvmLedger({ rpcUrl: d.rpcUrl, chainId: d.chainId, stakeAddress: d.stakeAddress, privateKey, fromBlock: d.deployBlock }, NO_EVIDENCE)
}

function registerBindAndStake(chain: Command): void {
  const keyHelp = `private key or the environment variable holding it (default ${DEFAULT_KEY_SOURCE}; anvil's dev key 0 on a local anvil)`
  chain
    .command('bind <owner>')
    .description("bind a peer id to the EVM address <owner>, signed by the peer's own key, and record it (the arbiter's key sends it)")
    .option('--peer-key <file>', "the node's libp2p key file (tessera node --key-file): signs the binding")
    .option('--peer <id>', 'with --signature: the peer id whose key signed')
    .option('--signature <hex>', "the peer's signature, made elsewhere with --sign-only")
    .option('--sign-only', 'print the signature (to send to the arbiter) instead of recording it')
    .option('--chain <file>', 'the deployment', DEFAULT_DEPLOYMENT)
    .option('--key <hex|ENV>', `the arbiter's ${keyHelp}`, DEFAULT_KEY_SOURCE)
    .action(async (owner: string, o: KeyFlags & { peerKey?: string; peer?: string; signature?: string; signOnly?: boolean }) => {
      const { getAddress, isAddress, hexToBytes, toHex } = await import('viem')
      if (!isAddress(owner)) throw new InputError(`${owner} is not an EVM address`)
      const { bindingMessage } = await import('../../relay/ledger-evm.js')
      let peer: string
      let signature: Uint8Array
      if (o.peerKey !== undefined) {
        const { readFile } = await import('node:fs/promises')
        const { privateKeyFromProtobuf } = await import('@libp2p/crypto/keys')
        const { peerIdFromPrivateKey } = await import('@libp2p/peer-id')
        const key = privateKeyFromProtobuf(await readFile(o.peerKey))
        peer = peerIdFromPrivateKey(key).toString()
        const d = await readDeployment(o.chain)
        signature = await key.sign(bindingMessage(peer, getAddress(owner), d.chainId, d.stakeAddress))
      } else if (o.peer !== undefined && o.signature !== undefined && /^0x[0-9a-fA-F]+$/.test(o.signature)) {
        peer = o.peer
        signature = hexToBytes(o.signature as `0x${string}`)
      } else {
        throw new InputError('give --peer-key <file>, or --peer <id> with --signature <0x…>')
      }
      if (o.signOnly === true) {
        console.log(`tessera chain bind ${getAddress(owner)} --peer ${peer} --signature ${toHex(signature)}`)
        return
      }
      const l = await openDeployed(o)
      try {
        await l.bind(peer, getAddress(owner), signature)
        console.log(`${peer} is bound to ${getAddress(owner)}`)
      } finally {
        await l.close()
      }
    })

  chain
    .command('stake <peer> <amount>')
    .description("stake <amount> ledger units (1 unit = 1e15 wei) for a peer from this key's own address; the arbiter's stake is a locked grant")
    .option('--chain <file>', 'the deployment', DEFAULT_DEPLOYMENT)
    .option('--key <hex|ENV>', `the funding ${keyHelp}`, DEFAULT_KEY_SOURCE)
    .action(async (peer: string, amount: string, o: KeyFlags) => {
      const n = Number(amount)
      if (!Number.isFinite(n) || n <= 0) throw new InputError(`expected a positive amount, not ${amount}`)
      const l = await openDeployed(o)
      try {
        const s = await l.stake(peer, n)
        const bound = await l.boundTo(peer)
        console.log(JSON.stringify({ ...s, bound: bound ?? null, from: l.account }))
      } finally {
        await l.close()
      }
    })
}

function report(d: Deployment, out: string): void {
  const who = d.arbiters.length === 1 ? `arbiter ${d.arbiter}` : `arbiters ${d.arbiters.join(', ')}, ${d.threshold} approvals slash`
  console.log(`TesseraStake at ${d.stakeAddress} (block ${d.deployBlock}, ${who}), ${d.gas} gas`)
  for (const z of d.zkModels) console.log(`  ${z.name}: verifier ${z.verifier}, commitment ${z.weightCommitment.slice(0, 12)}…`)
  console.log(`wrote ${out}`)
}
