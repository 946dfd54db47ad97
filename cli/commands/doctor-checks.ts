/**
 * `tessera doctor`'s checks of the machine itself: Node.js, onnxruntime-node and its CUDA
 * provider, the GPU and its driver, VRAM, RAM, disk and CPU. Shared with the other checks: the
 * Check shape, sizes as text, and the message of anything a transport rejects with.
 */
import bytes from 'bytes'
import { createRequire } from 'node:module'
import type { Manifest } from '../../shared/manifest.js'
import type { Hardware } from '../../native-node/hardware.js'

export interface Check {
  name: string
  status: 'ok' | 'warn' | 'fail'
  value: string
  fix?: string
}

export const GiB = 2 ** 30
export const fmt = (n: number): string => bytes.format(n, { unitSeparator: ' ', decimalPlaces: 1 }) ?? String(n)

/** For display only. Transports reject with Errors, AggregateErrors with an empty message, or bare error events. */
export function msg(err: unknown): string {
  if (err instanceof AggregateError && err.message === '') return err.errors.map(msg).join('; ')
  const m = (err as { message?: unknown } | null)?.message
  return typeof m === 'string' && m !== '' ? m : String(err)
}

const CUDA_INSTALL = 'ONNXRUNTIME_NODE_INSTALL=cuda12 npm install onnxruntime-node --onnxruntime-node-install=cuda12 (README "CUDA")'

const ortVersion = (): string => {
  try {
    return (createRequire(import.meta.url)('onnxruntime-node/package.json') as { version: string }).version
  } catch {
    return '?'
  }
}

export function systemChecks(hw: Hardware, manifest?: Manifest): Check[] {
  const checks: Check[] = []
  const [major, minor] = process.versions.node.split('.').map(Number)
  const nodeOk = major > 20 || (major === 20 && minor >= 19)
  checks.push(
    nodeOk
      ? { name: 'Node.js', status: 'ok', value: `v${process.versions.node}${major >= 22 ? '' : ' (libp2p runs through the Node 20 shim; 22+ needs none)'}` }
      : { name: 'Node.js', status: 'fail', value: `v${process.versions.node}`, fix: 'install Node 20.19+ (22+ needs no shim)' }
  )
  // ort.ts loaded already (doctor-model.ts imports it), so reaching here means it loads.
  checks.push({ name: 'onnxruntime-node', status: 'ok', value: `${ortVersion()} loads` })
  if (hw.cudaProvider) {
    checks.push({ name: 'CUDA provider', status: 'ok', value: 'installed' })
  } else if (hw.gpu.present) {
    checks.push({ name: 'CUDA provider', status: 'warn', value: 'not installed: shards run on the CPU despite the GPU', fix: `install it: ${CUDA_INSTALL}` })
  } else {
    checks.push({ name: 'CUDA provider', status: 'ok', value: 'not installed (not needed without an NVIDIA GPU)' })
  }
  checks.push(...gpuChecks(hw))
  const lowRam = hw.ramFree < 2 * GiB
  checks.push({
    name: 'RAM',
    status: lowRam ? 'warn' : 'ok',
    value: `${fmt(hw.ramFree)} available of ${fmt(hw.ramTotal)}`,
    fix: lowRam ? 'close other programs, or give a smaller --memory' : undefined
  })
  const modelBytes = manifest?.shards.reduce((a, s) => a + s.bytes, 0)
  const need = modelBytes ?? 2 * GiB
  const lowDisk = hw.disk.free < need
  checks.push({
    name: 'disk',
    status: lowDisk ? 'warn' : 'ok',
    value: `${fmt(hw.disk.free)} free at ${hw.disk.path}${modelBytes !== undefined ? `; the model's shards take ${fmt(modelBytes)}` : ''}`,
    fix: lowDisk ? `free ${fmt(need - hw.disk.free)} more to ${modelBytes !== undefined ? 'rebuild or update this model' : 'hold a model'}` : undefined
  })
  const oneCore = hw.cpu.cores < 2
  checks.push({
    name: 'CPU',
    status: oneCore ? 'warn' : 'ok',
    value: `${hw.cpu.cores} core(s), ${hw.cpu.model}`,
    fix: oneCore ? 'one core makes CPU shards slow: prefer a GPU or more cores' : undefined
  })
  return checks
}

function gpuChecks({ gpu: g }: Hardware): Check[] {
  if (!g.present) {
    return [
      {
        name: 'GPU',
        status: 'warn',
        value: 'no NVIDIA GPU found (nvidia-smi absent or failing): this node runs on the CPU',
        fix: 'if this machine has an NVIDIA GPU, install its driver so that nvidia-smi works'
      }
    ]
  }
  const checks: Check[] = [{ name: 'GPU', status: 'ok', value: `${g.name ?? 'NVIDIA GPU'}${g.count > 1 ? ` (first of ${g.count}; a node uses one)` : ''}` }]
  const driverMajor = Number(g.driver?.split('.')[0])
  // CUDA 12 (what onnxruntime-node's provider is built for) needs driver 525.60+ on Linux.
  checks.push(
    Number.isFinite(driverMajor) && driverMajor >= 525
      ? { name: 'NVIDIA driver', status: 'ok', value: `${g.driver}${g.cudaVersion !== undefined ? `, CUDA ${g.cudaVersion}` : ''}` }
      : {
          name: 'NVIDIA driver',
          status: 'warn',
          value: g.driver ?? 'unknown version',
          fix: 'the CUDA 12 provider needs driver 525.60 or newer: update the NVIDIA driver'
        }
  )
  if (g.vramFree === undefined) {
    checks.push({ name: 'VRAM', status: 'warn', value: 'nvidia-smi did not report memory', fix: 'give the budget with --memory' })
  } else {
    const low = g.vramFree < 2 * GiB
    checks.push({
      name: 'VRAM',
      status: low ? 'warn' : 'ok',
      value: `${fmt(g.vramFree)} free of ${fmt(g.vramTotal ?? 0)}`,
      fix: low ? 'other processes hold the GPU memory: stop them (nvidia-smi lists them)' : undefined
    })
  }
  return checks
}
