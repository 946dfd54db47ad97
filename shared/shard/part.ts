/**
 * One layer of a shard as a graph of its own, for disputes: a referee re-executes only the block
 * where the parties' per-layer commitments part ways, not the whole shard.
 *
 * The part is cut out of the shard's own graph (same nodes, same weights, same external data
 * file), so it computes exactly what the shard computes for that block:
 *
 *   block L of shard [a, b):  (layer_in = residual after block L-1 | the shard's input if L = a,
 *                              position_ids, past K/V of L) → layer_out.L
 *   head (L = b):             layer_in = residual after block b-1 → logits | hidden_out
 *
 * Everything the target does not depend on (the other blocks, their weights) is left out.
 */
import { InputError } from '../errors.js'
import { DType, onnx } from './graph.js'
import * as io from './io.js'

/** The input a part reads in place of a block's output (the residual stream entering it). */
export const LAYER_IN = 'layer_in'

/** The name of the value a part returns. */
export const partOutput = (layers: [number, number], layer: number, last: boolean): string =>
  layer < layers[1] ? io.layerOut(layer) : last ? io.LOGITS : io.HIDDEN_OUT

/**
 * Cuts block `layer` (or the head, `layer` = layers[1]) out of a shard's ONNX bytes. `last`:
 * whether the shard ends the model (its head is the LM head).
 */
export function cutPart(graphBytes: Uint8Array, layers: [number, number], layer: number, last: boolean): Uint8Array {
  const [a, b] = layers
  if (!Number.isInteger(layer) || layer < a || layer > b) throw new InputError(`layer ${layer} is not in shard [${a},${b}) (nor its head, ${b})`)
  const model = onnx.ModelProto.decode(graphBytes)
  const g = model.graph
  if (g == null) throw new InputError('the shard has no graph')
  const nodes = g.node ?? []
  const target = partOutput(layers, layer, last)
  // The residual entering the block: what the Identity naming layer_out.{layer-1} reads.
  let cut: string | undefined
  if (layer > a) {
    const alias = nodes.find((n) => n.opType === 'Identity' && n.output?.[0] === io.layerOut(layer - 1))
    if (alias?.input?.[0] === undefined) throw new InputError(`shard [${a},${b}) was built without per-layer outputs`)
    cut = alias.input[0]
  }
  const producer = new Map<string, number>()
  nodes.forEach((n, i) => {
    for (const o of n.output ?? []) producer.set(o, i)
  })
  const initializers = new Set((g.initializer ?? []).map((t) => t.name!))
  const graphInputs = new Set((g.input ?? []).map((v) => v.name!))

  // Walk back from the target; stop at the cut, graph inputs and weights.
  const keep = new Set<number>()
  const used = new Set<string>()
  const stack = [target]
  while (stack.length > 0) {
    const v = stack.pop()!
    if (v === '' || used.has(v)) continue
    used.add(v)
    if (v === cut || graphInputs.has(v) || initializers.has(v)) continue
    const i = producer.get(v)
    if (i === undefined) throw new InputError(`value ${v} has no producer in shard [${a},${b})`)
    if (keep.has(i)) continue
    keep.add(i)
    stack.push(...(nodes[i].input ?? []))
  }
  const rename = (v: string): string => (v === cut ? LAYER_IN : v)
  const part = nodes.filter((_, i) => keep.has(i)).map((n) => ({ ...n, input: (n.input ?? []).map(rename) }))
  const inputs = (g.input ?? []).filter((v) => used.has(v.name!))
  if (cut !== undefined)
    inputs.unshift({
      name: LAYER_IN,
      type: { tensorType: { elemType: DType.FLOAT, shape: { dim: [{ dimParam: 'batch' }, { dimParam: 'seq' }, { dimParam: 'dim' }] } } }
    })
  const output = (g.output ?? []).filter((v) => v.name === target)
  model.graph = onnx.GraphProto.create({
    name: `${g.name ?? 'shard'}_part_${layer}`,
    node: part,
    initializer: (g.initializer ?? []).filter((t) => used.has(t.name!)),
    input: inputs,
    output
  })
  return onnx.ModelProto.encode(model).finish()
}
