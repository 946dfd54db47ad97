/**
 * int8 quantization of a FloatModel, and the exact integer forward pass the circuit proves.
 *
 * Scales are powers of two: a tensor t is stored as t_q = round(t · 2^exp). Why not an integer
 * multiplier + shift (as TFLite does)? Inside the circuit the accumulator is decomposed into bits
 * anyway (to range-check it); with a power-of-two scale the requantization `acc >> shift` is
 * just a choice of which of those bits to keep: zero extra constraints, and no wide product
 * acc · M to decompose. The cost is range: a power-of-two scale uses between half and all of
 * int8's range (about half a bit lost on average); `quantizationError` measures what that does.
 *
 *   weights     W_q ∈ [-127, 127]            W ≈ W_q · 2^-weightExp   (symmetric, per layer)
 *   inputs      x_q ∈ [-128, 127]            x ≈ x_q · 2^-inputExp
 *   bias        b_q int32                    b ≈ b_q · 2^-(weightExp + inputExp)
 *   accumulator acc = W_q · x_q + b_q        (int32; |acc| ≤ accBound(inputs))
 *   hidden out  h_q = clamp((acc + 2^(shift-1)) >> shift)   to [0, 127] after ReLU, else [-128, 127]
 *   last layer  the int32 accumulator itself is the output (most precise for an argmax)
 */
import { ConfigError, InputError } from '../errors.js'
import { forwardFloat, type FloatModel } from './model.js'

export const WEIGHT_MAX = 127
export const INT8_MIN = -128
export const INT8_MAX = 127

export interface QuantLayer {
  /** W_q[out][in], row-major, each in [-WEIGHT_MAX, WEIGHT_MAX]. */
  weights: Int8Array
  /** b_q[out] at the accumulator's scale, |b_q| ≤ biasBound(inputs). */
  bias: Int32Array
  inputs: number
  outputs: number
  relu: boolean
  weightExp: number
  inputExp: number
  /** Hidden layers: right shift from the accumulator to the next layer's int8 input (≥ 1). Absent on the last layer. */
  shift?: number
}

export interface QuantModel {
  layers: QuantLayer[]
  /** x ≈ x_q · 2^-inputExp. */
  inputExp: number
  /** The output accumulator: y ≈ y_q · 2^-outputExp. */
  outputExp: number
}

/** Largest |bias| allowed: that of a full dot product, so |acc| ≤ 2 · inputs · 127 · 128. */
export const biasBound = (inputs: number): number => inputs * WEIGHT_MAX * -INT8_MIN
/** Largest |acc| any int8 input can produce; the circuit sizes its slots from this. */
export const accBound = (inputs: number): number => 2 * biasBound(inputs)

const maxAbs = (xs: ArrayLike<number>): number => {
  let m = 0
  for (let i = 0; i < xs.length; i++) m = Math.max(m, Math.abs(xs[i]))
  return m
}
/** The largest exp with max · 2^exp ≤ limit. */
const expFor = (max: number, limit: number): number => (max === 0 ? 0 : Math.floor(Math.log2(limit / max)))
const clamp = (v: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, v))

/**
 * Quantizes with scales calibrated on `calibration` inputs (the input scale and each hidden
 * layer's output scale cover the largest value seen; larger values at run time clamp).
 */
export function quantize(model: FloatModel, calibration: Float32Array[]): QuantModel {
  if (calibration.length === 0) throw new ConfigError('quantize needs at least one calibration input')
  // Largest |activation| entering each layer (index 0: the input), measured on the float model.
  const peaks = model.layers.map(() => 0)
  for (const x of calibration) {
    let h = x
    model.layers.forEach((layer, l) => {
      peaks[l] = Math.max(peaks[l], maxAbs(h))
      h = forwardFloat({ layers: [layer] }, h)
    })
  }
  const inputExp = expFor(peaks[0], INT8_MAX)
  let exp = inputExp
  const layers = model.layers.map((layer, l): QuantLayer => {
    const weightExp = expFor(maxAbs(layer.weights), WEIGHT_MAX)
    const accExp = weightExp + exp
    const bound = biasBound(layer.inputs)
    const q: QuantLayer = {
      weights: Int8Array.from(layer.weights, (w) => clamp(Math.round(w * 2 ** weightExp), -WEIGHT_MAX, WEIGHT_MAX)),
      bias: Int32Array.from(layer.bias, (b) => clamp(Math.round(b * 2 ** accExp), -bound, bound)),
      inputs: layer.inputs,
      outputs: layer.outputs,
      relu: layer.relu,
      weightExp,
      inputExp: exp
    }
    if (l + 1 < model.layers.length) {
      // The next layer's input scale: as fine as its calibrated peak allows, but at least one
      // bit of shift so that rounding is a plain "add half, shift".
      const nextExp = Math.min(expFor(peaks[l + 1], INT8_MAX), accExp - 1)
      q.shift = accExp - nextExp
      exp = nextExp
    }
    return q
  })
  const last = layers[layers.length - 1]
  return { layers, inputExp, outputExp: last.weightExp + last.inputExp }
}

/** A float input to int8 at the model's input scale (values beyond the calibrated range clamp). */
export function quantizeInput(q: QuantModel, x: Float32Array): Int8Array {
  if (x.length !== q.layers[0].inputs) throw new InputError(`the model takes ${q.layers[0].inputs} inputs, got ${x.length}`)
  return Int8Array.from(x, (v) => clamp(Math.round(v * 2 ** q.inputExp), INT8_MIN, INT8_MAX))
}

/** Round half up, shift, clamp to int8 (to [0, 127] after ReLU): the circuit's Requant. */
export function requantize(acc: number, shift: number, relu: boolean): number {
  return clamp((acc + 2 ** (shift - 1)) >> shift, relu ? 0 : INT8_MIN, INT8_MAX)
}

/** One layer's int32 accumulators W_q · x + b_q. */
export function accumulate(layer: QuantLayer, x: ArrayLike<number>): Int32Array {
  const acc = new Int32Array(layer.outputs)
  for (let o = 0; o < layer.outputs; o++) {
    let s = layer.bias[o]
    for (let i = 0; i < layer.inputs; i++) s += layer.weights[o * layer.inputs + i] * x[i]
    acc[o] = s
  }
  return acc
}

/** The exact integer forward pass: what the circuit outputs for int8 input `x`. */
export function forwardInt(q: QuantModel, x: Int8Array): Int32Array {
  if (x.length !== q.layers[0].inputs) throw new InputError(`the model takes ${q.layers[0].inputs} inputs, got ${x.length}`)
  let h: ArrayLike<number> = x
  let acc: Int32Array = new Int32Array(0)
  for (const layer of q.layers) {
    acc = accumulate(layer, h)
    if (layer.shift !== undefined) {
      const shift = layer.shift
      h = Int8Array.from(acc, (a) => requantize(a, shift, layer.relu))
    }
  }
  return acc
}

/** int32 outputs back to floats. */
export const dequantizeOutput = (q: QuantModel, y: ArrayLike<number>): Float32Array => Float32Array.from(y, (v) => v * 2 ** -q.outputExp)

export interface QuantizationError {
  inputs: number
  /** Largest |float − dequantized int| over all outputs of all inputs. */
  maxAbsError: number
  /** maxAbsError over the largest |float output| seen: a scale-free figure. */
  maxRelError: number
  /** Share of inputs whose argmax is the same in both models. */
  argmaxAgreement: number
}

/** How far the integer model drifts from the float one over `inputs`. */
export function quantizationError(model: FloatModel, q: QuantModel, inputs: Float32Array[]): QuantizationError {
  let maxAbsError = 0
  let peak = 0
  let agree = 0
  for (const x of inputs) {
    const want = forwardFloat(model, x)
    const got = dequantizeOutput(q, forwardInt(q, quantizeInput(q, x)))
    for (let i = 0; i < want.length; i++) maxAbsError = Math.max(maxAbsError, Math.abs(want[i] - got[i]))
    peak = Math.max(peak, maxAbs(want))
    if (argmax(want) === argmax(got)) agree++
  }
  return {
    inputs: inputs.length,
    maxAbsError,
    maxRelError: peak === 0 ? 0 : maxAbsError / peak,
    argmaxAgreement: inputs.length === 0 ? 1 : agree / inputs.length
  }
}

function argmax(xs: ArrayLike<number>): number {
  let best = 0
  for (let i = 1; i < xs.length; i++) if (xs[i] > xs[best]) best = i
  return best
}
