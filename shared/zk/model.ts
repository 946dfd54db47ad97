/**
 * The small feed-forward models that the zero-knowledge mode proves: dense layers, each
 * y = W·x + b, optionally followed by ReLU. Float weights here; quantize.ts turns them into the
 * int8 model the circuit runs.
 */
import { ConfigError } from '../errors.js'
import { fillNormal, hash32, mulberry32 } from '../rng.js'

export interface FloatLayer {
  /** W[out][in], row-major: weights[o * inputs + i]. */
  weights: Float32Array
  /** b[out]. */
  bias: Float32Array
  inputs: number
  outputs: number
  relu: boolean
}

export interface FloatModel {
  layers: FloatLayer[]
}

/** Widths of the seeded models: [input, hidden…, output]. Every layer but the last has ReLU. */
export const ZK_MODELS: Record<string, number[]> = {
  // Fast enough for tests: ~1.7k constraints, so a 2^11 ceremony (~1 min on 2 cores).
  tiny: [16, 8, 4],
  // The size the issue asks for: 64 → 64 (ReLU) → 16.
  small: [64, 64, 16]
}

export function zkModelSizes(name: string): number[] {
  const sizes = ZK_MODELS[name]
  if (sizes === undefined) throw new ConfigError(`unknown ZK model "${name}"; choose one of ${Object.keys(ZK_MODELS).join(', ')}`)
  return sizes
}

/**
 * A model from a seed, the same in Node and browsers. Weights ~ N(0, 2/fan_in) (He, so ReLU
 * activations keep unit size), biases ~ N(0, 0.1²), each tensor from its own stream.
 */
export function randomMlp(sizes: number[], seed = 0): FloatModel {
  if (sizes.length < 2 || sizes.some((n) => !Number.isInteger(n) || n < 1))
    throw new ConfigError(`model widths must be ≥ 2 positive integers, got [${sizes.join(', ')}]`)
  const layers: FloatLayer[] = []
  for (let l = 0; l + 1 < sizes.length; l++) {
    const [inputs, outputs] = [sizes[l], sizes[l + 1]]
    const weights = fillNormal(new Float32Array(inputs * outputs), mulberry32(hash32(`${seed}:zk:${l}:w`)), Math.sqrt(2 / inputs))
    const bias = fillNormal(new Float32Array(outputs), mulberry32(hash32(`${seed}:zk:${l}:b`)), 0.1)
    layers.push({ weights, bias, inputs, outputs, relu: l + 2 < sizes.length })
  }
  return { layers }
}

/** Seeded N(0, 1) input vectors, for calibration and tests. */
export function randomInputs(width: number, count: number, seed = 0): Float32Array[] {
  return Array.from({ length: count }, (_, i) => fillNormal(new Float32Array(width), mulberry32(hash32(`${seed}:zk:input:${i}`)), 1))
}

/** The float forward pass: the model before quantization. */
export function forwardFloat(model: FloatModel, x: Float32Array): Float32Array {
  let h = x
  for (const layer of model.layers) {
    if (h.length !== layer.inputs) throw new ConfigError(`layer expects ${layer.inputs} inputs, got ${h.length}`)
    const y = new Float32Array(layer.outputs)
    for (let o = 0; o < layer.outputs; o++) {
      let acc = layer.bias[o]
      for (let i = 0; i < layer.inputs; i++) acc += layer.weights[o * layer.inputs + i] * h[i]
      y[o] = layer.relu && acc < 0 ? 0 : acc
    }
    h = y
  }
  return h
}
