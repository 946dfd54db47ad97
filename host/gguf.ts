import { open, stat } from 'node:fs/promises'
import { basename, dirname } from 'node:path'
import { gguf } from '@huggingface/gguf'
import { openGguf, type GgufHeader } from '../shared/model/gguf.js'
import type { WeightSource } from '../shared/model/weights.js'
import { ModelFormatError } from '../shared/errors.js'
import { fileBlobs } from './fs-blob.js'

/** Every GGUF file starts with these four bytes (Ollama's blobs have no .gguf name, so the bytes decide). */
const MAGIC = 'GGUF'

/** Whether the file at `path` starts with GGUF's magic bytes. */
export async function isGgufFile(path: string): Promise<boolean> {
  const fh = await open(path, 'r')
  try {
    const head = new Uint8Array(4)
    const { bytesRead } = await fh.read(head, 0, 4, 0)
    return bytesRead === 4 && new TextDecoder().decode(head) === MAGIC
  } finally {
    await fh.close()
  }
}

export interface OpenedGguf {
  weights: WeightSource
  /** The header's metadata (tokenizer.ggml.*, chat template, …). */
  metadata: Record<string, unknown>
}

/**
 * Opens a local GGUF file: @huggingface/gguf parses the header (reading it in 2 MB chunks, so a
 * 128k-token vocabulary costs a few reads), then tensors are read by offset through a BlobSource.
 */
export async function openGgufFile(path: string, opts: { maxSeqLen?: number } = {}): Promise<OpenedGguf> {
  const name = basename(path)
  if (!(await isGgufFile(path))) throw new ModelFormatError(`${path}: not a GGUF file (it does not start with the bytes "GGUF")`)
  const size = (await stat(path)).size
  let header: GgufHeader
  try {
    const parsed = await gguf(path, { allowLocalFile: true })
    // The library types the metadata of the architectures it knows; import reads every key as unknown and checks it.
    header = { ...parsed, metadata: parsed.metadata as Record<string, unknown> }
  } catch (err) {
    throw new ModelFormatError(`${path}: the GGUF header cannot be read (${(err as Error).message}); the file may be truncated or damaged`)
  }
  const blobs = fileBlobs(dirname(path))
  const weights = await openGguf(header, async (offset, length) => await blobs.read(name, offset, length), { name, size, maxSeqLen: opts.maxSeqLen })
  return { weights, metadata: header.metadata }
}
