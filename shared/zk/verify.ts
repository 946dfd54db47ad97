/**
 * Checking a ZK inference proof: decode the public signals into {output, commitment, input},
 * compare them with what the verifier expects (the manifest's commitment, the input it sent),
 * then run Groth16 verification. Cheap checks come first so that each failure has its own
 * error; the pairing check (~10 ms) settles everything the decoding cannot see.
 */
import { groth16 } from 'snarkjs'
import { InputError, ProtocolError } from '../errors.js'
import { fromField, parseSignal } from './field.js'
import { layout } from './layout.js'
import { INT8_MAX, INT8_MIN } from './quantize.js'
import type { ZkModelEntry, ZkProof, ZkStatement } from './types.js'

/** Number of public signals a model's proofs carry: y…, weights, [inputHash], [x…]. */
export function publicSignalCount(entry: Pick<ZkModelEntry, 'shape'>): number {
  const { layers, input } = entry.shape
  return layers[layers.length - 1].outputs + 1 + (input === 'committed' ? 1 : layers[0].inputs)
}

/** The public signals as a statement; ProtocolError if they cannot come from this model's circuit. */
export function decodePublicSignals(entry: Pick<ZkModelEntry, 'shape' | 'name'>, signals: string[]): ZkStatement {
  const malformed = (why: string): ProtocolError => new ProtocolError('ZK_MALFORMED', `proof for ${entry.name} has malformed public signals: ${why}`)
  if (!Array.isArray(signals) || signals.length !== publicSignalCount(entry))
    throw malformed(`expected ${publicSignalCount(entry)} signals, got ${Array.isArray(signals) ? signals.length : typeof signals}`)
  const values = signals.map((s, i) => {
    const v = typeof s === 'string' ? parseSignal(s) : undefined
    if (v === undefined) throw malformed(`signal ${i} is not a field element`)
    return v
  })
  const integers = (from: number, count: number, lo: number, hi: number, what: string): number[] =>
    values.slice(from, from + count).map((v, i) => {
      const n = fromField(v)
      if (n < BigInt(lo) || n > BigInt(hi)) throw malformed(`${what} ${i} = ${n} is outside [${lo}, ${hi}]`)
      return Number(n)
    })
  const { layers, input } = entry.shape
  const last = layout(entry.shape)[layers.length - 1]
  // The circuit's Signed(k) yields [-2^(k-1), 2^(k-1)); honest int8 weights stay within accBound.
  const half = 2 ** (last.k - 1)
  const output = Int32Array.from(integers(0, last.outputs, -half, half - 1, 'output'))
  const statement: ZkStatement = { output, weightCommitment: values[last.outputs] }
  if (input === 'committed') statement.inputHash = values[last.outputs + 1]
  else statement.input = Int8Array.from(integers(last.outputs + 1, layers[0].inputs, INT8_MIN, INT8_MAX, 'input'))
  return statement
}

/** What the verifier knows independently of the prover; each given field must match. */
export interface ZkExpectation {
  /** The int8 input it asked about (compared directly, or through its hash in committed mode). */
  input?: ArrayLike<number>
  /** An output claimed elsewhere (e.g. by the node's reply) that the proof must back. */
  output?: ArrayLike<number>
}

/**
 * Verifies `proof` for the model `entry`. Returns the proven statement; throws ProtocolError
 * (ZK_MALFORMED, ZK_WRONG_MODEL, ZK_WRONG_INPUT, ZK_WRONG_OUTPUT, ZK_INVALID_PROOF) otherwise.
 */
export async function verifyZkProof(entry: ZkModelEntry, proof: ZkProof, expect: ZkExpectation = {}): Promise<ZkStatement> {
  const s = decodePublicSignals(entry, proof.publicSignals)
  if (s.weightCommitment.toString() !== entry.weightCommitment) {
    throw new ProtocolError(
      'ZK_WRONG_MODEL',
      `the proof is for weights committed as ${short(s.weightCommitment)}, not ${entry.name}'s ${short(entry.weightCommitment)}: the prover ran other weights`
    )
  }
  if (expect.input !== undefined) {
    const width = entry.shape.layers[0].inputs
    if (expect.input.length !== width) throw new InputError(`${entry.name} takes ${width} inputs; the expected input has ${expect.input.length}`)
    // Poseidon's constants (~0.8 MB of source) load only when an input hash must be checked.
    const same =
      s.input !== undefined ? s.input.every((v, i) => v === expect.input?.[i]) : s.inputHash === (await import('./commit.js')).inputCommitment(expect.input)
    if (!same) throw new ProtocolError('ZK_WRONG_INPUT', `the proof for ${entry.name} is about another input than the one sent`)
  }
  if (expect.output !== undefined) {
    const o = expect.output
    if (o.length !== s.output.length || s.output.some((v, i) => v !== o[i])) {
      throw new ProtocolError('ZK_WRONG_OUTPUT', `the output claimed for ${entry.name} is not the one the proof proves`)
    }
  }
  let valid = false
  try {
    valid = await groth16.verify(entry.verificationKey, proof.publicSignals, proof.proof)
  } catch {
    /* a proof whose points are garbage: as invalid as a wrong one */
  }
  if (!valid)
    throw new ProtocolError(
      'ZK_INVALID_PROOF',
      `the Groth16 proof does not verify against ${entry.name}'s verification key: the proof or its public signals were altered`
    )
  return s
}

const short = (v: bigint | string): string => `${v.toString().slice(0, 12)}…`

/**
 * snarkjs keeps a multi-threaded curve (worker threads in Node, Web Workers in a tab) alive
 * after its first use, which keeps a Node process from exiting. Call when done with ZK.
 */
export async function releaseZkWorkers(): Promise<void> {
  const g = globalThis as { curve_bn128?: { terminate: () => Promise<void> } | null }
  const curve = g.curve_bn128
  g.curve_bn128 = null
  if (curve != null) await curve.terminate()
}
