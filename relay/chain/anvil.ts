/**
 * A local EVM chain: anvil (Foundry) from its npm platform package, on 127.0.0.1 only.
 * `--port 0` lets the OS pick a free port, read back from anvil's "Listening on" line.
 * With `stateFile`, anvil loads the file at start (if it exists) and dumps its state, blocks and
 * transactions there on exit, so a restarted chain keeps its history (`--state`).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { toHex, type Hex } from 'viem'
import { mnemonicToAccount } from 'viem/accounts'
import { TesseraError } from '../../shared/errors.js'
import { CHAIN_DEFAULTS } from '../config.js'

/** anvil's default mnemonic: its dev accounts are public knowledge, for local chains only. */
export const ANVIL_MNEMONIC = 'test test test test test test test test test test test junk'
export const ANVIL_CHAIN_ID = 31337

export interface AnvilOptions {
  /** 0 (default): any free port. */
  port?: number
  /** Seconds per block; default: a block per transaction (automine). */
  blockTime?: number
  /** Load state from here if it exists, dump it here on exit. */
  stateFile?: string
  chainId?: number
  /** How long to wait for "Listening on" (ms); default CHAIN_DEFAULTS.anvilStartTimeoutMs. */
  startTimeoutMs?: number
}

export interface Anvil {
  url: string
  chainId: number
  /** The dev accounts' private keys (index 0 first): each is funded with 10,000 ETH. */
  accounts: Hex[]
  /** Stops anvil and waits for it to exit (and to dump its state when it has a state file). */
  stop(): Promise<void>
}

/** The anvil binary of this platform's npm package; a clear error where there is none. */
export function anvilBinary(): string {
  // Foundry names its packages by Go-style arch: x64 → amd64.
  const arch = process.arch === 'x64' ? 'amd64' : process.arch
  const pkg = `@foundry-rs/anvil-${process.platform}-${arch}`
  let dir: string
  try {
    dir = dirname(createRequire(import.meta.url).resolve(`${pkg}/package.json`))
  } catch {
    throw new TesseraError(
      'NO_ANVIL',
      `no anvil binary for ${process.platform}-${arch}: the npm package ${pkg} is not installed ` +
        '(it is an optional dependency of @foundry-rs/anvil; add it to package.json for this platform)'
    )
  }
  const bin = join(dir, 'bin', process.platform === 'win32' ? 'anvil.exe' : 'anvil')
  if (!existsSync(bin)) throw new TesseraError('NO_ANVIL', `${pkg} has no ${bin}`)
  return bin
}

/** The key source commands default to: an environment variable holding the arbiter's key. */
export const DEFAULT_KEY_SOURCE = CHAIN_DEFAULTS.keySource

/**
 * The key a command uses: `source` as given, except that the default source, unset, on a local
 * anvil's chain means anvil's dev key 0 (public knowledge, so only there).
 */
export function chainKey(source: string | undefined, chainId: number | undefined): string {
  const s = source ?? DEFAULT_KEY_SOURCE
  return s === DEFAULT_KEY_SOURCE && process.env[DEFAULT_KEY_SOURCE] === undefined && chainId === ANVIL_CHAIN_ID ? devAccounts(1)[0] : s
}

export function devAccounts(count = 10): Hex[] {
  return Array.from({ length: count }, (_, i) => {
    const key = mnemonicToAccount(ANVIL_MNEMONIC, { addressIndex: i }).getHdKey().privateKey
    if (key === null) throw new TesseraError('ANVIL_START', `anvil's dev mnemonic yielded no private key for account ${i}: check the installed viem`)
    return toHex(key)
  })
}

export async function startAnvil(o: AnvilOptions = {}): Promise<Anvil> {
  const chainId = o.chainId ?? ANVIL_CHAIN_ID
  const args = ['--host', '127.0.0.1', '--port', String(o.port ?? 0), '--chain-id', String(chainId), '--mnemonic', ANVIL_MNEMONIC]
  if (o.blockTime !== undefined) args.push('--block-time', String(o.blockTime))
  if (o.stateFile !== undefined) args.push('--state', o.stateFile)
  const child = spawn(anvilBinary(), args, { stdio: ['ignore', 'pipe', 'pipe'] })
  // A test or CLI that dies must not leave a chain running behind it.
  const killOnExit = (): void => {
    child.kill('SIGKILL')
  }
  process.on('exit', killOnExit)
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      process.off('exit', killOnExit)
      resolve()
    })
  )

  let output = ''
  const startTimeoutMs = o.startTimeoutMs ?? CHAIN_DEFAULTS.anvilStartTimeoutMs
  const failed = (why: string): TesseraError => new TesseraError('ANVIL_START', `anvil ${why}:\n${output.slice(-2000)}`)
  try {
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(failed(`did not start within ${startTimeoutMs} ms`)), startTimeoutMs)
      const onData = (chunk: Buffer): void => {
        output += chunk.toString()
        const m = /Listening on [\d.]+:(\d+)/.exec(output)
        if (m !== null) {
          clearTimeout(timer)
          resolve(Number(m[1]))
        }
      }
      child.stdout?.on('data', onData)
      child.stderr?.on('data', onData)
      child.once('error', (err) => {
        clearTimeout(timer)
        reject(new TesseraError('ANVIL_START', `anvil failed to start: ${err.message}`))
      })
      child.once('exit', (code) => {
        clearTimeout(timer)
        reject(failed(`exited with ${code} before listening`))
      })
    })
    // Keep draining its output (a full pipe would block anvil), but stop collecting it.
    child.stdout?.removeAllListeners('data').resume()
    child.stderr?.removeAllListeners('data').resume()
    return { url: `http://127.0.0.1:${port}`, chainId, accounts: devAccounts(), stop: async () => await stop(child, exited) }
  } catch (err) {
    await stop(child, exited)
    throw err
  }
}

/** SIGTERM lets anvil dump its state; SIGKILL if it has not exited in time. */
async function stop(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), CHAIN_DEFAULTS.anvilStopTimeoutMs)
  await exited
  clearTimeout(timer)
}
