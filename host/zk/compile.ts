/**
 * circom source → R1CS + witness wasm, with circom2 (circom 2.2.3 compiled to WASI, from npm),
 * cached by the source's hash and reused.
 *
 * circom2 runs under WASI with the working directory as its only file system: include paths
 * and output paths must be relative and without `..`. So it runs in the folder that holds
 * node_modules, with `-l node_modules`, and the cache must lie inside that folder.
 */
import { spawn } from 'node:child_process'
import { createRequire } from 'node:module'
import { existsSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join, relative } from 'node:path'
import { ConfigError } from '../../shared/errors.js'
import { circuitHash, circuitSource } from '../../shared/zk/circuit.js'
import type { ZkShape } from '../../shared/zk/layout.js'
import { DEFAULT_CACHE, PACKAGE_ROOT, publish, tempPath } from './cache.js'
import { runStage, type ProgressFn } from './progress.js'

export interface CompiledCircuit {
  hash: string
  dir: string
  r1cs: string
  wasm: string
  /** R1CS constraints after --O2 (which removes linear ones). */
  constraints: number
  /** Public inputs + public outputs. */
  publicSignals: number
  compileMs: number
  /** True when found in the cache. */
  reused: boolean
}

interface CircuitInfo {
  constraints: number
  publicSignals: number
  compileMs: number
}

export async function compileCircuit(shape: ZkShape, opts: { cacheDir?: string; progress?: ProgressFn } = {}): Promise<CompiledCircuit> {
  return await compileSource(circuitSource(shape), opts)
}

/** Any generated circom source (a model's, or the sampling circuit's), cached by its hash. */
export async function compileSource(source: string, opts: { cacheDir?: string; progress?: ProgressFn } = {}): Promise<CompiledCircuit> {
  const hash = circuitHash(source)
  const dir = join(opts.cacheDir ?? DEFAULT_CACHE, hash)
  const files = { dir, r1cs: join(dir, 'model.r1cs'), wasm: join(dir, 'model_js', 'model.wasm') }
  if (existsSync(join(dir, 'circuit.json'))) {
    const info = JSON.parse(await readFile(join(dir, 'circuit.json'), 'utf8')) as CircuitInfo
    return { hash, ...files, ...info, reused: true }
  }

  const out = relative(PACKAGE_ROOT, tempPath(dir))
  if (out.startsWith('..')) throw new ConfigError(`the ZK cache ${dir} must lie inside ${PACKAGE_ROOT} (circom2 runs under WASI and cannot reach outside it)`)
  await mkdir(join(PACKAGE_ROOT, out), { recursive: true })
  await writeFile(join(PACKAGE_ROOT, out, 'model.circom'), source)
  const started = performance.now()
  const log = await runStage(
    opts.progress,
    'compile',
    0,
    async () => await run(process.execPath, [circom2Cli(), join(out, 'model.circom'), '--r1cs', '--wasm', '--O2', '-l', 'node_modules', '-o', out])
  )
  const info: CircuitInfo = {
    constraints: count(log, 'non-linear constraints') + count(log, 'linear constraints'),
    publicSignals: count(log, 'public inputs') + count(log, 'public outputs'),
    compileMs: performance.now() - started
  }
  await writeFile(join(PACKAGE_ROOT, out, 'circuit.json'), JSON.stringify(info, null, 2) + '\n')
  await publish(join(PACKAGE_ROOT, out), dir)
  return { hash, ...files, ...info, reused: false }
}

const circom2Cli = (): string => createRequire(import.meta.url).resolve('circom2/cli.js')

const ANSI_COLOUR = new RegExp(String.fromCharCode(27) + '\\[[0-9;]*m', 'g')

/** A figure from circom's summary ("non-linear constraints: 2737"), colours stripped. */
function count(log: string, label: string): number {
  const m = new RegExp(`(?:^|\\n)${label}: (\\d+)`).exec(log.replace(ANSI_COLOUR, ''))
  if (m === null) throw new ConfigError(`circom's output has no "${label}" line:\n${log.slice(-2000)}`)
  return Number(m[1])
}

async function run(cmd: string, args: string[]): Promise<string> {
  return await new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: PACKAGE_ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    let log = ''
    child.stdout.on('data', (b: Buffer) => {
      log += b.toString()
    })
    child.stderr.on('data', (b: Buffer) => {
      log += b.toString()
    })
    child.on('error', reject)
    child.on('close', (code) => {
      if (code === 0) resolve(log)
      else reject(new ConfigError(`circom failed (exit ${code}) on the generated circuit:\n${log.slice(-4000)}`))
    })
  })
}
