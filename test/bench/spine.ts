/**
 * Spine benchmark: greedy decode on onnxruntime-node for a preset, whole model in one process.
 * Measures, never asserts.
 */
import { access } from 'node:fs/promises'
import { join } from 'node:path'
import { randomWeights } from '../../shared/model/random.js'
import { preset } from '../../shared/model/config.js'
import { MANIFEST_FILE } from '../../shared/manifest.js'
import { Pipeline, generate } from '../../shared/pipeline.js'
import { kvLayout, type KvLayout, type WeightDType } from '../../shared/shard/build.js'
import { buildModel } from '../../host/model-store.js'
import { loadModel } from '../../native-node/store.js'

export interface DecodeResult {
  preset: string
  dtype: WeightDType
  params: number
  /** The shards' files on disk. */
  bytes: number
  loadMs: number
  prefillMs: number
  promptTokens: number
  decodeTokens: number
  tokensPerSecond: number
  msPerToken: number
  msPerLayerPerToken: number
  device: string
}

/** Builds random:PRESET:1 into `cacheDir` once, then reuses it. */
export async function ensureModel(cacheDir: string, name: string, dtype: WeightDType, shards = 1, kv?: KvLayout): Promise<string> {
  // The layout is in the name: a cache built before the default changed must not stand in for it.
  const dir = join(cacheDir, `${name}-${dtype}-${shards}-${kvLayout(kv)}`)
  if (
    !(await access(join(dir, MANIFEST_FILE)).then(
      () => true,
      () => false
    ))
  ) {
    console.error(`building ${name} (${dtype}, ${shards} shard(s), kv ${kvLayout(kv)}) into ${dir} …`)
    await buildModel(randomWeights(preset(name), 1), dir, { source: `random:${name}:1`, dtype, shards, kv })
  }
  return dir
}

export async function benchDecode(cacheDir: string, name: string, dtype: WeightDType, decodeTokens = 128, promptTokens = 16): Promise<DecodeResult> {
  const dir = await ensureModel(cacheDir, name, dtype)
  const t0 = performance.now()
  const { manifest, runners } = await loadModel(dir, { device: 'auto' })
  const loadMs = performance.now() - t0
  const prompt = Array.from({ length: promptTokens }, (_, i) => 1 + ((i * 7) % (manifest.config.vocabSize - 1)))

  // One warm-up generation so first-run allocations are not counted.
  const warm = new Pipeline(runners.map((r) => r.open()))
  for await (const _ of generate(warm, { prompt, maxTokens: 4 })) {
    /* warm */
  }
  warm.close()

  const p = new Pipeline(runners.map((r) => r.open()))
  const start = performance.now()
  let prefillMs = 0
  let n = 0
  for await (const _ of generate(p, { prompt, maxTokens: decodeTokens + 1 })) {
    if (n++ === 0) prefillMs = performance.now() - start
  }
  const decodeMs = performance.now() - start - prefillMs
  p.close()
  await Promise.all(runners.map(async (r) => await r.dispose()))
  const msPerToken = decodeMs / decodeTokens
  return {
    preset: name,
    dtype,
    params: 0,
    bytes: manifest.shards.reduce((a, sh) => a + sh.bytes, 0),
    loadMs,
    prefillMs,
    promptTokens,
    decodeTokens,
    tokensPerSecond: 1000 / msPerToken,
    msPerToken,
    msPerLayerPerToken: msPerToken / manifest.config.nLayers,
    device: runners[0].device
  }
}
