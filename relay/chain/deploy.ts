/**
 * Deploys TesseraStake (the deploying account becomes the arbiter unless another is named) and,
 * for each ZK model given, snarkjs's Groth16 verifier for its proving key, registered with the
 * model's weight commitment and public-signal layout. Writes the deployment as JSON
 * (default .tessera/chain.json) for `openEvmLedger` and the CLI.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { Address, Hex } from 'viem'
import { InputError } from '../../shared/errors.js'
import { DEFAULT_RULES, type LedgerRules } from '../../shared/ledger/types.js'
import type { ZkModelEntry } from '../../shared/zk/types.js'
import { publicSignalCount } from '../../shared/zk/verify.js'
import { connect, deployContract, write, zkModelId, type ChainConfig, type Clients } from './clients.js'
import { stakeArtifact, verifierArtifact } from './compile.js'
import { CHAIN_DEFAULTS } from '../config.js'

/**
 * The deployment file, relative to the working directory (where the relay's --chain looks too);
 * kept relative so help texts show `.tessera/chain.json`, not this machine's path.
 */
export const DEFAULT_DEPLOYMENT = CHAIN_DEFAULTS.deploymentFile

export const DEFAULT_WITHDRAW_DELAY = CHAIN_DEFAULTS.withdrawDelayS

export interface ZkVerifierDeployment {
  name: string
  model: Hex
  verifier: Address
  weightCommitment: string
  outputs: number
  signals: number
  gas: number
}

export interface Deployment {
  rpcUrl: string
  chainId: number
  stakeAddress: Address
  /** The first arbiter (the deploying account unless others were named). */
  arbiter: Address
  /** Every arbiter: one relay's key each, in a federation. */
  arbiters: Address[]
  /** Approvals a slash on receipt evidence needs. */
  threshold: number
  deployBlock: number
  withdrawDelay: number
  slashBps: number
  rewardBps: number
  blacklistAfterSlashes: number
  zkModels: ZkVerifierDeployment[]
  gas: number
}

export interface DeployOptions extends Omit<ChainConfig, 'chainId'> {
  /** Default: whatever the node reports. */
  chainId?: number
  /** Default: the deploying account. */
  arbiter?: Address
  /** A federation's arbiters, one per relay (overrides `arbiter`). */
  arbiters?: Address[]
  /** Distinct arbiters whose approvals a slash on receipt evidence needs; default 1. */
  threshold?: number
  rules?: LedgerRules
  withdrawDelay?: number
  /** ZK models whose verifiers to deploy and register: the manifest entry and the proving key. */
  zk?: Array<{ entry: ZkModelEntry; zkey: string }>
  /** Where to write the deployment JSON; null: nowhere. Default .tessera/chain.json. */
  out?: string | null
  cacheDir?: string
}

const bps = (f: number, what: string): number => {
  if (!(f >= 0 && f <= 1)) throw new InputError(`${what} must be within [0, 1], not ${f}`)
  return Math.round(f * 10_000)
}

export async function deployTessera(o: DeployOptions): Promise<Deployment> {
  const chainId = o.chainId ?? (await probeChainId(o.rpcUrl))
  const c = await connect({ ...o, chainId })
  const rules = o.rules ?? DEFAULT_RULES
  const arbiters = o.arbiters ?? [o.arbiter ?? c.account.address]
  const threshold = o.threshold ?? 1
  if (!(Number.isInteger(threshold) && threshold >= 1 && threshold <= arbiters.length)) {
    throw new InputError(`a threshold of ${threshold} approvals cannot be met by ${arbiters.length} arbiter${arbiters.length === 1 ? '' : 's'}`)
  }
  const withdrawDelay = o.withdrawDelay ?? DEFAULT_WITHDRAW_DELAY
  const params = {
    slashBps: bps(rules.slashFraction, 'slashFraction'),
    rewardBps: bps(rules.rewardFraction, 'rewardFraction'),
    blacklistAfterSlashes: rules.blacklistAfterSlashes
  }
  const args = [arbiters, threshold, params.slashBps, params.rewardBps, params.blacklistAfterSlashes, BigInt(withdrawDelay)]
  const { address, receipt } = await deployContract(c, await stakeArtifact(o), args)
  const zkModels: ZkVerifierDeployment[] = []
  for (const z of o.zk ?? []) zkModels.push(await deployZkVerifier(c, address, z, o))
  const d: Deployment = {
    rpcUrl: o.rpcUrl,
    chainId,
    stakeAddress: address,
    arbiter: arbiters[0],
    arbiters,
    threshold,
    deployBlock: Number(receipt.blockNumber),
    withdrawDelay,
    ...params,
    zkModels,
    gas: Number(receipt.gasUsed) + zkModels.reduce((s, z) => s + z.gas, 0)
  }
  const out = o.out === undefined ? DEFAULT_DEPLOYMENT : o.out
  if (out !== null) {
    await mkdir(dirname(out), { recursive: true })
    await writeFile(out, JSON.stringify(d, null, 2) + '\n')
  }
  return d
}

/** Deploys the model's verifier and registers it (the account must be the arbiter). */
export async function deployZkVerifier(
  c: Clients,
  stakeAddress: Address,
  z: { entry: ZkModelEntry; zkey: string },
  o: { cacheDir?: string } = {}
): Promise<ZkVerifierDeployment> {
  const verifier = await deployContract(c, await verifierArtifact(z.zkey, o))
  const outputs = z.entry.shape.layers[z.entry.shape.layers.length - 1].outputs
  const signals = publicSignalCount(z.entry)
  const model = zkModelId(z.entry.name)
  const { abi } = await stakeArtifact(o)
  const args = [model, verifier.address, BigInt(z.entry.weightCommitment), outputs, signals]
  const r = await write(c, { address: stakeAddress, abi, functionName: 'registerZkModel', args })
  const gas = Number(verifier.receipt.gasUsed + r.gasUsed)
  return { name: z.entry.name, model, verifier: verifier.address, weightCommitment: z.entry.weightCommitment, outputs, signals, gas }
}

export async function readDeployment(path = DEFAULT_DEPLOYMENT): Promise<Deployment> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as Deployment
  } catch (err) {
    throw new InputError(`no deployment at ${path} (${(err as Error).message}): run \`tessera chain deploy\` first`)
  }
}

async function probeChainId(rpcUrl: string): Promise<number> {
  const { createPublicClient, http } = await import('viem')
  try {
    return await createPublicClient({ transport: http(rpcUrl, { retryCount: 0 }) }).getChainId()
  } catch (err) {
    throw new InputError(`could not reach an EVM node at ${rpcUrl}: ${(err as Error).message.split('\n')[0]}`)
  }
}
