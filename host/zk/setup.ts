/**
 * From a model to everything the ZK mode needs: the seeded model and its quantization, the
 * compiled circuit, the trusted setup, and the manifest entry that publishes it.
 */
import { weightCommitment } from '../../shared/zk/commit.js'
import { shapeOf, type InputMode, type ZkShape } from '../../shared/zk/layout.js'
import { randomInputs, randomMlp, zkModelSizes, type FloatModel } from '../../shared/zk/model.js'
import { quantize, type QuantModel } from '../../shared/zk/quantize.js'
import type { ZkModelEntry } from '../../shared/zk/types.js'
import { ensureSetup, type Groth16Setup, type SetupOptions } from './ceremony.js'
import { compileCircuit, compileSource, type CompiledCircuit } from './compile.js'
import { openProver, openSamplingProver, type ZkProver } from './prove.js'
import { LOGIT_BITS, LOGIT_EXP, samplingCircuitSource, type SamplingEntry, type SamplingProver } from '../../shared/zk/argmax.js'

/** Calibration inputs for the input and activation scales. */
const CALIBRATION_INPUTS = 256

export interface ZkModel {
  name: string
  float: FloatModel
  quant: QuantModel
  shape: ZkShape
}

/** A seeded model (see ZK_MODELS), quantized with scales calibrated on seeded inputs. */
export function seededZkModel(name: string, opts: { seed?: number; input?: InputMode } = {}): ZkModel {
  const sizes = zkModelSizes(name)
  const seed = opts.seed ?? 0
  const float = randomMlp(sizes, seed)
  const quant = quantize(float, randomInputs(sizes[0], CALIBRATION_INPUTS, seed))
  return { name, float, quant, shape: shapeOf(quant, opts.input ?? 'public') }
}

export interface ZkSetup {
  model: ZkModel
  circuit: CompiledCircuit
  keys: Groth16Setup
  entry: ZkModelEntry
  /** A prover over the cached wasm and zkey. */
  prover: () => Promise<ZkProver>
}

/** Compiles, runs (or reuses) the setup, and builds the manifest entry. */
export async function setupZkModel(model: ZkModel, opts: SetupOptions = {}): Promise<ZkSetup> {
  const circuit = await compileCircuit(model.shape, opts)
  const keys = await ensureSetup(circuit, opts)
  const q = model.quant
  const entry: ZkModelEntry = {
    name: model.name,
    shape: model.shape,
    scale: { inputExp: q.inputExp, outputExp: q.outputExp, weightExps: q.layers.map((l) => l.weightExp) },
    weightCommitment: weightCommitment(q).toString(),
    verificationKey: keys.verificationKey,
    constraints: circuit.constraints,
    power: keys.power,
    circuitHash: circuit.hash
  }
  return { model, circuit, keys, entry, prover: async () => await openProver(q, model.shape, { wasm: circuit.wasm, zkey: keys.zkey }, model.name) }
}

export interface SamplingSetup {
  circuit: CompiledCircuit
  keys: Groth16Setup
  entry: SamplingEntry
  prover: SamplingProver
}

/** The argmax circuit for a vocabulary (zk/argmax.ts): compiled, set up (or reused), with its entry and a prover. */
export async function setupSampling(vocab: number, opts: SetupOptions = {}): Promise<SamplingSetup> {
  const circuit = await compileSource(samplingCircuitSource(vocab), opts)
  const keys = await ensureSetup(circuit, opts)
  const entry: SamplingEntry = {
    vocab,
    logitExp: LOGIT_EXP,
    logitBits: LOGIT_BITS,
    verificationKey: keys.verificationKey,
    constraints: circuit.constraints,
    power: keys.power,
    circuitHash: circuit.hash
  }
  return { circuit, keys, entry, prover: await openSamplingProver(entry, { wasm: circuit.wasm, zkey: keys.zkey }) }
}
