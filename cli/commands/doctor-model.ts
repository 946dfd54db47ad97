/**
 * `tessera doctor --model`: the model directory's shard hashes, how many of its layers fit this
 * machine's memory, and a timed decode on as much of it as fits.
 */
import { join, basename } from 'node:path'
import { stat } from 'node:fs/promises'
import { planMemory } from '../../shared/plan.js'
import { ShardHashError } from '../../shared/errors.js'
import type { Manifest } from '../../shared/manifest.js'
import type { ShardRunner } from '../../shared/runner.js'
import { measureMsPerLayer } from '../../shared/node/speed.js'
import { memoryBudget, type Hardware } from '../../native-node/hardware.js'
import { loadShardNode } from '../../native-node/ort.js'
import { verifyShardFiles } from '../../host/model-store.js'
import { fmt, msg, type Check } from './doctor-checks.js'

export async function modelChecks(dir: string, m: Manifest, hw: Hardware, override?: number): Promise<Check[]> {
  const c = m.config
  const summary = `${m.name}: ${c.nLayers} layers in ${m.shards.length} shard(s), ${m.dtype}, root ${m.root.slice(0, 16)}…`
  const checks: Check[] = [{ name: 'manifest', status: 'ok', value: summary }]
  const bad: Check[] = []
  for (const s of m.shards) {
    try {
      await verifyShardFiles(dir, s)
    } catch (err) {
      const file = err instanceof ShardHashError ? err.file : join(dir, s.files[0].name)
      const missing = !(await stat(file).then(
        () => true,
        () => false
      ))
      bad.push({
        name: `shard ${s.index} hash`,
        status: 'fail',
        value: `${basename(file)} ${missing ? 'is missing' : 'does not match its sha256 in the manifest'} (${file})`,
        fix: 'rebuild the model (tessera build-model) or download the file again'
      })
    }
  }
  const files = m.shards.reduce((a, s) => a + s.files.length, 0)
  const allMatch: Check = { name: 'shard hashes', status: 'ok', value: `${files} file(s) in ${m.shards.length} shard(s) match the manifest` }
  checks.push(...(bad.length === 0 ? [allMatch] : bad))

  const device = hw.cudaProvider && hw.gpu.present ? 'cuda' : 'cpu'
  const budget = memoryBudget(hw, device, override)
  const plan = planMemory(c, { dtype: m.dtype, budget })
  const source = override !== undefined ? '--memory' : device === 'cuda' ? 'free VRAM' : '70% of available RAM'
  checks.push({
    name: 'plan',
    status: plan.layers > 0 ? 'ok' : 'fail',
    value:
      `${plan.layers} of ${c.nLayers} layers fit in ${fmt(budget)} (${source}, ${device}) at ${fmt(plan.perLayer)} per layer; ` +
      `the whole model needs ${fmt(plan.wholeModel)}`,
    fix: plan.layers > 0 ? undefined : 'free memory, give --memory if the detected budget is wrong, or build the model with --dtype int4'
  })
  if (bad.length > 0) return [...checks, { name: 'speed', status: 'warn', value: 'not measured: the shards do not verify' }]
  checks.push(await speedCheck(dir, m, budget, device))
  return checks
}

/** Times decode on as much of the model as fits: all of it, else the first shard alone. */
async function speedCheck(dir: string, m: Manifest, budget: number, want: 'cuda' | 'cpu'): Promise<Check> {
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
