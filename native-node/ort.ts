/**
 * The only module that imports onnxruntime-node. It picks the execution provider once:
 * CUDA when its provider library is installed and a session opens on it, CPU otherwise, and
 * says which in the log.
 */
import * as ort from 'onnxruntime-node'
import { createRequire } from 'node:module'
import { existsSync } from 'node:fs'
import { readFile, rm, writeFile } from 'node:fs/promises'
import { randomUUID } from 'node:crypto'
import { dirname, join } from 'node:path'
import type { LlamaConfig } from '../shared/model/config.js'
import type { ShardEntry } from '../shared/manifest.js'
import { OrtShardRunner, type DeviceKind, type PartLoader, type ShardRunner } from '../shared/runner.js'
import { BATCH_DEFAULTS, type BatchLimits } from '../shared/batch.js'
import { ConfigError } from '../shared/errors.js'
import { logger } from '../shared/log.js'

const log = logger('tessera:node:runner')

export type DevicePreference = 'auto' | 'cuda' | 'cpu'

export interface OrtNodeOptions {
  device?: DevicePreference
  /** Intra-op threads for the CPU provider (0 = onnxruntime's default: one per core). */
  threads?: number
  /**
   * Let idle worker threads spin between runs (onnxruntime's default). Fast for one process
   * running the whole model; a network node turns it off, since it waits on the network most
   * of the time and spinning threads starve the network stack and neighbours on the same cores.
   */
  spin?: boolean
  /** Continuous batching of the shard's sessions (shared/batch.ts; flags --batch, --batch-wait-ms, --prefill-chunk). */
  batch?: BatchLimits
}

/**
 * Whether this onnxruntime-node install carries the CUDA provider library. (Its
 * listSupportedBackends() reports cuda as not bundled on Linux even when installed, so look
 * for the library next to the runtime's own.)
 */
export function cudaAvailable(): boolean {
  if (!ort.listSupportedBackends().some((b) => b.name === 'cuda')) return false
  const bin = join(dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json')), 'bin', 'napi-v6', process.platform, process.arch)
  return existsSync(join(bin, process.platform === 'win32' ? 'onnxruntime_providers_cuda.dll' : 'libonnxruntime_providers_cuda.so'))
}

let cudaFailure: string | undefined

/** Opens `modelPath` (its external data beside it) as a ShardRunner. */
export async function loadShardNode(modelPath: string, shard: ShardEntry, config: LlamaConfig, opts: OrtNodeOptions = {}): Promise<ShardRunner> {
  const want = opts.device ?? 'auto'
  const batch = opts.batch ?? BATCH_DEFAULTS
  const base: ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: 'all',
    intraOpNumThreads: opts.threads ?? 0,
    ...(opts.spin === false ? { extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } } } : {})
  }
  const noCuda = (): ConfigError => new ConfigError(`--device cuda was asked for, but ${cudaFailure}: install the CUDA provider or use --device auto`)
  if (want === 'cuda' && cudaFailure !== undefined) throw noCuda()
  if (want !== 'cpu' && cudaFailure === undefined) {
    if (!cudaAvailable()) {
      cudaFailure = 'the CUDA provider is not installed (see README "CUDA")'
    } else {
      try {
        const options = { ...base, executionProviders: ['cuda', 'cpu'] }
        const session = await ort.InferenceSession.create(modelPath, options)
        log.info(`shard ${shard.layers[0]}-${shard.layers[1]} on CUDA`)
        // Not in place on CUDA until measured there: GroupQueryAttention's CUDA kernel is fp16/bf16, so an fp32 one runs on the CPU provider.
        return new OrtShardRunner(ort.Tensor, session, shard, config, 'cuda', partLoader(modelPath, options), { kvInPlace: false }, batch)
      } catch (err) {
        cudaFailure = (err as Error).message
      }
    }
    if (want === 'cuda') throw noCuda()
    log.info(`using CPU: ${cudaFailure}`)
  }
  const options = { ...base, executionProviders: ['cpu'] }
  const session = await ort.InferenceSession.create(modelPath, options)
  const device: DeviceKind = 'cpu'
  log.debug(`shard ${shard.layers[0]}-${shard.layers[1]} on CPU`)
  // onnxruntime-node wraps JS buffers for inputs and preallocated outputs alike: the KV cache is updated in place.
  return new OrtShardRunner(ort.Tensor, session, shard, config, device, partLoader(modelPath, options), { kvInPlace: true }, batch)
}

/**
 * Parts of a shard (one block, for disputes) open from a graph file written beside the shard's
 * own: onnxruntime-node resolves external data next to the graph and refuses paths (links
 * included) that lead out of that folder. The file goes once the session holds the weights.
 */
function partLoader(modelPath: string, options: ort.InferenceSession.SessionOptions): PartLoader {
  return {
    graph: async () => new Uint8Array(await readFile(modelPath)),
    load: async (graph) => {
      const path = join(dirname(modelPath), `.part-${process.pid}-${randomUUID()}.onnx`)
      try {
        await writeFile(path, graph)
        return await ort.InferenceSession.create(path, options)
      } finally {
        await rm(path, { force: true })
      }
    }
  }
}
