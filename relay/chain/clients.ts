/**
 * viem clients for a Tessera chain, the key source, peer and model ids, and errors that say what
 * went wrong: a revert by its custom error's name, missing funds, a wrong chain, no node.
 */
import {
  BaseError,
  ContractFunctionRevertedError,
  createPublicClient,
  createWalletClient,
  defineChain,
  encodeFunctionData,
  HttpRequestError,
  InsufficientFundsError,
  keccak256,
  NonceTooLowError,
  SocketClosedError,
  TimeoutError,
  toBytes,
  http,
  type Abi,
  type Address,
  type Chain,
  type Hex,
  type PublicClient,
  type TransactionReceipt,
  type WalletClient,
  type Account
} from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { InputError, TesseraError } from '../../shared/errors.js'
import { CHAIN_DEFAULTS } from '../config.js'

export interface ChainConfig {
  rpcUrl: string
  chainId: number
  /** A hex private key, or the name of the environment variable holding one (optionally `env:NAME`). */
  privateKey: string
  /** Blocks a write waits for (1: its own block). */
  confirmations?: number
  pollingIntervalMs?: number
}

export interface Clients {
  chain: Chain
  account: Account
  public: PublicClient
  wallet: WalletClient
  confirmations: number
}

/** keccak256 of the libp2p peer id string: how the contract names a peer. */
export const peerKey = (peer: string): Hex => keccak256(toBytes(peer))
/** keccak256 of a ZK model's name: its id in the contract's registry. */
export const zkModelId = (name: string): Hex => keccak256(toBytes(name))

export function resolveKey(source: string): Hex {
  if (/^0x[0-9a-fA-F]{64}$/.test(source)) return source as Hex
  const name = source.replace(/^env:/, '')
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
    throw new InputError('a chain key must be a 0x-prefixed 32-byte hex key or the name of an environment variable holding one')
  }
  const v = process.env[name]
  if (v === undefined || v === '') throw new InputError(`the environment variable ${name} (the chain key) is not set`)
  if (!/^0x[0-9a-fA-F]{64}$/.test(v)) throw new InputError(`the environment variable ${name} does not hold a 0x-prefixed 32-byte hex key`)
  return v as Hex
}

/** Clients for `rpcUrl`; refuses a node whose chain id is not the expected one. */
export async function connect(c: ChainConfig): Promise<Clients> {
  const nativeCurrency = { name: 'Ether', symbol: 'ETH', decimals: 18 }
  const chain = defineChain({ id: c.chainId, name: `tessera-${c.chainId}`, nativeCurrency, rpcUrls: { default: { http: [c.rpcUrl] } } })
  // retryCount 0: a revert is final, and viem would otherwise retry it for ~1 s.
  const transport = http(c.rpcUrl, { retryCount: 0, timeout: CHAIN_DEFAULTS.rpcTimeoutMs })
  const pollingInterval = c.pollingIntervalMs ?? CHAIN_DEFAULTS.pollingIntervalMs
  const account = privateKeyToAccount(resolveKey(c.privateKey))
  const pub = createPublicClient({ chain, transport, pollingInterval })
  const wallet = createWalletClient({ chain, transport, account, pollingInterval })
  let id: number
  try {
    id = await pub.getChainId()
  } catch (err) {
    throw chainError(err, `reach ${c.rpcUrl}`)
  }
  if (id !== c.chainId) throw new InputError(`the node at ${c.rpcUrl} is on chain ${id}, not ${c.chainId}: check the RPC URL or the chain id`)
  return { chain, account, public: pub, wallet, confirmations: Math.max(1, c.confirmations ?? CHAIN_DEFAULTS.confirmations) }
}

/** The custom error a call reverted with (e.g. 'EvidenceUsed'), if that is what happened. */
export function revertName(err: unknown): string | undefined {
  if (!(err instanceof BaseError)) return undefined
  const r = err.walk((e) => e instanceof ContractFunctionRevertedError)
  return r instanceof ContractFunctionRevertedError ? (r.data?.errorName ?? r.reason ?? 'reverted') : undefined
}

/** A TesseraError for a failed chain operation; `what` says what was being done. */
export function chainError(err: unknown, what: string): TesseraError {
  if (err instanceof TesseraError) return err
  if (err instanceof BaseError) {
    const name = revertName(err)
    if (name !== undefined) {
      const r = err.walk((e) => e instanceof ContractFunctionRevertedError) as ContractFunctionRevertedError
      const args = r.data?.args !== undefined && r.data.args.length > 0 ? `(${r.data.args.map(String).join(', ')})` : ''
      return new TesseraError('CHAIN_REVERT', `${what} reverted: ${name}${args}`)
    }
    if (err.walk((e) => e instanceof InsufficientFundsError) !== null) {
      return new InputError(`${what} failed: the account has not enough ETH for the value and gas; fund it first`)
    }
    if (err.walk((e) => e instanceof HttpRequestError) !== null) {
      return new TesseraError('CHAIN_UNREACHABLE', `could not ${what}: the RPC node does not answer (${err.shortMessage})`)
    }
    return new TesseraError('CHAIN', `${what} failed: ${err.shortMessage}`)
  }
  return new TesseraError('CHAIN', `${what} failed: ${(err as Error)?.message ?? String(err)}`)
}

export interface Write {
  address: Address
  abi: Abi
  functionName: string
  args?: readonly unknown[]
  value?: bigint
  gas?: bigint
}

/** No answer from the node (a dropped connection, a time-out): the request may or may not have arrived. */
const transient = (err: unknown): boolean =>
  err instanceof BaseError && err.walk((e) => e instanceof HttpRequestError || e instanceof TimeoutError || e instanceof SocketClosedError) !== null

/**
 * The node already holds this transaction ("already known", "already imported") or its nonce is
 * used: an earlier send got through. eth_sendRawTransaction's errors come back as plain RPC errors
 * (viem maps them to its node errors only for the calls it prepares itself), so this applies viem's
 * own rule for NonceTooLowError, its `nodeMessage`, to the node's `details` anywhere in the chain.
 */
const alreadySent = (err: unknown): boolean =>
  err instanceof BaseError && err.walk((e) => e instanceof BaseError && NonceTooLowError.nodeMessage.test((e.details ?? '').toLowerCase())) !== null

/**
 * Sends a contract call and waits for its receipt; throws (by the revert's name where there is
 * one) otherwise. The call is simulated first, so a revert is refused with the contract's custom
 * error before anything is sent. The transaction is signed here and its hash known up front: when
 * the node does not answer, the same bytes are sent again (a transaction that did arrive is then
 * "already known" or its nonce used), so a lost answer never sends a stake or a slash twice.
 */
export async function write(c: Clients, w: Write): Promise<TransactionReceipt> {
  const call = { account: c.account, address: w.address, abi: w.abi, functionName: w.functionName, args: w.args, value: w.value }
  let signed: Hex
  try {
    await c.public.simulateContract(call)
    const data = encodeFunctionData({ abi: w.abi, functionName: w.functionName, args: w.args })
    const request = await c.wallet.prepareTransactionRequest({ chain: c.chain, account: c.account, to: w.address, data, value: w.value, gas: w.gas })
    signed = await c.wallet.signTransaction({ ...request, chain: c.chain, account: c.account } as Parameters<WalletClient['signTransaction']>[0])
  } catch (err) {
    throw Object.assign(chainError(err, w.functionName), { cause: err })
  }
  const hash = keccak256(signed)
  for (let attempt = 1; ; attempt++) {
    try {
      await c.public.sendRawTransaction({ serializedTransaction: signed })
      break
    } catch (err) {
      // An earlier try got through after all: wait for it like any other.
      if (attempt > 1 && alreadySent(err)) break
      if (!transient(err) || attempt === CHAIN_DEFAULTS.sendTries) throw Object.assign(chainError(err, w.functionName), { cause: err })
      await new Promise((resolve) => setTimeout(resolve, CHAIN_DEFAULTS.sendBackoffMs * 2 ** attempt))
    }
  }
  const receipt = await c.public.waitForTransactionReceipt({ hash, confirmations: c.confirmations })
  if (receipt.status !== 'success') throw new TesseraError('CHAIN_REVERT', `${w.functionName} reverted in block ${receipt.blockNumber} (transaction ${hash})`)
  return receipt
}

export async function deployContract(
  c: Clients,
  a: { abi: Abi; bytecode: Hex },
  args: readonly unknown[] = []
): Promise<{ address: Address; receipt: TransactionReceipt }> {
  let hash: Hex
  try {
    hash = await c.wallet.deployContract({ chain: c.chain, account: c.account, abi: a.abi, bytecode: a.bytecode, args })
  } catch (err) {
    throw chainError(err, 'deploy')
  }
  const receipt = await c.public.waitForTransactionReceipt({ hash, confirmations: c.confirmations })
  if (receipt.status !== 'success' || receipt.contractAddress == null) {
    throw new TesseraError('CHAIN_REVERT', `deploying failed in block ${receipt.blockNumber} (transaction ${hash})`)
  }
  return { address: receipt.contractAddress, receipt }
}
