/**
 * Where the zero-knowledge artefacts live: `.cache/zk/` in the checkout (git ignores `.cache`).
 *
 *   .cache/zk/ptau/pot<power>.ptau          prepared powers of tau, shared by every circuit
 *   .cache/zk/<circuit hash>/model.circom   the source, its R1CS and witness wasm, circuit.json
 *   .cache/zk/<circuit hash>/model.zkey     Groth16 proving key, verification_key.json, setup.json
 *
 * Everything is written under a temporary name and renamed into place, so a run that is killed
 * half-way (or two runs at once) never leaves a file that looks finished but is not.
 */
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { randomBytes } from 'node:crypto'
import { rename, rm } from 'node:fs/promises'

/** The folder that holds node_modules (circom2 must run there: see compile.ts). */
export const PACKAGE_ROOT = resolve(dirname(createRequire(import.meta.url).resolve('circomlib/package.json')), '..', '..')

export const DEFAULT_CACHE = join(resolve(dirname(fileURLToPath(import.meta.url)), '..', '..'), '.cache', 'zk')

/** A fresh temporary path beside `path`. */
export const tempPath = (path: string): string => `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`

/** Moves a finished temporary file or folder into place; if another run got there first, keeps theirs. */
export async function publish(temp: string, path: string): Promise<void> {
  try {
    await rename(temp, path)
  } catch (err) {
    await rm(temp, { recursive: true, force: true })
    if ((err as NodeJS.ErrnoException).code !== 'ENOTEMPTY' && (err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
  }
}
