/**
 * Models on disk: a directory holding manifest.json, one `shard-I.onnx` + `shard-I.onnx.data`
 * per run of layers, and tokenizer.json (+ tokenizer_config.json) when the source had them.
 */
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, open, readFile, rename, rm, writeFile, copyFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { WeightSource } from '../shared/model/weights.js'
import { paramsPerLayer } from '../shared/model/config.js'
import { buildShard, kvLayout, type BuildProgress, type KvLayout, type WeightDType } from '../shared/shard/build.js'
import type { DataSink } from '../shared/shard/graph.js'
import { splitLayers, type SplitOptions } from '../shared/shard/split.js'
import { checkManifest, modelRoot, shardHash, MANIFEST_FILE, type FileEntry, type Manifest, type ShardEntry } from '../shared/manifest.js'
import { ShardHashError, ModelFormatError } from '../shared/errors.js'
import { loadModelText, modelText, type ModelText } from '../shared/text/model-text.js'
import { loadTokenizer } from '../shared/tokenizer.js'
import { chatTemplate } from '../shared/text/chat.js'
import { ChunkHasher, chunkSizeFor, digestBytes } from '../shared/files/chunks.js'

export interface BuildOptions extends SplitOptions {
  dtype?: WeightDType
  name?: string
  source: string
  /** Path of a tokenizer.json to copy beside the shards. */
  tokenizer?: string
  /** Path of its tokenizer_config.json (special tokens, chat template), copied too. */
  tokenizerConfig?: string
  /** Build only these shard indices (the manifest still lists them all when every one exists). */
  only?: number[]
  int4Accuracy?: number
  /** How attention keeps its KV cache (default: GroupQueryAttention where the head size allows; see shard/build.ts). */
  kv?: KvLayout
  progress?: (shard: number, ...rest: Parameters<BuildProgress>) => void
}

/** Builds every shard of `weights` into `dir` and writes the manifest last (its presence means complete). */
export async function buildModel(weights: WeightSource, dir: string, o: BuildOptions): Promise<Manifest> {
  // A tokenizer that cannot serve this model fails the build now, not the first request.
  if (o.tokenizer !== undefined) await checkTokenizer(o.tokenizer, o.tokenizerConfig, { name: o.name ?? o.source, config: weights.config })
  await mkdir(dir, { recursive: true })
  const dtype = o.dtype ?? 'fp32'
  const ranges = splitLayers(weights.config.nLayers, o)
  const shards: ShardEntry[] = []
  for (const [index, [start, end]] of ranges.entries()) {
    if (o.only !== undefined && !o.only.includes(index)) continue
    const onnxName = `shard-${index}.onnx`
    const sink = await fileSink(join(dir, `${onnxName}.data`), `${onnxName}.data`, dataChunkSize(weights, start, end, dtype))
    let graph: Uint8Array
    try {
      graph = await buildShard(weights, { start, end, dtype, int4Accuracy: o.int4Accuracy, kv: o.kv }, sink, (...p) => o.progress?.(index, ...p))
    } finally {
      await sink.close()
    }
    await writeFile(join(dir, onnxName), graph)
    const files: FileEntry[] = [
      { name: onnxName, bytes: graph.byteLength, ...digestBytes(graph) },
      { name: sink.fileName, bytes: sink.bytes, ...sink.digest() }
    ]
    const kv = kvLayout(o.kv)
    shards.push({
      index,
      layers: [start, end],
      dtype,
      files,
      sha256: shardHash(files),
      bytes: files[0].bytes + files[1].bytes,
      ...(kv === 'gqa' ? { kv } : {})
    })
  }
  const copied = async (from: string | undefined, name: string): Promise<FileEntry | null> => {
    if (from === undefined) return null
    await copyFile(from, join(dir, name))
    return await describeFile(dir, name)
  }
  const tokenizer = await copied(o.tokenizer, 'tokenizer.json')
  const tokenizerConfig = tokenizer === null ? null : await copied(o.tokenizerConfig, 'tokenizer_config.json')
  const manifest: Manifest = {
    tessera: 1,
    name: o.name ?? o.source,
    source: o.source,
    config: weights.config,
    dtype,
    tokenizer,
    tokenizerConfig,
    shards,
    root: modelRoot(shards),
    created: new Date().toISOString()
  }
  if (o.only === undefined) {
    const tmp = join(dir, `${MANIFEST_FILE}.tmp`)
    await writeFile(tmp, JSON.stringify(manifest, null, 2) + '\n')
    await rename(tmp, join(dir, MANIFEST_FILE))
  }
  return manifest
}

/** Loads the tokenizer and its chat template as a relay would: ids past the vocabulary or a broken template throw. */
async function checkTokenizer(json: string, config: string | undefined, model: Pick<Manifest, 'name' | 'config'>): Promise<void> {
  const cfg = config === undefined ? {} : (JSON.parse(await readFile(config, 'utf8')) as Record<string, unknown>)
  modelText(loadTokenizer(await readFile(json, 'utf8'), cfg), chatTemplate(cfg), model)
}

/**
 * The chunk size of a shard's data file, fixed before it is written (its hashes are taken while
 * appending): from the bytes its weights will take, estimated from the parameter count.
 */
function dataChunkSize(w: WeightSource, start: number, end: number, dtype: WeightDType): number {
  const perParam = dtype === 'fp32' ? 4 : dtype === 'fp16' ? 2 : 0.6 // int4 packs, with scales
  const estimate = (end - start) * paramsPerLayer(w.config) * perParam + (start === 0 || end === w.config.nLayers ? w.config.vocabSize * w.config.dim * 4 : 0)
  return chunkSizeFor(estimate)
}

/** Appends to a file while hashing it whole and by chunk, so a shard's hashes cost no second read. */
async function fileSink(
  path: string,
  fileName: string,
  chunkBytes: number
): Promise<DataSink & { bytes: number; digest: () => Pick<FileEntry, 'sha256' | 'chunks'>; close: () => Promise<void> }> {
  await rm(path, { force: true })
  const fh = await open(path, 'w')
  const hash = new ChunkHasher(chunkBytes)
  let bytes = 0
  let digest: Pick<FileEntry, 'sha256' | 'chunks'> | undefined
  return {
    fileName,
    get bytes() {
      return bytes
    },
    async append(chunk) {
      const at = bytes
      let done = 0
      while (done < chunk.byteLength) done += (await fh.write(chunk, done, chunk.byteLength - done, at + done)).bytesWritten
      hash.update(chunk)
      bytes += chunk.byteLength
      return at
    },
    digest: () => (digest ??= hash.digest()),
    close: async () => {
      await fh.close()
    }
  }
}

async function describeFile(dir: string, name: string): Promise<FileEntry> {
  const bytes = (await stat(join(dir, name))).size
  const h = new ChunkHasher(chunkSizeFor(bytes))
  for await (const chunk of createReadStream(join(dir, name), { highWaterMark: 1 << 22 })) h.update(chunk as Buffer)
  return { name, bytes, ...h.digest() }
}

export async function hashFile(path: string): Promise<string> {
  const h = createHash('sha256')
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 22 })) h.update(chunk as Buffer)
  return h.digest('hex')
}

/** Reads and checks `dir`/manifest.json. */
export async function readManifest(dir: string): Promise<Manifest> {
  let text: string
  try {
    text = await readFile(join(dir, MANIFEST_FILE), 'utf8')
  } catch {
    throw new ModelFormatError(`${dir} holds no ${MANIFEST_FILE}: build a model there first (tessera build-model --out ${dir} …)`)
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (err) {
    throw new ModelFormatError(`${join(dir, MANIFEST_FILE)}: not valid JSON (${(err as Error).message})`)
  }
  return checkManifest(parsed, join(dir, MANIFEST_FILE))
}

/** The model's tokenizer and chat template, hash-checked against its manifest; undefined when it has none. */
export async function readModelText(dir: string, manifest: Manifest): Promise<ModelText | undefined> {
  return await loadModelText(manifest, async (f) => await readFile(join(dir, f.name)))
}

/** Hashes every file of `shard` and throws ShardHashError (naming the file) on any mismatch. */
export async function verifyShardFiles(dir: string, shard: ShardEntry): Promise<void> {
  for (const f of shard.files) {
    const path = join(dir, f.name)
    const actual = await hashFile(path).catch(() => 'missing')
    if (actual !== f.sha256) throw new ShardHashError(path, f.sha256, actual)
  }
}
