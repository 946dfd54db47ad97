/**
 * The tab's shard runtime: onnxruntime-web's WebGPU bundle, which also runs the WASM backend.
 * (The default bundle's older WebGPU backend failed on our graphs and then poisoned later
 * sessions on the page; see notes/platform.md.) The only browser module importing onnxruntime.
 */
import * as ort from 'onnxruntime-web/webgpu'
import type { LlamaConfig } from '../../../shared/model/config.js'
import type { ShardEntry } from '../../../shared/manifest.js'
import { OrtShardRunner, sessionFiles, type ShardRunner } from '../../../shared/runner.js'
import { newKey, newValue, SEQLENS_K } from '../../../shared/shard/io.js'
import { headDim } from '../../../shared/model/config.js'
import { onnx } from '../../../shared/shard/graph.js'
import { gpuKv } from './kv-gpu.js'
import { TesseraError } from '../../../shared/errors.js'

export type Backend = 'webgpu' | 'wasm'

export interface BrowserRuntimeOptions {
  /** Where the relay serves onnxruntime-web's .wasm/.mjs files (never a CDN). */
  wasmPaths: string
  /** WASM threads (runtime/threads.ts chooses them); set once per page, by its first shard. */
  threads?: number
  /** On WebGPU, keep append shards' KV caches on the GPU between steps (default); false keeps them in the tab's memory, as before (for comparison). */
  deviceKv?: boolean
}

let configured = false

/** Opens a shard whose files the caller already checked against the manifest. */
export async function loadShardBrowser(
  files: Map<string, Uint8Array>,
  shard: ShardEntry,
  config: LlamaConfig,
  backend: Backend,
  o: BrowserRuntimeOptions
): Promise<ShardRunner> {
  if (!configured) {
    ort.env.wasm.wasmPaths = o.wasmPaths
    ort.env.wasm.numThreads = o.threads ?? 1
    configured = true
  }
  const { graph, externalData } = sessionFiles(files, shard)
  const options = { executionProviders: [backend], externalData, graphOptimizationLevel: 'all' as const }
  // On WebGPU an append graph's new cache rows stay on the GPU, for kv-gpu.ts to copy into the caches there.
  const newRows = backend === 'webgpu' && o.deviceKv !== false ? appendOutputs(graph, shard) : []
  const session = await ort.InferenceSession.create(graph, {
    ...options,
    ...(newRows.length > 0 ? { preferredOutputLocation: Object.fromEntries(newRows.map((n) => [n, 'gpu-buffer' as const])) } : {})
  })
  if (backend === 'webgpu' && session.inputNames.includes(SEQLENS_K)) {
    // Whatever the manifest said: a tab that computed wrong would be slashed for it.
    await session.release()
    throw new TesseraError(
      'CONFIG',
      `shard ${shard.layers[0]}-${shard.layers[1]} keeps its KV cache with GroupQueryAttention, which this tab's WebGPU runtime computes wrongly; contribute with WASM`
    )
  }
  return new OrtShardRunner(
    ort.Tensor,
    session,
    shard,
    config,
    backend,
    {
      graph: async () => graph,
      load: async (part) => await ort.InferenceSession.create(part, options)
    },
    {
      kvInPlace: false,
      oneRunAtATime: true,
      ...(newRows.length > 0 ? { deviceKv: gpuKv(await ort.env.webgpu.device, ort.Tensor, config.nKvHeads, headDim(config)) } : {})
    }
  )
}

/** The new-row outputs (new_key.L, new_value.L) if the graph is an append one, else none. */
function appendOutputs(graph: Uint8Array, shard: ShardEntry): string[] {
  const outputs = new Set(onnx.ModelProto.decode(graph).graph?.output?.map((o) => o.name) ?? [])
  const names = Array.from({ length: shard.layers[1] - shard.layers[0] }, (_, i) => [newKey(shard.layers[0] + i), newValue(shard.layers[0] + i)]).flat()
  return names.every((n) => outputs.has(n)) ? names : []
}
