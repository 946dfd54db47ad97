/**
 * How the circuit packs a quantized model into field elements, shared by the circuit generator,
 * the witness, the commitment and the verifier.
 *
 * Packing is the trick that keeps the circuit small. One field element holds `slots` outputs of
 * a layer in slots of k bits: column j of W is packed as P_j = Σ_i W[i][j] · 2^(k·i). Then
 *
 *     Σ_j P_j · x_j + B  =  Σ_i acc_i · 2^(k·i)
 *
 * so ONE multiplication does `slots` multiply-accumulates, as long as no slot overflows into
 * the next (k is sized from the largest |acc| any int8 input can give). Adding a constant
 * offset makes every slot non-negative; one bit decomposition of the sum then yields each
 * accumulator's bits: the range check, the requantization shift (a choice of bits) and the
 * rounding come out of it at once.
 *
 * The packed columns are also what the weight commitment hashes: the commitment binds the very
 * field elements the circuit multiplies with, so the weights need no int8 range check of their
 * own (5,120 weights × 8 bits would cost more than the rest of the circuit). A commitment made
 * from int8 weights by `weightCommitment` pins them; any other field elements hash differently.
 */
import { ConfigError } from '../errors.js'
import { FIELD_BITS, toField } from './field.js'
import { accBound, type QuantModel } from './quantize.js'

/** The public shape of a quantized model: all the circuit depends on (no weights). */
export interface ZkShape {
  layers: Array<{ inputs: number; outputs: number; relu: boolean; shift?: number }>
  /** 'public': the int8 input is a public signal; 'committed': only a Poseidon hash of it is. */
  input: InputMode
}

export type InputMode = 'public' | 'committed'

export interface LayerLayout {
  inputs: number
  outputs: number
  /** Bits per slot. */
  k: number
  /** Outputs per packed field element. */
  slots: number
  /** Packed elements per column: ceil(outputs / slots); group g holds outputs g·slots … */
  groups: number
  /** Hidden layers: the right shift, and the clamp: output ∈ [-lo, 2^width - 1 - lo]. */
  shift?: number
  lo: number
  width: number
  /** Added to every slot so that it is non-negative: 2^(k-1) (+ lo·2^shift + 2^(shift-1) when hidden). */
  slotOffset: bigint
}

export function shapeOf(q: QuantModel, input: InputMode): ZkShape {
  return { layers: q.layers.map((l) => ({ inputs: l.inputs, outputs: l.outputs, relu: l.relu, ...(l.shift !== undefined ? { shift: l.shift } : {}) })), input }
}

/** Slot widths and offsets for every layer. Throws if a hidden layer lacks a shift or the last has one. */
export function layout(shape: ZkShape): LayerLayout[] {
  return shape.layers.map((l, i) => {
    const hidden = i + 1 < shape.layers.length
    if (hidden !== (l.shift !== undefined))
      throw new ConfigError(`layer ${i}: ${hidden ? 'a hidden layer needs a shift' : 'the last layer outputs its accumulator and takes no shift'}`)
    const lo = l.relu ? 0 : 128
    const width = l.relu ? 7 : 8
    const s = l.shift ?? 0
    if (hidden && (s < 1 || s > 30)) throw new ConfigError(`layer ${i}: shift ${s} is outside 1…30`)
    // Room needed above the accumulator: the rounding half and the clamp's lower end.
    const extra = hidden ? BigInt(lo) * 2n ** BigInt(s) + 2n ** BigInt(s - 1) : 0n
    let k = 2
    while (BigInt(accBound(l.inputs)) + extra >= 2n ** BigInt(k - 1) || (hidden && k < s + width + 2)) k++
    const slots = Math.floor(FIELD_BITS / k)
    const slotOffset = 2n ** BigInt(k - 1) + extra
    return { inputs: l.inputs, outputs: l.outputs, k, slots, groups: Math.ceil(l.outputs / slots), ...(hidden ? { shift: s } : {}), lo, width, slotOffset }
  })
}

/** Outputs in group g. */
export const groupSize = (l: LayerLayout, g: number): number => Math.min(l.slots, l.outputs - g * l.slots)

/** Σ_i values[i] · 2^(k·i), as a field element (values may be negative). */
export function pack(values: ArrayLike<number>, k: number): bigint {
  let v = 0n
  for (let i = values.length - 1; i >= 0; i--) v = (v << BigInt(k)) + BigInt(values[i])
  return toField(v)
}

export interface PackedLayer {
  /** w[j][g]: column j, group g. */
  w: bigint[][]
  /** b[g]. */
  b: bigint[]
}

/** The packed weights and biases of every layer, as the circuit takes them. */
export function packModel(q: QuantModel, lay: LayerLayout[]): PackedLayer[] {
  return q.layers.map((layer, l) => {
    const L = lay[l]
    const rows = (g: number): number[] => Array.from({ length: groupSize(L, g) }, (_, i) => g * L.slots + i)
    const w = Array.from({ length: layer.inputs }, (_, j) =>
      Array.from({ length: L.groups }, (_, g) =>
        pack(
          rows(g).map((o) => layer.weights[o * layer.inputs + j]),
          L.k
        )
      )
    )
    const b = Array.from({ length: L.groups }, (_, g) =>
      pack(
        rows(g).map((o) => layer.bias[o]),
        L.k
      )
    )
    return { w, b }
  })
}

/** The order the commitment hashes packed elements in: layer by layer, w[j][g] row-major, then b. */
export function commitmentElements(packed: PackedLayer[]): bigint[] {
  return packed.flatMap((p) => [...p.w.flat(), ...p.b])
}

/** int8 inputs as bytes (x + 128), 31 to a field element, little-endian: what the input hash covers. */
export const INPUT_BYTES_PER_ELEMENT = 31
export function packInput(x: ArrayLike<number>): bigint[] {
  const out: bigint[] = []
  for (let start = 0; start < x.length; start += INPUT_BYTES_PER_ELEMENT) {
    let v = 0n
    for (let j = Math.min(x.length, start + INPUT_BYTES_PER_ELEMENT) - 1; j >= start; j--) v = (v << 8n) + BigInt(x[j] + 128)
    out.push(v)
  }
  return out
}
