import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { REPO } from './paths.js'

export interface CliResult {
  code: number
  stdout: string
  stderr: string
}

/** Runs `tessera ARGS` as a user would (node bin/tessera.js), never throwing on a non-zero exit. */
export async function tessera(args: string[], opts: { timeout?: number; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  return await new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(REPO, 'bin', 'tessera.js'), ...args],
      { cwd: REPO, timeout: opts.timeout ?? 120_000, maxBuffer: 64 << 20, env: { ...process.env, ...opts.env } },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1
        resolve({ code, stdout, stderr })
      }
    )
  })
}
