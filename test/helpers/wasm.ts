import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { verifyShardFiles } from '../../host/model-store.js'
import { loadShardWasm } from '../../web/src/runtime/ort-wasm.js'
import type { Manifest } from '../../shared/manifest.js'
import type { ShardRunner } from '../../shared/runner.js'
import type { BatchLimits } from '../../shared/batch.js'

/** Every shard of a built model on onnxruntime-web's WASM backend (in Node), hash-checked first. */
export async function loadWasmRunners(dir: string, manifest: Manifest, batch?: BatchLimits): Promise<ShardRunner[]> {
  const runners: ShardRunner[] = []
  for (const shard of manifest.shards) {
    await verifyShardFiles(dir, shard)
    const files = new Map<string, Uint8Array>()
    for (const f of shard.files) files.set(f.name, await readFile(join(dir, f.name)))
    runners.push(await loadShardWasm(files, shard, manifest.config, { threads: 1, batch }))
  }
  return runners
}
