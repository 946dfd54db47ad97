/**
 * Solidity, compiled offline with the solc npm package (wasm) through standard JSON, and cached:
 *
 *   .cache/chain/<sha256 of solc version, settings and sources>.json   { contracts: { name: { abi, bytecode } } }
 *
 * The EVM version is pinned (solc's default is the newest fork, which a given chain may lack).
 * Also exports and compiles snarkjs's Groth16 verifier for a ZK model's proving key.
 */
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import solc from 'solc'
import { zKey } from 'snarkjs'
import type { Abi, Hex } from 'viem'
import { TesseraError } from '../../shared/errors.js'
import { publish, tempPath } from '../../host/zk/cache.js'
import { CHAIN_DEFAULTS } from '../config.js'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const CONTRACTS_DIR = join(ROOT, 'relay', 'contracts')
export const DEFAULT_CHAIN_CACHE = join(ROOT, CHAIN_DEFAULTS.cacheDir)
export const EVM_VERSION = 'cancun'

export interface Artifact {
  abi: Abi
  bytecode: Hex
}

interface SolcOutput {
  errors?: Array<{ severity: string; formattedMessage: string }>
  contracts?: Record<string, Record<string, { abi: Abi; evm: { bytecode: { object: string } } }>>
}

/** Compiles `sources` (file name → Solidity); returns every contract by name. Cached by content. */
export async function compileSolidity(sources: Record<string, string>, opts: { cacheDir?: string } = {}): Promise<Record<string, Artifact>> {
  const settings = { evmVersion: EVM_VERSION, optimizer: { enabled: true, runs: 200 }, outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } } }
  const sorted = Object.entries(sources).sort(([a], [b]) => (a < b ? -1 : 1))
  const key = createHash('sha256')
    .update(JSON.stringify({ solc: solc.version() as string, settings, sources: sorted }))
    .digest('hex')
  const dir = opts.cacheDir ?? DEFAULT_CHAIN_CACHE
  const file = join(dir, `${key}.json`)
  if (existsSync(file)) return (JSON.parse(await readFile(file, 'utf8')) as { contracts: Record<string, Artifact> }).contracts

  const input = { language: 'Solidity', sources: Object.fromEntries(Object.entries(sources).map(([name, content]) => [name, { content }])), settings }
  const out = JSON.parse(solc.compile(JSON.stringify(input)) as string) as SolcOutput
  const errors = (out.errors ?? []).filter((e) => e.severity === 'error')
  if (errors.length > 0) throw new TesseraError('SOLC', `solc ${solc.version() as string} failed:\n${errors.map((e) => e.formattedMessage).join('\n')}`)
  const contracts: Record<string, Artifact> = {}
  for (const byName of Object.values(out.contracts ?? {})) {
    for (const [name, c] of Object.entries(byName)) contracts[name] = { abi: c.abi, bytecode: `0x${c.evm.bytecode.object}` }
  }
  await mkdir(dir, { recursive: true })
  const tmp = tempPath(file)
  await writeFile(tmp, JSON.stringify({ solc: solc.version() as string, evmVersion: EVM_VERSION, contracts }) + '\n')
  await publish(tmp, file)
  return contracts
}

/** Every contract in relay/contracts/*.sol. */
export async function compileContracts(opts: { cacheDir?: string; dir?: string } = {}): Promise<Record<string, Artifact>> {
  const dir = opts.dir ?? CONTRACTS_DIR
  const files = (await readdir(dir)).filter((f) => f.endsWith('.sol')).sort()
  const sources = Object.fromEntries(await Promise.all(files.map(async (f) => [f, await readFile(join(dir, f), 'utf8')] as const)))
  return await compileSolidity(sources, opts)
}

export async function stakeArtifact(opts: { cacheDir?: string } = {}): Promise<Artifact> {
  const a = (await compileContracts(opts)).TesseraStake
  if (a === undefined) throw new TesseraError('SOLC', `relay/contracts/TesseraStake.sol defines no TesseraStake contract`)
  return a
}

/** The Solidity source of the Groth16 verifier for a proving key (snarkjs's own template). */
export async function exportVerifierSource(zkeyPath: string): Promise<string> {
  // snarkjs's exports map hides package.json: walk up from its entry point to the folder holding templates/.
  let root = dirname(createRequire(import.meta.url).resolve('snarkjs'))
  while (!existsSync(join(root, 'templates')) && dirname(root) !== root) root = dirname(root)
  const templates = join(root, 'templates')
  const groth16 = await readFile(join(templates, 'verifier_groth16.sol.ejs'), 'utf8')
  // Not in our snarkjs type declarations (shared/zk/modules.d.ts): 0.7.6 takes { groth16: template }.
  const exporter = zKey as unknown as { exportSolidityVerifier: (zkey: string, templates: Record<string, string>) => Promise<string> }
  return await exporter.exportSolidityVerifier(zkeyPath, { groth16 })
}

/** The compiled verifier (contract Groth16Verifier) for a proving key. */
export async function verifierArtifact(zkeyPath: string, opts: { cacheDir?: string } = {}): Promise<Artifact> {
  const a = (await compileSolidity({ 'Groth16Verifier.sol': await exportVerifierSource(zkeyPath) }, opts)).Groth16Verifier
  if (a === undefined) throw new TesseraError('SOLC', `snarkjs exported no Groth16Verifier for ${zkeyPath}`)
  return a
}
