import onnxProto from 'onnx-proto'
import { TesseraError } from '../errors.js'

const { onnx } = onnxProto
export { onnx }

export const DType = onnx.TensorProto.DataType
export type Attr = number | number[] | string | Float32Array | { float: number }

/**
 * Where large initializers go: appended to the shard's external data file. Returns the offset
 * the bytes were written at, so the graph can point at them.
 */
export interface DataSink {
  readonly fileName: string
  append(bytes: Uint8Array): Promise<number>
}

/** Initializers smaller than this stay inside the .onnx file. */
const INLINE_LIMIT = 1024
/** External tensors start on this boundary so runtimes may map them directly. */
const ALIGN = 64

/**
 * A tiny ONNX graph builder: `op()` adds a node and returns its output name, so a forward pass
 * reads like the math it encodes. Names get a counter suffix to stay unique.
 */
export class Graph {
  readonly nodes: onnxProto.onnx.INodeProto[] = []
  readonly initializers: onnxProto.onnx.ITensorProto[] = []
  readonly inputs: onnxProto.onnx.IValueInfoProto[] = []
  readonly outputs: onnxProto.onnx.IValueInfoProto[] = []
  private readonly consts = new Map<string, string>()
  private count = 0
  private dataBytes = 0

  constructor(private readonly sink: DataSink) {}

  /** Adds `op` and returns its first output's name (more outputs: pass `nOut`). */
  op(op: string, inputs: string[], attrs: Record<string, Attr> = {}, name = op, domain = ''): string {
    return this.opN(op, inputs, 1, attrs, name, domain)[0]
  }

  opN(op: string, inputs: string[], nOut: number, attrs: Record<string, Attr> = {}, name = op, domain = ''): string[] {
    const id = `${name}_${this.count++}`
    const outputs = Array.from({ length: nOut }, (_, i) => (nOut === 1 ? id : `${id}:${i}`))
    this.nodes.push({ opType: op, domain, name: id, input: inputs, output: outputs, attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)) })
    return outputs
  }

  /** Adds `op` with outputs of the given names (graph outputs an op must write itself, not through an Identity). */
  opTo(op: string, inputs: string[], outputs: string[], attrs: Record<string, Attr> = {}, domain = ''): string[] {
    this.nodes.push({
      opType: op,
      domain,
      name: `${op}_${this.count++}`,
      input: inputs,
      output: outputs,
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v))
    })
    return outputs
  }

  /** Renames the value `from` to `to` (for graph outputs) with an Identity node. */
  alias(from: string, to: string): void {
    this.nodes.push({ opType: 'Identity', name: `${to}_identity`, input: [from], output: [to] })
  }

  input(name: string, elemType: number, dims: Array<number | string>): string {
    this.inputs.push(valueInfo(name, elemType, dims))
    return name
  }

  output(name: string, elemType: number, dims: Array<number | string>): void {
    this.outputs.push(valueInfo(name, elemType, dims))
  }

  /** A weight: small ones inline, large ones appended to the external data file. */
  async weight(name: string, dataType: number, dims: number[], bytes: Uint8Array): Promise<string> {
    if (bytes.byteLength < INLINE_LIMIT) {
      this.initializers.push({ name, dataType, dims, rawData: bytes.slice() })
      return name
    }
    const pad = (ALIGN - (this.dataBytes % ALIGN)) % ALIGN
    if (pad > 0) await this.sink.append(new Uint8Array(pad))
    const offset = await this.sink.append(bytes)
    this.dataBytes = offset + bytes.byteLength
    this.initializers.push({
      name,
      dataType,
      dims,
      dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
      externalData: [
        { key: 'location', value: this.sink.fileName },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(bytes.byteLength) }
      ]
    })
    return name
  }

  /** A small constant tensor, deduplicated. */
  const(values: number[] | Float32Array, dataType: number = DType.INT64, dims: number[] = [values.length]): string {
    const key = `${dataType}:${dims.join('x')}:${Array.from(values).join(',')}`
    const existing = this.consts.get(key)
    if (existing !== undefined) return existing
    const name = `const_${this.consts.size}`
    this.initializers.push({ name, dataType, dims, rawData: constBytes(values, dataType) })
    this.consts.set(key, name)
    return name
  }

  /** A scalar float constant. */
  scalar(v: number): string {
    return this.const([v], DType.FLOAT, [])
  }

  encode(graphName: string, docString: string): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: 'tessera',
      docString,
      opsetImport: [
        { domain: '', version: 17 },
        { domain: 'com.microsoft', version: 1 }
      ],
      graph: { name: graphName, node: this.nodes, initializer: this.initializers, input: this.inputs, output: this.outputs }
    })
    return onnx.ModelProto.encode(model).finish()
  }
}

function constBytes(values: number[] | Float32Array, dataType: number): Uint8Array {
  if (dataType === DType.INT64) return new Uint8Array(BigInt64Array.from(Array.from(values), (v) => BigInt(v)).buffer)
  if (dataType === DType.FLOAT) return new Uint8Array(Float32Array.from(values).buffer)
  throw new TesseraError('INTERNAL', `unsupported constant type ${dataType}`)
}

function valueInfo(name: string, elemType: number, dims: Array<number | string>): onnxProto.onnx.IValueInfoProto {
  return {
    name,
    type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } }
  }
}

function attribute(name: string, v: Attr): onnxProto.onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType
  if (typeof v === 'number') return { name, type: T.INT, i: v }
  if (typeof v === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(v) }
  if (Array.isArray(v)) return { name, type: T.INTS, ints: v }
  if (v instanceof Float32Array) return { name, type: T.FLOATS, floats: Array.from(v) }
  return { name, type: T.FLOAT, f: v.float }
}
