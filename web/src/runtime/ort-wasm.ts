/**
 * The browser's shard runtime on onnxruntime-web's WASM backend (it also runs under Node,
 * which is how the tests prove both runtimes on the same shard files). The only module that
 * imports onnxruntime-web's default bundle; WebGPU uses its own bundle (see notes/platform.md).
 */
import * as ort from 'onnxruntime-web'
import type { LlamaConfig } from '../../../shared/model/config.js'
import type { ShardEntry } from '../../../shared/manifest.js'
import { OrtShardRunner, sessionFiles, type ShardRunner } from '../../../shared/runner.js'
import type { BatchLimits } from '../../../shared/batch.js'

export interface WasmOptions {
  /** Threads for the WASM backend (needs crossOriginIsolated in a browser). */
  threads?: number
  /** Where the .wasm files are served from (a browser); Node finds them in the package. */
  wasmPaths?: string
  /** Continuous batching of the shard's sessions (shared/batch.ts). */
  batch?: BatchLimits
}

/**
 * Opens a shard from bytes the caller has already checked against the manifest
 * (verifyShard in shared/manifest.ts): `files` maps each of the shard's file names to its bytes.
 */
export async function loadShardWasm(files: Map<string, Uint8Array>, shard: ShardEntry, config: LlamaConfig, opts: WasmOptions = {}): Promise<ShardRunner> {
  if (opts.threads !== undefined) ort.env.wasm.numThreads = opts.threads
  if (opts.wasmPaths !== undefined) ort.env.wasm.wasmPaths = opts.wasmPaths
  const { graph, externalData } = sessionFiles(files, shard)
  const options = { executionProviders: ['wasm'], externalData, graphOptimizationLevel: 'all' as const }
  const session = await ort.InferenceSession.create(graph, options)
  return new OrtShardRunner(
    ort.Tensor,
    session,
    shard,
    config,
    'wasm',
    {
      graph: async () => graph,
      load: async (part) => await ort.InferenceSession.create(part, options)
    },
    { kvInPlace: false, oneRunAtATime: true },
    opts.batch
  )
}
