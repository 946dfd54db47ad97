/**
 * Weight faults for drills: a copy of a shard whose weights were tampered with the way a
 * cheating or broken node's would be, loaded in place of the real one. The copy goes to a
 * temporary directory; the model directory is never touched.
 */
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type onnxProto from 'onnx-proto'
import { onnx, DType } from '../shared/shard/graph.js'
import { fromHalfBits, toHalfBits } from '../shared/model/dtype.js'
import { fillNormal, hash32, mulberry32 } from '../shared/rng.js'
import { InputError } from '../shared/errors.js'
import type { Fault } from '../shared/node/fault.js'
import type { ShardEntry } from '../shared/manifest.js'

type WeightFault = Extract<Fault, { kind: 'wrong-weights' | 'perturb' | 'skip-layer' }>

/** Writes a tampered copy of `shard`'s files and returns the path of its graph. */
export async function tamperShard(dir: string, shard: ShardEntry, fault: WeightFault): Promise<string> {
  const [a, b] = shard.layers
  if (fault.kind === 'skip-layer' && (fault.layer < a || fault.layer >= b)) {
    throw new InputError(`--fault skip-layer=${fault.layer}: this shard serves layers [${a},${b})`)
  }
  const model = onnx.ModelProto.decode(await readFile(join(dir, shard.files[0].name)))
  const data = new Map<string, Uint8Array>()
  for (const f of shard.files.slice(1)) data.set(f.name, new Uint8Array(await readFile(join(dir, f.name))))

  for (const t of model.graph?.initializer ?? []) {
    const name = t.name ?? ''
    if (name.startsWith('const_')) continue // graph constants (shapes, rope tables), not weights
    const bytes = tensorBytes(t, data)
    if (bytes === undefined) continue
    const rand = mulberry32(hash32(name) ^ (fault.kind === 'wrong-weights' ? fault.seed : 0x9e3779b9))
    if (fault.kind === 'wrong-weights') {
      permute(bytes, t.dataType === DType.FLOAT ? 4 : t.dataType === DType.FLOAT16 ? 2 : 1, rand)
    } else if (fault.kind === 'perturb') {
      if (name.startsWith(`layers.${a}.`)) addNoise(bytes, t.dataType ?? 0, fault.eps, rand)
    } else {
      const prefix = `layers.${fault.layer}.`
      // No attention or MLP output: the block adds nothing to the residual stream.
      if (name.startsWith(prefix) && /^(wo|w2)(\.scales)?$/.test(name.slice(prefix.length))) bytes.fill(0)
    }
  }

  const out = await mkdtemp(join(tmpdir(), 'tessera-fault-'))
  await writeFile(join(out, shard.files[0].name), onnx.ModelProto.encode(model).finish())
  for (const [name, bytes] of data) await writeFile(join(out, name), bytes)
  return join(out, shard.files[0].name)
}

/** The bytes of an initializer, inline or in its external data file (a live view: edits stick). */
function tensorBytes(t: onnxProto.onnx.ITensorProto, data: Map<string, Uint8Array>): Uint8Array | undefined {
  if (t.dataLocation !== onnx.TensorProto.DataLocation.EXTERNAL) return t.rawData ?? undefined
  const kv = new Map((t.externalData ?? []).map((e) => [e.key ?? '', e.value ?? '']))
  const file = data.get(kv.get('location') ?? '')
  if (file === undefined) return undefined
  const offset = Number(kv.get('offset') ?? 0)
  return file.subarray(offset, offset + Number(kv.get('length')))
}

/** Shuffles elements of `size` bytes: the same values (so the same scale), in the wrong places. */
function permute(bytes: Uint8Array, size: number, rand: () => number): void {
  const n = Math.floor(bytes.byteLength / size)
  const tmp = new Uint8Array(size)
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1))
    tmp.set(bytes.subarray(i * size, (i + 1) * size))
    bytes.copyWithin(i * size, j * size, (j + 1) * size)
    bytes.set(tmp, j * size)
  }
}

/** x += eps · rms(x) · N(0, 1), for fp32 and fp16 tensors (int4 weights get it through their fp32 scales). */
function addNoise(bytes: Uint8Array, dataType: number, eps: number, rand: () => number): void {
  if (dataType !== DType.FLOAT && dataType !== DType.FLOAT16) return
  const copy = new Uint8Array(bytes) // a fresh, aligned copy (protobufjs hands out Buffers, whose slice() is a view)
  const values = dataType === DType.FLOAT ? new Float32Array(copy.buffer) : Float32Array.from(new Uint16Array(copy.buffer), fromHalfBits)
  let ss = 0
  for (const x of values) ss += x * x
  const noise = fillNormal(new Float32Array(values.length), rand, eps * Math.sqrt(ss / Math.max(1, values.length)))
  for (let i = 0; i < values.length; i++) values[i] += noise[i]
  bytes.set(dataType === DType.FLOAT ? new Uint8Array(values.buffer) : new Uint8Array(Uint16Array.from(values, toHalfBits).buffer))
}
