/**
 * The circuit's input signals for one proof: the int8 input and the packed weights, as decimal
 * strings (what circom's witness calculator reads). Isomorphic, so a tab could prove too.
 */
import { InputError } from '../errors.js'
import { toField } from './field.js'
import { layout, packModel, type PackedLayer, type ZkShape } from './layout.js'
import { INT8_MAX, INT8_MIN, type QuantModel } from './quantize.js'

export type CircuitInput = Record<string, string[] | string[][]>

/** Packs once; `input(x)` then builds the signals for each proof. */
export function witnessBuilder(q: QuantModel, shape: ZkShape): (x: Int8Array) => CircuitInput {
  const packed: PackedLayer[] = packModel(q, layout(shape))
  const weights: CircuitInput = {}
  packed.forEach((p, l) => {
    weights[`w${l}`] = p.w.map((col) => col.map(String))
    weights[`b${l}`] = p.b.map(String)
  })
  return (x) => {
    if (x.length !== shape.layers[0].inputs) throw new InputError(`the model takes ${shape.layers[0].inputs} inputs, got ${x.length}`)
    if (x.some((v) => v < INT8_MIN || v > INT8_MAX)) throw new InputError('inputs must be int8')
    return { x: Array.from(x, (v) => toField(v).toString()), ...weights }
  }
}
