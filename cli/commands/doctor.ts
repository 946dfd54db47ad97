/**
 * `tessera doctor` — a node operator's preflight: one line per check (✓ ok, ! worth a look,
 * ✗ blocks running a node), each shortfall with what to do about it. Exit code 1 on any ✗.
 */
import type { Command } from 'commander'
import bytes from 'bytes'
import { createRequire } from 'node:module'
import { join, basename } from 'node:path'
import { stat } from 'node:fs/promises'
import { setQuiet } from '../../shared/log.js'
import { planMemory } from '../../shared/plan.js'
import { ShardHashError } from '../../shared/errors.js'
import type { Manifest } from '../../shared/manifest.js'
import type { ShardRunner } from '../../shared/runner.js'
import { detectHardware, memoryBudget, type Hardware } from '../../native-node/hardware.js'
import { measureMsPerLayer } from '../../shared/node/speed.js'
import { readManifest, verifyShardFiles } from '../../host/model-store.js'
import { loadShardNode } from '../../native-node/ort.js'
import { memory } from './options.js'

export interface Check { name: string, status: 'ok' | 'warn' | 'fail', value: string, fix?: string }

export interface DoctorOptions { relay?: string, model?: string, memory?: number }

const GiB = 2 ** 30
const fmt = (n: number): string => bytes.format(n, { unitSeparator: ' ', decimalPlaces: 1 }) ?? String(n)
/** Transports reject with Errors, AggregateErrors with an empty message, or bare error events. */
function msg (err: unknown): string {
  if (err instanceof AggregateError && err.message === '') return err.errors.map(msg).join('; ')
  const m = (err as { message?: unknown } | null)?.message
  return typeof m === 'string' && m !== '' ? m : String(err)
}
const CUDA_INSTALL = 'ONNXRUNTIME_NODE_INSTALL=cuda12 npm install onnxruntime-node --onnxruntime-node-install=cuda12 (README "CUDA")'
const SYMBOL = { ok: '✓', warn: '!', fail: '✗' } as const

export function registerDoctor (program: Command): void {
  program.command('doctor')
    .description('check this machine before running a node: runtime, GPU, memory, disk, a model, the relay')
    .option('--relay <addr>', 'relay multiaddr to measure latency to, e.g. /ip4/203.0.113.7/tcp/9090/ws/p2p/12D3Koo…')
    .option('--model <dir>', 'a built model directory: verify it, plan it and time it on this machine')
    .option('--memory <size>', 'memory this node may use (default: free VRAM on CUDA, 70% of free RAM on CPU)', memory)
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

export async function runDoctor (o: DoctorOptions): Promise<Check[]> {
  const hw = await detectHardware(o.model)
  let manifest: Manifest | undefined
  let manifestError: unknown
  if (o.model !== undefined) manifest = await readManifest(o.model).catch((err) => { manifestError = err; return undefined })
  const checks = systemChecks(hw, manifest)
  if (o.model !== undefined) {
    if (manifest === undefined) {
      checks.push({ name: 'manifest', status: 'fail', value: msg(manifestError), fix: 'point --model at a directory written by tessera build-model' })
    } else {
      checks.push(...await modelChecks(o.model, manifest, hw, o.memory))
    }
  }
  if (o.relay !== undefined) checks.push(...await probeRelay(o.relay))
  return checks
}

function systemChecks (hw: Hardware, manifest?: Manifest): Check[] {
  const checks: Check[] = []
  const [major, minor] = process.versions.node.split('.').map(Number)
  const nodeOk = major > 20 || (major === 20 && minor >= 19)
  checks.push(nodeOk
    ? { name: 'Node.js', status: 'ok', value: `v${process.versions.node}${major >= 22 ? '' : ' (libp2p runs through the Node 20 shim; 22+ needs none)'}` }
    : { name: 'Node.js', status: 'fail', value: `v${process.versions.node}`, fix: 'install Node 20.19+ (22+ needs no shim)' })
  // ort.ts loaded already (this module imports it), so reaching here means it loads.
  const version = (() => { try { return (createRequire(import.meta.url)('onnxruntime-node/package.json') as { version: string }).version } catch { return '?' } })()
  checks.push({ name: 'onnxruntime-node', status: 'ok', value: `${version} loads` })
  if (hw.cudaProvider) checks.push({ name: 'CUDA provider', status: 'ok', value: 'installed' })
  else if (hw.gpu.present) checks.push({ name: 'CUDA provider', status: 'warn', value: 'not installed: shards run on the CPU despite the GPU', fix: `install it: ${CUDA_INSTALL}` })
  else checks.push({ name: 'CUDA provider', status: 'ok', value: 'not installed (not needed without an NVIDIA GPU)' })

  const g = hw.gpu
  if (!g.present) {
    checks.push({ name: 'GPU', status: 'warn', value: 'no NVIDIA GPU found (nvidia-smi absent or failing): this node runs on the CPU', fix: 'if this machine has an NVIDIA GPU, install its driver so that nvidia-smi works' })
  } else {
    checks.push({ name: 'GPU', status: 'ok', value: `${g.name ?? 'NVIDIA GPU'}${g.count > 1 ? ` (first of ${g.count}; a node uses one)` : ''}` })
    const driverMajor = Number(g.driver?.split('.')[0])
    // CUDA 12 (what onnxruntime-node's provider is built for) needs driver 525.60+ on Linux.
    checks.push(Number.isFinite(driverMajor) && driverMajor >= 525
      ? { name: 'NVIDIA driver', status: 'ok', value: `${g.driver}${g.cudaVersion !== undefined ? `, CUDA ${g.cudaVersion}` : ''}` }
      : { name: 'NVIDIA driver', status: 'warn', value: g.driver ?? 'unknown version', fix: 'the CUDA 12 provider needs driver 525.60 or newer: update the NVIDIA driver' })
    checks.push(g.vramFree === undefined
      ? { name: 'VRAM', status: 'warn', value: 'nvidia-smi did not report memory', fix: 'give the budget with --memory' }
      : { name: 'VRAM', status: g.vramFree < 2 * GiB ? 'warn' : 'ok', value: `${fmt(g.vramFree)} free of ${fmt(g.vramTotal ?? 0)}`, fix: g.vramFree < 2 * GiB ? 'other processes hold the GPU memory: stop them (nvidia-smi lists them)' : undefined })
  }
  const lowRam = hw.ramFree < 2 * GiB
  checks.push({ name: 'RAM', status: lowRam ? 'warn' : 'ok', value: `${fmt(hw.ramFree)} available of ${fmt(hw.ramTotal)}`, fix: lowRam ? 'close other programs, or give a smaller --memory' : undefined })
  const modelBytes = manifest?.shards.reduce((a, s) => a + s.bytes, 0)
  const need = modelBytes ?? 2 * GiB
  const lowDisk = hw.disk.free < need
  checks.push({
    name: 'disk',
    status: lowDisk ? 'warn' : 'ok',
    value: `${fmt(hw.disk.free)} free at ${hw.disk.path}${modelBytes !== undefined ? `; the model's shards take ${fmt(modelBytes)}` : ''}`,
    fix: lowDisk ? `free ${fmt(need - hw.disk.free)} more to ${modelBytes !== undefined ? 'rebuild or update this model' : 'hold a model'}` : undefined
  })
  checks.push({ name: 'CPU', status: hw.cpu.cores < 2 ? 'warn' : 'ok', value: `${hw.cpu.cores} core(s), ${hw.cpu.model}`, fix: hw.cpu.cores < 2 ? 'one core makes CPU shards slow: prefer a GPU or more cores' : undefined })
  return checks
}

async function modelChecks (dir: string, m: Manifest, hw: Hardware, override?: number): Promise<Check[]> {
  const c = m.config
  const checks: Check[] = [{ name: 'manifest', status: 'ok', value: `${m.name}: ${c.nLayers} layers in ${m.shards.length} shard(s), ${m.dtype}, root ${m.root.slice(0, 16)}…` }]
  const bad: Check[] = []
  for (const s of m.shards) {
    try {
      await verifyShardFiles(dir, s)
    } catch (err) {
      const file = err instanceof ShardHashError ? err.file : join(dir, s.files[0].name)
      const missing = !await stat(file).then(() => true, () => false)
      bad.push({ name: `shard ${s.index} hash`, status: 'fail', value: `${basename(file)} ${missing ? 'is missing' : 'does not match its sha256 in the manifest'} (${file})`, fix: 'rebuild the model (tessera build-model) or download the file again' })
    }
  }
  const files = m.shards.reduce((a, s) => a + s.files.length, 0)
  checks.push(...(bad.length === 0 ? [{ name: 'shard hashes', status: 'ok' as const, value: `${files} file(s) in ${m.shards.length} shard(s) match the manifest` }] : bad))

  const device = hw.cudaProvider && hw.gpu.present ? 'cuda' : 'cpu'
  const budget = memoryBudget(hw, device, override)
  const plan = planMemory(c, { dtype: m.dtype, budget })
  const source = override !== undefined ? '--memory' : device === 'cuda' ? 'free VRAM' : '70% of available RAM'
  checks.push({
    name: 'plan',
    status: plan.layers > 0 ? 'ok' : 'fail',
    value: `${plan.layers} of ${c.nLayers} layers fit in ${fmt(budget)} (${source}, ${device}) at ${fmt(plan.perLayer)} per layer; the whole model needs ${fmt(plan.wholeModel)}`,
    fix: plan.layers > 0 ? undefined : 'free memory, give --memory if the detected budget is wrong, or build the model with --dtype int4'
  })
  if (bad.length > 0) return [...checks, { name: 'speed', status: 'warn', value: 'not measured: the shards do not verify' }]
  checks.push(await speedCheck(dir, m, budget, device))
  return checks
}

/** Times decode on as much of the model as fits: all of it, else the first shard alone. */
async function speedCheck (dir: string, m: Manifest, budget: number, want: 'cuda' | 'cpu'): Promise<Check> {
  const total = m.shards.reduce((a, s) => a + s.bytes, 0)
  const shards = total <= budget ? m.shards : m.shards[0].bytes <= budget ? [m.shards[0]] : []
  if (shards.length === 0) return { name: 'speed', status: 'warn', value: 'not measured: no shard fits in the memory budget' }
  const runners: ShardRunner[] = []
  try {
    // The hashes were just verified, so load straight from ort.ts rather than hash again via loadModel.
    for (const s of shards) runners.push(await loadShardNode(join(dir, s.files[0].name), s, m.config, { device: 'auto' }))
    const layers = shards[shards.length - 1].layers[1] - shards[0].layers[0]
    const context = Math.max(1, Math.min(32, m.config.maxSeqLen - 16))
    const ms = await measureMsPerLayer(runners, layers, { dim: m.config.dim, vocabSize: m.config.vocabSize, context })
    const device = runners[0].device
    const part = shards.length === m.shards.length ? `${layers} layers` : `first shard only, ${layers} layers: the whole model does not fit`
    const fellBack = want === 'cuda' && device !== 'cuda'
    return {
      name: 'speed',
      status: fellBack ? 'warn' : 'ok',
      value: `${ms.toFixed(3)} ms per layer per token on ${device} (${part}; median of 8 decode steps after a ${context}-token prefill)`,
      fix: fellBack ? 'CUDA was expected but the session opened on the CPU: run with DEBUG=tessera:* to see why' : undefined
    }
  } catch (err) {
    return { name: 'speed', status: 'fail', value: `could not run the model: ${msg(err)}`, fix: 'rebuild the model with this version of tessera' }
  } finally {
    await Promise.all(runners.map(async (r) => await r.dispose()))
  }
}

const RELAY_DEADLINE_MS = 8000
const PINGS = 5
const HOP_PROTOCOL = '/libp2p/circuit/relay/0.2.0/hop'

/**
 * Dials the relay from a throwaway libp2p node and pings it. The relay offers no bandwidth
 * protocol, so only round trips are measured here; throughput shows on the first inference.
 * libp2p is imported lazily so other commands do not pay for it.
 */
async function probeRelay (addr: string): Promise<Check[]> {
  const { multiaddr } = await import('@multiformats/multiaddr')
  let ma
  try { ma = multiaddr(addr) } catch (err) {
    return [{ name: 'relay', status: 'fail', value: `${addr} is not a multiaddr (${msg(err)})`, fix: 'give the address the relay prints at start-up, e.g. /ip4/203.0.113.7/tcp/9090/ws/p2p/12D3Koo…' }]
  }
  const [{ createLibp2p }, { webSockets }, { tcp }, { noise }, { yamux }, { identify }, { ping }, { ANNOUNCE_PROTOCOL }] = await Promise.all([
    import('libp2p'), import('@libp2p/websockets'), import('@libp2p/tcp'), import('@chainsafe/libp2p-noise'),
    import('@chainsafe/libp2p-yamux'), import('@libp2p/identify'), import('@libp2p/ping'), import('../../shared/protocol/capability.js')
  ])
  const node = await createLibp2p({
    transports: [webSockets(), tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify(), ping: ping() }
  })
  // A ref'd timer: AbortSignal.timeout() is unref'd and would let the process exit mid-dial.
  const ctl = new AbortController()
  const timer = setTimeout(() => ctl.abort(new Error('timed out')), RELAY_DEADLINE_MS)
  const signal = ctl.signal
  const checks: Check[] = []
  try {
    const t0 = performance.now()
    const conn = await bounded(node.dial(ma, { signal }), signal)
    const connectMs = performance.now() - t0
    const rtts: number[] = []
    let pingError: unknown
    try {
      for (let i = 0; i < PINGS; i++) rtts.push(await bounded(node.services.ping.ping(conn.remotePeer, { signal }), signal))
    } catch (err) { pingError = err }
    const bandwidth = 'bandwidth is not measured here (the relay offers no bandwidth protocol); it shows on the first inference'
    if (rtts.length === 0) {
      checks.push({ name: 'relay', status: 'warn', value: `connected in ${connectMs.toFixed(0)} ms, but it does not answer ping (${msg(pingError)}); ${bandwidth}`, fix: 'enable the ping service on the relay' })
    } else {
      const sorted = [...rtts].sort((a, b) => a - b)
      checks.push({ name: 'relay', status: 'ok', value: `connected in ${connectMs.toFixed(0)} ms; ping round trip ${sorted[sorted.length >> 1]} ms median, ${sorted[0]} ms best of ${rtts.length}; ${bandwidth}` })
    }
    const protocols = await bounded(node.services.identify.identify(conn, { signal }), signal).then((r) => r.protocols, () => undefined)
    if (protocols === undefined) {
      checks.push({ name: 'relay protocols', status: 'warn', value: 'the relay did not identify itself', fix: 'is this a Tessera relay? check the address' })
    } else {
      const missing = [ANNOUNCE_PROTOCOL, HOP_PROTOCOL].filter((p) => !protocols.includes(p))
      checks.push(missing.length === 0
        ? { name: 'relay protocols', status: 'ok', value: 'offers node announcements and circuit relay v2' }
        : { name: 'relay protocols', status: 'warn', value: `does not offer ${missing.join(', ')}`, fix: 'nodes cannot announce or be reached through it: point --relay at a Tessera relay' })
    }
  } catch (err) {
    const port = ma.getComponents().find((c) => c.name === 'tcp' || c.name === 'udp')?.value ?? '?'
    checks.push({
      name: 'relay',
      status: 'fail',
      value: `cannot reach ${addr}: ${signal.aborted ? `no answer within ${RELAY_DEADLINE_MS / 1000} s (${msg(err)})` : msg(err)}`,
      fix: `check that the relay runs, that the address (and its /p2p/ peer id) is the one it prints at start-up, and that no firewall blocks port ${port} from here`
    })
  } finally {
    clearTimeout(timer)
    await bounded(Promise.resolve(node.stop()), AbortSignal.timeout(2000)).catch(() => {})
  }
  return checks
}

/** Settles with `p`, or rejects when `signal` aborts even if `p` ignores the signal. */
async function bounded<T> (p: Promise<T>, signal: AbortSignal): Promise<T> {
  p.catch(() => {})
  if (signal.aborted) throw signal.reason
  return await new Promise<T>((resolve, reject) => {
    const onAbort = (): void => { reject(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
    p.then(resolve, reject).finally(() => { signal.removeEventListener('abort', onAbort) })
  })
}
