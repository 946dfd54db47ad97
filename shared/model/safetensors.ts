import { readText, type BlobSource } from '../blob.js'
import { ModelFormatError } from '../errors.js'
import { fromBfloat16, fromFloat16 } from './dtype.js'
import { toFloat32 } from './llama2c.js'

/**
 * safetensors (https://huggingface.co/docs/safetensors): an 8-byte little-endian u64 header
 * length N, N bytes of JSON { name: { dtype, shape, data_offsets: [begin, end] }, __metadata__? },
 * then the tensors' bytes; offsets count from the end of the header. Only headers are read when
 * a file is opened; each tensor is read by its own byte range, so a shard builder touches only
 * the layers it builds.
 */

/** Element sizes of every dtype the format defines: lets us check byte counts even for tensors we cannot convert. */
const ELEMENT_BYTES: Record<string, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1
}

/** The dtypes we can widen to fp32. */
export type SafeDType = 'F32' | 'F16' | 'BF16'

/** Where one tensor lives. `begin`/`end` are absolute byte offsets in `file`. */
export interface TensorInfo {
  file: string
  dtype: string
  shape: number[]
  begin: number
  end: number
}

/** The tensors of one checkpoint, single-file or sharded. */
export interface Safetensors {
  readonly tensors: ReadonlyMap<string, TensorInfo>
  readonly metadata: Record<string, string>
  /** Reads one tensor's bytes (and nothing else) and widens them to fp32. */
  read(name: string): Promise<Float32Array>
}

export const SINGLE_FILE = 'model.safetensors'
export const INDEX_FILE = 'model.safetensors.index.json'
/** The format's own bound on the header (safetensors refuses larger), so a corrupt length cannot make us read gigabytes. */
const MAX_HEADER = 100_000_000

/** Parses `name`'s header; reads 8 bytes plus the header, never the data. */
export async function readSafetensorsHeader(src: BlobSource, name: string): Promise<{ tensors: Map<string, TensorInfo>; metadata: Record<string, string> }> {
  const size = await src.size(name)
  const bad = (m: string): never => {
    throw new ModelFormatError(`${name}: ${m}`)
  }
  if (size < 8) bad(`${size} bytes is shorter than the 8-byte safetensors header length; the file is truncated or not safetensors`)
  const len8 = await src.read(name, 0, 8)
  const n = new DataView(len8.buffer, len8.byteOffset, 8).getBigUint64(0, true)
  if (n > BigInt(MAX_HEADER)) bad(`header length ${n} is implausible (limit ${MAX_HEADER}); not a safetensors file`)
  const headerLen = Number(n)
  if (8 + headerLen > size) bad(`header says ${headerLen} bytes but the file has only ${size - 8} after the length; the file is truncated`)
  let header: unknown
  try {
    header = JSON.parse(new TextDecoder().decode(await src.read(name, 8, headerLen)))
  } catch (err) {
    return bad(`header is not valid JSON (${(err as Error).message})`)
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) return bad('header is not a JSON object')
  const dataStart = 8 + headerLen
  const tensors = new Map<string, TensorInfo>()
  let metadata: Record<string, string> = {}
  for (const [key, v] of Object.entries(header as Record<string, unknown>)) {
    if (key === '__metadata__') {
      metadata = (v ?? {}) as Record<string, string>
      continue
    }
    const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown } | null
    const shape = e?.shape
    const offs = e?.data_offsets
    if (typeof e?.dtype !== 'string') bad(`tensor ${key} has no dtype`)
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) bad(`tensor ${key} has a bad shape ${JSON.stringify(shape)}`)
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isInteger(o) && o >= 0) || offs[0] > offs[1]) {
      bad(`tensor ${key} has bad data_offsets ${JSON.stringify(offs)}`)
    }
    const dtype = e!.dtype as string
    const [b, end] = offs as [number, number]
    const elementBytes = ELEMENT_BYTES[dtype]
    const count = (shape as number[]).reduce((a, d) => a * d, 1)
    if (elementBytes !== undefined && end - b !== count * elementBytes) {
      bad(`tensor ${key} (${dtype} ${JSON.stringify(shape)}) needs ${count * elementBytes} bytes but data_offsets span ${end - b}`)
    }
    if (dataStart + end > size) bad(`tensor ${key} ends at byte ${dataStart + end} but the file has ${size}; the file is truncated`)
    tensors.set(key, { file: name, dtype, shape: shape as number[], begin: dataStart + b, end: dataStart + end })
  }
  return { tensors, metadata }
}

/**
 * Opens the checkpoint in `src`: `model.safetensors.index.json` (whose `weight_map` names the
 * file of every tensor) when present, else `model.safetensors`. Reads headers only.
 */
export async function openSafetensors(src: BlobSource): Promise<Safetensors> {
  const tensors = new Map<string, TensorInfo>()
  let metadata: Record<string, string> = {}
  if (await src.has(INDEX_FILE)) {
    let index: { weight_map?: Record<string, string>; metadata?: Record<string, string> }
    try {
      index = JSON.parse(await readText(src, INDEX_FILE))
    } catch (err) {
      throw new ModelFormatError(`${INDEX_FILE}: not valid JSON (${(err as Error).message})`)
    }
    const map = index.weight_map
    if (map === null || typeof map !== 'object') throw new ModelFormatError(`${INDEX_FILE} has no weight_map`)
    const files = new Map<string, Map<string, TensorInfo>>()
    for (const file of new Set(Object.values(map))) {
      if (!(await src.has(file))) throw new ModelFormatError(`${INDEX_FILE} names ${file}, which is missing; download every shard of the checkpoint`)
      files.set(file, (await readSafetensorsHeader(src, file)).tensors)
    }
    for (const [name, file] of Object.entries(map)) {
      const info = files.get(file)!.get(name)
      if (info === undefined) throw new ModelFormatError(`${INDEX_FILE} puts ${name} in ${file}, but that file has no such tensor`)
      tensors.set(name, info)
    }
    metadata = index.metadata ?? {}
  } else if (await src.has(SINGLE_FILE)) {
    const h = await readSafetensorsHeader(src, SINGLE_FILE)
    for (const [k, v] of h.tensors) tensors.set(k, v)
    metadata = h.metadata
  } else {
    throw new ModelFormatError(`no ${SINGLE_FILE} or ${INDEX_FILE} found: is this a Hugging Face model directory with safetensors weights?`)
  }
  return {
    tensors,
    metadata,
    async read(name) {
      const t = tensors.get(name)
      if (t === undefined) throw new ModelFormatError(`the checkpoint has no tensor ${name}`)
      return decode(await src.read(t.file, t.begin, t.end - t.begin), t.dtype, `${t.file}: tensor ${name}`)
    }
  }
}

/** Raw little-endian bytes of `dtype` → fp32. */
export function decode(bytes: Uint8Array, dtype: string, what = 'tensor'): Float32Array {
  switch (dtype) {
    case 'F32':
      return toFloat32(bytes)
    case 'F16':
      return fromFloat16(u16(bytes))
    case 'BF16':
      return fromBfloat16(u16(bytes))
    default:
      throw new ModelFormatError(`${what} has dtype ${dtype}; only F32, F16 and BF16 are supported`)
  }
}

/** Uint16 view (copy when the range is unaligned, as a Uint16Array cannot start at an odd byte). */
function u16(b: Uint8Array): Uint16Array {
  if (b.byteOffset % 2 === 0) return new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2)
  return new Uint16Array(b.slice().buffer)
}

/** Serializes tensors (already encoded as `dtype`, little-endian) as one safetensors file. */
export function encodeSafetensors(
  tensors: Record<string, { dtype: SafeDType; shape: number[]; data: Uint8Array }>,
  metadata?: Record<string, string>
): Uint8Array {
  const header: Record<string, unknown> = {}
  if (metadata !== undefined) header.__metadata__ = metadata
  let offset = 0
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] }
    offset += t.data.byteLength
  }
  // The spec pads the header with spaces to a multiple of 8 so the data starts aligned.
  let json = new TextEncoder().encode(JSON.stringify(header))
  const padded = Math.ceil((8 + json.byteLength) / 8) * 8 - 8
  if (padded !== json.byteLength) {
    const p = new Uint8Array(padded).fill(0x20)
    p.set(json)
    json = p
  }
  const out = new Uint8Array(8 + json.byteLength + offset)
  new DataView(out.buffer).setBigUint64(0, BigInt(json.byteLength), true)
  out.set(json, 8)
  let at = 8 + json.byteLength
  for (const t of Object.values(tensors)) {
    out.set(t.data, at)
    at += t.data.byteLength
  }
  return out
}
