/**
 * Loading a built model directory's shards on onnxruntime-node, each verified against the
 * manifest first (host/model-store.ts reads and writes the directory).
 */
import { join } from 'node:path'
import type { Manifest } from '../shared/manifest.js'
import { ModelFormatError } from '../shared/errors.js'
import type { ShardRunner } from '../shared/runner.js'
import { readManifest, verifyShardFiles } from '../host/model-store.js'
import type { OrtNodeOptions } from './ort.js'

/** Verifies and loads one shard of a model directory on onnxruntime-node. */
export async function loadShard(dir: string, manifest: Manifest, index: number, opts: OrtNodeOptions = {}): Promise<ShardRunner> {
  const shard = manifest.shards[index]
  if (shard === undefined) throw new ModelFormatError(`model has ${manifest.shards.length} shards; there is no shard ${index}`)
  await verifyShardFiles(dir, shard)
  // onnxruntime-node loads on first use, so the relay and the build tools never load it.
  const { loadShardNode } = await import('./ort.js')
  return await loadShardNode(join(dir, shard.files[0].name), shard, manifest.config, opts)
}

/** Verifies and loads every shard, in order. */
export async function loadModel(dir: string, opts: OrtNodeOptions = {}): Promise<{ manifest: Manifest; runners: ShardRunner[] }> {
  const manifest = await readManifest(dir)
  const runners: ShardRunner[] = []
  for (const s of manifest.shards) runners.push(await loadShard(dir, manifest, s.index, opts))
  return { manifest, runners }
}
