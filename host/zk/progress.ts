/**
 * Setup progress from snarkjs's log lines. snarkjs reports progress only as debug messages
 * ("tauG2: fft 11 mix start: 0/2", "Writing points start B2: 866/2764"); this turns them into a
 * fraction per stage. The weights are the shares of each stage's time measured on 2 cores.
 */
import type { SnarkLogger } from 'snarkjs'

export type SetupStage = 'compile' | 'ptau-new' | 'ptau-contribute' | 'ptau-prepare' | 'zkey-new' | 'zkey-contribute' | 'export-vk'

export const STAGE_LABELS: Record<SetupStage, string> = {
  compile: 'circuit: circom compile',
  'ptau-new': 'powers of tau: new',
  'ptau-contribute': 'powers of tau: contribution',
  'ptau-prepare': 'powers of tau: phase 2 preparation (Lagrange basis)',
  'zkey-new': 'Groth16 keys: new',
  'zkey-contribute': 'Groth16 keys: contribution',
  'export-vk': 'verification key: export'
}

/**
 * What each stage is doing, as a start line: several (compile, new accumulator, key export) log
 * nothing snarkjs can turn into a fraction, so without it a long stage would look hung.
 */
export const STAGE_STARTS: Record<SetupStage, string> = {
  compile: 'compiling the circuit (circom)',
  'ptau-new': 'starting a new powers-of-tau accumulator',
  'ptau-contribute': 'contributing random entropy to the powers of tau',
  'ptau-prepare': 'preparing the powers of tau for phase 2 (Lagrange basis; the longest step)',
  'zkey-new': 'making the Groth16 proving key',
  'zkey-contribute': 'contributing random entropy to the Groth16 keys (phase 2)',
  'export-vk': 'exporting the verification key'
}

export interface SetupProgress {
  stage: SetupStage
  label: string
  /** Of this stage, 0…1; every stage reports 0 when it starts and 1 when it ends. */
  fraction: number
  /** Set when fraction is 1: the stage's wall time. */
  ms?: number
}
export type ProgressFn = (p: SetupProgress) => void

/** Sections in the order snarkjs processes them, with each one's share of the stage. */
const SECTIONS: Partial<Record<SetupStage, { pattern: RegExp; shares: Record<string, number> }>> = {
  'ptau-contribute': { pattern: /processing: (\w+): (\d+)\/(\d+)/, shares: { tauG1: 0.25, tauG2: 0.25, alphaTauG1: 0.25, betaTauG1: 0.25 } },
  'ptau-prepare': { pattern: /^(\w+): fft +(\d+) +(mix start|mix end|join)/, shares: { tauG1: 0.25, tauG2: 0.44, alphaTauG1: 0.155, betaTauG1: 0.155 } },
  'zkey-new': { pattern: /Writing points \w+ (\w+): (\d+)\/(\d+)/, shares: { IC: 0.01, C: 0.25, A: 0.1, B1: 0.14, B2: 0.5 } },
  'zkey-contribute': { pattern: /Applying key: (\w+) Section: (\d+)\/(\d+)/, shares: { L: 0.5, H: 0.5 } }
}

/** Where a log line puts the stage, or undefined if it says nothing about progress. */
export function parseProgress(stage: SetupStage, msg: string, power: number): number | undefined {
  const spec = SECTIONS[stage]
  if (spec === undefined) return undefined
  const m = spec.pattern.exec(msg)
  if (m === null) return undefined
  const names = Object.keys(spec.shares)
  const at = names.indexOf(m[1])
  if (at < 0) return undefined
  const before = names.slice(0, at).reduce((a, n) => a + spec.shares[n], 0)
  // Phase-2 preparation runs an FFT per level 0…power, each a mix then a join; level L's work is
  // ~2^L, so levels below L are ~2^L - 1 of the 2^(power+1) - 1 in all.
  const within =
    stage === 'ptau-prepare'
      ? (2 ** Number(m[2]) * (m[3] === 'mix start' ? 1 : m[3] === 'mix end' ? 1.5 : 2) - 1) / (2 ** (power + 1) - 1)
      : Number(m[2]) / Number(m[3])
  return before + spec.shares[m[1]] * within
}

/**
 * Runs one stage: reports 0, the fractions its log lines imply (never going back), then 1 with
 * the time taken. `run` receives the logger to hand to snarkjs.
 */
export async function runStage<T>(progress: ProgressFn | undefined, stage: SetupStage, power: number, run: (logger: SnarkLogger) => Promise<T>): Promise<T> {
  const label = STAGE_LABELS[stage]
  const started = performance.now()
  let last = 0
  progress?.({ stage, label, fraction: 0 })
  const debug = (msg: string): void => {
    const f = parseProgress(stage, msg, power)
    if (f !== undefined && f > last) {
      last = Math.min(f, 0.999)
      progress?.({ stage, label, fraction: last })
    }
  }
  const quiet = (): void => {}
  const result = await run({ debug, info: quiet, warn: quiet, error: quiet })
  progress?.({ stage, label, fraction: 1, ms: performance.now() - started })
  return result
}
