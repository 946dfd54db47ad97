/**
 * The trusted setup, done locally with snarkjs and cached:
 *
 *   phase 1  powersoftau new → contribute → preparePhase2   (pot<power>.ptau, any circuit ≤ 2^power)
 *   phase 2  zkey new → contribute → export verification key (per circuit)
 *
 * Entropy is random (32 bytes from the OS per contribution, held only in memory), never derived
 * from a seed: whoever knows it can forge proofs, and a deterministic source would make it
 * public. With one contributor this is a setup the model owner must be trusted for; for more,
 * pass a public prepared ptau (`ptau`, e.g. from the Hermez/perpetual powers-of-tau ceremony)
 * and add phase-2 contributions from other parties with `snarkjs zkey contribute`.
 */
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { curves, powersOfTau, zKey } from 'snarkjs'
import type { VerificationKey } from '../../shared/zk/types.js'
import { DEFAULT_CACHE, publish, tempPath } from './cache.js'
import type { CompiledCircuit } from './compile.js'
import { runStage, type ProgressFn } from './progress.js'

export type { SetupProgress, ProgressFn } from './progress.js'

/** The powers-of-tau size snarkjs needs: 2^power > constraints + public signals (zkey_new's rule). */
export const requiredPower = (c: Pick<CompiledCircuit, 'constraints' | 'publicSignals'>): number => Math.floor(Math.log2(c.constraints + c.publicSignals)) + 1

export interface SetupOptions {
  cacheDir?: string
  progress?: ProgressFn
  /** A prepared .ptau file to use instead of the local phase 1. */
  ptau?: string
}

/** `ms`: how long making it took (also when reused: as recorded then). */
export interface Ptau {
  file: string
  power: number
  ms: number
  reused: boolean
}

/** The smallest cached prepared ptau with at least `power`, or a new one of exactly `power`. */
export async function ensurePtau(power: number, opts: SetupOptions = {}): Promise<Ptau> {
  const dir = join(opts.cacheDir ?? DEFAULT_CACHE, 'ptau')
  await mkdir(dir, { recursive: true })
  const cached = (await readdir(dir))
    .map((f) => /^pot(\d+)\.ptau$/.exec(f))
    .filter((m) => m !== null)
    .map((m) => Number(m[1]))
    .filter((p) => p >= power)
    .sort((a, b) => a - b)
  if (cached.length > 0) {
    // Report how long the cached ceremony took when it was made (pot<power>.json), for the record.
    const info = join(dir, `pot${cached[0]}.json`)
    const ms = existsSync(info) ? ((JSON.parse(await readFile(info, 'utf8')) as { ms?: number }).ms ?? 0) : 0
    return { file: join(dir, `pot${cached[0]}.ptau`), power: cached[0], ms, reused: true }
  }

  const file = join(dir, `pot${power}.ptau`)
  const tmp = tempPath(file)
  const started = performance.now()
  const curve = await curves.getCurveFromName('bn128')
  try {
    await runStage(opts.progress, 'ptau-new', power, async (log) => await powersOfTau.newAccumulator(curve, power, `${tmp}.0`, log))
    await runStage(
      opts.progress,
      'ptau-contribute',
      power,
      async (log) => await powersOfTau.contribute(`${tmp}.0`, `${tmp}.1`, 'tessera local', entropy(), log)
    )
    await runStage(opts.progress, 'ptau-prepare', power, async (log) => {
      await powersOfTau.preparePhase2(`${tmp}.1`, tmp, log)
    })
    await publish(tmp, file)
  } finally {
    await Promise.all([`${tmp}.0`, `${tmp}.1`, tmp].map(async (f) => await rm(f, { force: true })))
  }
  const ms = performance.now() - started
  await writeFile(join(dir, `pot${power}.json`), JSON.stringify({ power, ms, entropy: 'random, not kept', created: new Date().toISOString() }, null, 2) + '\n')
  return { file, power, ms, reused: false }
}

export interface Groth16Setup {
  zkey: string
  verificationKey: VerificationKey
  /** The ptau size used (may exceed the circuit's need when a larger one was cached). */
  power: number
  ptauMs: number
  zkeyMs: number
  reused: boolean
}

/** Proving and verification keys for a compiled circuit: cached beside it, made once. */
export async function ensureSetup(circuit: CompiledCircuit, opts: SetupOptions = {}): Promise<Groth16Setup> {
  const zkey = join(circuit.dir, 'model.zkey')
  const info = join(circuit.dir, 'setup.json')
  if (existsSync(info) && existsSync(zkey)) {
    const s = JSON.parse(await readFile(info, 'utf8')) as Omit<Groth16Setup, 'zkey' | 'reused'>
    return { ...s, zkey, reused: true }
  }
  const need = requiredPower(circuit)
  const ptau = opts.ptau !== undefined ? { file: opts.ptau, power: need, ms: 0, reused: true } : await ensurePtau(need, opts)
  const started = performance.now()
  const tmp = tempPath(zkey)
  try {
    await runStage(opts.progress, 'zkey-new', ptau.power, async (log) => await zKey.newZKey(circuit.r1cs, ptau.file, `${tmp}.0`, log))
    await runStage(opts.progress, 'zkey-contribute', ptau.power, async (log) => await zKey.contribute(`${tmp}.0`, tmp, 'tessera local', entropy(), log))
  } finally {
    await rm(`${tmp}.0`, { force: true })
  }
  const verificationKey = await runStage(opts.progress, 'export-vk', ptau.power, async (log) => await zKey.exportVerificationKey(tmp, log))
  await publish(tmp, zkey)
  const setup = { verificationKey, power: ptau.power, ptauMs: ptau.ms, zkeyMs: performance.now() - started }
  await writeFile(join(circuit.dir, 'verification_key.json'), JSON.stringify(verificationKey, null, 2) + '\n')
  await writeFile(info, JSON.stringify(setup) + '\n')
  return { ...setup, zkey, reused: false }
}

const entropy = (): string => randomBytes(32).toString('hex')
