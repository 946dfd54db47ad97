/**
 * What this machine offers a node: CPU, RAM, disk, the NVIDIA GPU (through nvidia-smi, so no
 * CUDA library is loaded to find out) and whether onnxruntime-node carries its CUDA provider.
 * Detection never throws: anything it cannot read is reported as absent.
 */
import { execFile } from 'node:child_process'
import { statfs } from 'node:fs/promises'
import { cpus, freemem, totalmem } from 'node:os'
import { dirname, resolve } from 'node:path'
import { cudaAvailable } from './ort.js'

export interface GpuInfo {
  present: boolean
  /** GPUs nvidia-smi lists; the other fields describe the first. */
  count: number
  name?: string
  vramTotal?: number
  vramFree?: number
  driver?: string
  cudaVersion?: string
  source: 'nvidia-smi' | 'none'
}

export interface Hardware {
  cpu: { model: string; cores: number }
  ramTotal: number
  /** Memory available to new processes (MemAvailable on Linux), not just unused pages. */
  ramFree: number
  disk: { path: string; free: number }
  gpu: GpuInfo
  cudaProvider: boolean
}

const MiB = 2 ** 20
const NVIDIA_SMI_TIMEOUT_MS = 3000
const QUERY = ['--query-gpu=name,memory.total,memory.free,driver_version', '--format=csv,noheader,nounits']

/** `dir` is where models live: its file system's free space is reported (default: cwd). */
export async function detectHardware(dir: string = process.cwd()): Promise<Hardware> {
  const all = cpus()
  const [disk, gpu] = await Promise.all([diskFree(dir), detectGpu()])
  return {
    cpu: { model: all[0]?.model.trim() ?? 'unknown', cores: all.length },
    ramTotal: totalmem(),
    ramFree: freemem(),
    disk,
    gpu,
    cudaProvider: safe(cudaAvailable, false)
  }
}

/**
 * Memory a node may plan with: free VRAM on CUDA; on CPU 70% of available RAM, leaving room
 * for Node, the OS and whatever else the operator runs. An explicit override wins.
 */
export function memoryBudget(hw: Hardware, device: 'cuda' | 'cpu', override?: number): number {
  if (override !== undefined) return override
  if (device === 'cuda') return hw.gpu.vramFree ?? 0
  return Math.floor(hw.ramFree * 0.7)
}

/** Parses `nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv,noheader,nounits`. */
export function parseNvidiaSmi(csv: string): GpuInfo {
  const rows = csv
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && l.includes(','))
  if (rows.length === 0) return { present: false, count: 0, source: 'none' }
  // The name never holds a comma in practice, but split from the right to be safe.
  const cells = rows[0].split(',').map((c) => c.trim())
  const [total, free, driver] = cells.slice(-3)
  const name = cells.slice(0, -3).join(',')
  const mib = (v: string | undefined): number | undefined => {
    const n = Number(v)
    return v !== undefined && v !== '' && Number.isFinite(n) ? n * MiB : undefined
  }
  return {
    present: true,
    count: rows.length,
    name: name !== '' ? name : undefined,
    vramTotal: mib(total),
    vramFree: mib(free),
    driver: driver !== undefined && /^\d/.test(driver) ? driver : undefined,
    source: 'nvidia-smi'
  }
}

async function detectGpu(): Promise<GpuInfo> {
  const csv = await run('nvidia-smi', QUERY)
  if (csv === undefined) return { present: false, count: 0, source: 'none' }
  const gpu = parseNvidiaSmi(csv)
  if (!gpu.present) return gpu
  // Only the banner of plain `nvidia-smi` says which CUDA version the driver supports.
  const banner = await run('nvidia-smi', [])
  const cuda = banner?.match(/CUDA Version:\s*([\d.]+)/)?.[1]
  return cuda !== undefined ? { ...gpu, cudaVersion: cuda } : gpu
}

/** stdout of a command, or undefined when it is missing, fails or takes too long. */
async function run(cmd: string, args: string[]): Promise<string | undefined> {
  return await new Promise((resolve) => {
    try {
      execFile(cmd, args, { timeout: NVIDIA_SMI_TIMEOUT_MS, windowsHide: true }, (err, stdout) => {
        resolve(err === null ? stdout : undefined)
      })
    } catch {
      resolve(undefined)
    }
  })
}

/** Free space for unprivileged writes; walks up to the nearest existing directory (a model dir may not exist yet). */
async function diskFree(dir: string): Promise<{ path: string; free: number }> {
  let path = resolve(dir)
  for (;;) {
    try {
      const s = await statfs(path)
      return { path, free: s.bavail * s.bsize }
    } catch {
      const up = dirname(path)
      if (up === path) return { path, free: 0 }
      path = up
    }
  }
}

function safe<T>(f: () => T, fallback: T): T {
  try {
    return f()
  } catch {
    return fallback
  }
}
