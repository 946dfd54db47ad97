/**
 * `tessera doctor` — a node operator's preflight: one line per check (✓ ok, ! worth a look,
 * ✗ blocks running a node), each shortfall with what to do about it. Exit code 1 on any ✗.
 * The checks: the machine (doctor-checks.ts), a model (doctor-model.ts), the relay (doctor-relay.ts).
 */
import type { Command } from 'commander'
import { setQuiet } from '../../shared/log.js'
import type { Manifest } from '../../shared/manifest.js'
import { detectHardware } from '../../native-node/hardware.js'
import { readManifest } from '../../host/model-store.js'
import { memory } from './options.js'
import { msg, systemChecks, type Check } from './doctor-checks.js'
import { modelChecks } from './doctor-model.js'
import { probeRelay } from './doctor-relay.js'
import { cacheCheck } from './doctor-cache.js'
import { defaultCacheDir } from '../../native-node/weights.js'

export type { Check } from './doctor-checks.js'

export interface DoctorOptions {
  relay?: string
  model?: string
  memory?: number
  /** The shard cache of nodes joining by name (default ~/.cache/tessera). */
  cache?: string
}

const SYMBOL = { ok: '✓', warn: '!', fail: '✗' } as const

export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description('check this machine before running a node: runtime, GPU, memory, disk, a model, the relay')
    .option('--relay <addr>', 'relay multiaddr to measure latency to, e.g. /ip4/203.0.113.7/tcp/9090/ws/p2p/12D3Koo…')
    .option('--model <dir>', 'a built model directory: verify it, plan it and time it on this machine')
    .option('--memory <size>', 'memory this node may use (default: free VRAM on CUDA, 70% of free RAM on CPU)', memory)
    .option('--cache <dir>', 'the shard cache of nodes joining by name (default $XDG_CACHE_HOME/tessera or ~/.cache/tessera)')
    .option('--json', 'print { checks: [{ name, status, value, fix? }] }')
    .action(async (o: DoctorOptions & { json?: boolean }) => {
      if (o.json === true) setQuiet(true)
      const checks = await runDoctor(o)
      if (o.json === true) {
        console.log(JSON.stringify({ checks }))
      } else {
        const width = Math.max(...checks.map((c) => c.name.length))
        for (const c of checks) {
          console.log(`${SYMBOL[c.status]} ${c.name.padEnd(width)}  ${c.value}`)
          if (c.fix !== undefined) console.log(`  ${' '.repeat(width)}  → ${c.fix}`)
        }
      }
      if (checks.some((c) => c.status === 'fail')) process.exitCode = 1
      // A WebSocket dial aborted mid-handshake leaves a socket libp2p no longer watches: it would
      // hold the process open and later throw ECONNRESET. The report is out; do not wait on it.
      if (o.relay !== undefined) process.stdout.write('', () => process.exit())
    })
}

export async function runDoctor(o: DoctorOptions): Promise<Check[]> {
  const hw = await detectHardware(o.model)
  let manifest: Manifest | undefined
  let manifestError: unknown
  if (o.model !== undefined)
    manifest = await readManifest(o.model).catch((err) => {
      manifestError = err
      return undefined
    })
  const checks = systemChecks(hw, manifest)
  checks.push(await cacheCheck(o.cache ?? defaultCacheDir()))
  if (o.model !== undefined) {
    if (manifest === undefined) {
      checks.push({ name: 'manifest', status: 'fail', value: msg(manifestError), fix: 'point --model at a directory written by tessera build-model' })
    } else {
      checks.push(...(await modelChecks(o.model, manifest, hw, o.memory)))
    }
  }
  if (o.relay !== undefined) checks.push(...(await probeRelay(o.relay)))
  return checks
}
