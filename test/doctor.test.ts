/** Hardware detection, self-measured speed and `tessera doctor`. */
import '../host/shim.js' // libp2p in this process (the fake relay) needs it on Node 20
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { cp, open } from 'node:fs/promises'
import { join } from 'node:path'
import { createLibp2p, type Libp2p } from 'libp2p'
import { webSockets } from '@libp2p/websockets'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { buildModel } from '../host/model-store.js'
import { loadModel } from '../native-node/store.js'
import { randomWeights } from '../shared/model/random.js'
import { preset } from '../shared/model/config.js'
import type { ShardRunner } from '../shared/runner.js'
import { detectHardware, memoryBudget, parseNvidiaSmi, type Hardware } from '../native-node/hardware.js'
import { measureMsPerLayer } from '../shared/node/speed.js'
import type { Check } from '../cli/commands/doctor.js'
import { tessera } from './helpers/cli.js'
import { tempDir } from './helpers/paths.js'

const GiB = 2 ** 30

describe('detectHardware', () => {
  it('returns sane numbers on this machine', async () => {
    const hw = await detectHardware()
    expect(hw.cpu.cores).toBeGreaterThanOrEqual(1)
    expect(hw.cpu.model.length).toBeGreaterThan(0)
    expect(hw.ramTotal).toBeGreaterThan(256 * 2 ** 20)
    expect(hw.ramFree).toBeGreaterThan(0)
    expect(hw.ramFree).toBeLessThanOrEqual(hw.ramTotal)
    expect(hw.disk.free).toBeGreaterThan(0)
    expect(hw.disk.path).toBe(process.cwd())
    if (hw.gpu.present) {
      expect(hw.gpu.source).toBe('nvidia-smi')
      expect(hw.gpu.count).toBeGreaterThanOrEqual(1)
    } else {
      // CI and this machine: no nvidia-smi, and .npmrc skips the CUDA provider.
      expect(hw.gpu).toEqual({ present: false, count: 0, source: 'none' })
      expect(hw.cudaProvider).toBe(false)
    }
  })

  it('reports the nearest existing directory for a path not created yet', async () => {
    const dir = tempDir('hw')
    expect((await detectHardware(join(dir, 'not', 'yet'))).disk.path).toBe(dir)
  })

  it('parses nvidia-smi csv defensively: first GPU, counted, [N/A] as unknown', () => {
    const gpu = parseNvidiaSmi('NVIDIA H100 80GB HBM3, 81559, 80000, 550.54.15\nNVIDIA H100 80GB HBM3, 81559, 81000, 550.54.15\n')
    expect(gpu).toEqual({
      present: true,
      count: 2,
      name: 'NVIDIA H100 80GB HBM3',
      vramTotal: 81559 * 2 ** 20,
      vramFree: 80000 * 2 ** 20,
      driver: '550.54.15',
      source: 'nvidia-smi'
    })
    const odd = parseNvidiaSmi('Tesla T4, [N/A], [Not Supported], 470.82.01')
    expect(odd).toMatchObject({ present: true, count: 1, name: 'Tesla T4', vramTotal: undefined, vramFree: undefined, driver: '470.82.01' })
    expect(parseNvidiaSmi('No devices were found\n').present).toBe(false)
    expect(parseNvidiaSmi('').present).toBe(false)
  })

  it('budgets free VRAM on CUDA, 70% of available RAM on CPU, or the override', () => {
    const hw: Hardware = {
      cpu: { model: 'x', cores: 4 },
      ramTotal: 32 * GiB,
      ramFree: 10 * GiB,
      disk: { path: '/', free: 1 },
      gpu: { present: true, count: 1, vramFree: 20 * GiB, vramTotal: 24 * GiB, source: 'nvidia-smi' },
      cudaProvider: true
    }
    expect(memoryBudget(hw, 'cuda')).toBe(20 * GiB)
    expect(memoryBudget(hw, 'cpu')).toBe(Math.floor(7 * GiB))
    expect(memoryBudget(hw, 'cuda', 3 * GiB)).toBe(3 * GiB)
  })
})

describe('measureMsPerLayer and tessera doctor on a tiny model', () => {
  const dir = tempDir('doctor')
  let runners: ShardRunner[] = []

  beforeAll(async () => {
    await buildModel(randomWeights(preset('tiny'), 1), dir, { source: 'x', shards: 2 })
    runners = (await loadModel(dir, { device: 'cpu' })).runners
  })
  afterAll(async () => {
    await Promise.all(runners.map(async (r) => await r.dispose()))
  })

  it('times the first shard, a non-first shard and the whole chain', async () => {
    expect(runners.map((r) => r.shard.layers)).toEqual([
      [0, 2],
      [2, 4]
    ])
    for (const [chain, layers] of [
      [[runners[0]], 2],
      [[runners[1]], 2],
      [runners, 4]
    ] as const) {
      const ms = await measureMsPerLayer([...chain], layers, { dim: 64, vocabSize: 512, steps: 4, context: 16 })
      expect(ms).toBeGreaterThan(0)
      expect(Number.isFinite(ms)).toBe(true)
    }
  })

  it('refuses a wrong layer count, a missing dim and a gapped chain', async () => {
    await expect(measureMsPerLayer(runners, 2)).rejects.toThrow(/covers 4 layers, not 2/)
    await expect(measureMsPerLayer([runners[1]], 2)).rejects.toThrow(/give the model's dim/)
    await expect(measureMsPerLayer([runners[1], runners[0]], 4)).rejects.toThrow(/not contiguous/)
  })

  it('doctor --model --json reports the manifest, hashes, plan and speed as ok', async () => {
    const r = await tessera(['doctor', '--model', dir, '--json'])
    expect(r.code, r.stderr).toBe(0)
    const checks = JSON.parse(r.stdout).checks as Check[]
    const by = (name: string): Check | undefined => checks.find((c) => c.name === name)
    for (const name of ['Node.js', 'onnxruntime-node', 'RAM', 'disk', 'CPU', 'manifest', 'shard hashes', 'plan', 'speed'])
      expect(by(name)?.status, name).toBe('ok')
    expect(by('plan')?.value).toMatch(/^4 of 4 layers fit/)
    expect(by('speed')?.value).toMatch(/^\d+\.\d+ ms per layer per token on cpu/)
    expect(checks.every((c) => c.status === 'ok' || c.fix !== undefined)).toBe(true)
  })

  it('a corrupted shard file fails naming the file, with exit code 1', async () => {
    const bad = tempDir('doctor-bad')
    await cp(dir, bad, { recursive: true })
    const fh = await open(join(bad, 'shard-1.onnx.data'), 'r+')
    await fh.write(Buffer.from([0xff, 0xee]), 0, 2, 100)
    await fh.close()
    const r = await tessera(['doctor', '--model', bad, '--json'])
    expect(r.code).toBe(1)
    const checks = JSON.parse(r.stdout).checks as Check[]
    const failed = checks.filter((c) => c.status === 'fail')
    expect(failed).toHaveLength(1)
    expect(failed[0].name).toBe('shard 1 hash')
    expect(failed[0].value).toContain('shard-1.onnx.data')
    expect(failed[0].fix).toMatch(/rebuild/)
    expect(checks.find((c) => c.name === 'manifest')?.status).toBe('ok')
    const text = await tessera(['doctor', '--model', bad])
    expect(text.code).toBe(1)
    expect(text.stdout).toMatch(/✓ manifest/)
    expect(text.stdout).toMatch(/✗ shard 1 hash +shard-1\.onnx\.data does not match/)
  })
})

describe('tessera doctor --relay', () => {
  let relay: Libp2p | undefined
  afterAll(async () => {
    await relay?.stop()
  })

  it('fails cleanly and quickly when nobody listens, with a fix hint', async () => {
    const peer = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
    const started = Date.now()
    const r = await tessera(['doctor', '--relay', `/ip4/127.0.0.1/tcp/1/ws/p2p/${peer}`, '--json'], { timeout: 30_000 })
    expect(Date.now() - started).toBeLessThan(15_000)
    expect(r.code).toBe(1)
    const check = (JSON.parse(r.stdout).checks as Check[]).find((c) => c.name === 'relay')
    expect(check?.status).toBe('fail')
    expect(check?.value).toMatch(/cannot reach .*ECONNREFUSED/)
    expect(check?.fix).toMatch(/relay runs.*port 1/)
  })

  it('measures ping round trips to a live peer and says bandwidth is not measured', async () => {
    relay = await createLibp2p({
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0/ws'] },
      transports: [webSockets()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      services: { identify: identify(), ping: ping() }
    })
    const r = await tessera(['doctor', '--relay', relay.getMultiaddrs()[0].toString(), '--json'], { timeout: 30_000 })
    const checks = JSON.parse(r.stdout).checks as Check[]
    const check = checks.find((c) => c.name === 'relay')
    expect(check?.status, check?.value).toBe('ok')
    expect(check?.value).toMatch(/ping round trip \d+ ms median.*bandwidth is not measured/)
    // A bare libp2p peer is not a Tessera relay: a warning, not a failure.
    expect(checks.find((c) => c.name === 'relay protocols')?.status).toBe('warn')
    expect(r.code).toBe(0)
  })
})
