/**
 * What the zero-knowledge mode publishes and exchanges: the manifest entry for a ZK model, a
 * proof, and the statement a verified proof establishes.
 */
import type { Groth16Proof } from 'snarkjs'
import type { ZkShape } from './layout.js'

export type { Groth16Proof }
export type { ZkShape, InputMode } from './layout.js'

/** A Groth16 verification key as snarkjs exports it (JSON). */
export type VerificationKey = Record<string, unknown>

/** One ZK-provable model in a manifest. Everything a verifier needs; no weights. */
export interface ZkModelEntry {
  name: string
  /** Layer widths, ReLU flags, requantization shifts and input mode: all the circuit depends on. */
  shape: ZkShape
  /** Fixed-point scales (powers of two): x ≈ x_q · 2^-inputExp, y ≈ y_q · 2^-outputExp. */
  scale: { inputExp: number; outputExp: number; weightExps: number[] }
  /** Poseidon commitment to the packed weights (decimal field element): see commit.ts. */
  weightCommitment: string
  verificationKey: VerificationKey
  /** R1CS constraints of the circuit, and the powers-of-tau size (2^power) its setup used. */
  constraints: number
  power: number
  /** sha256 of the circom source (which names the circom and circomlib versions). */
  circuitHash: string
}

/** What a prover sends: the proof and the public signals it is a proof for. */
export interface ZkProof {
  proof: Groth16Proof
  publicSignals: string[]
}

/** The public signals, decoded: what a verified proof says. */
export interface ZkStatement {
  /** The last layer's int32 accumulators (dequantize with scale.outputExp). */
  output: Int32Array
  weightCommitment: bigint
  /** Public input mode: the int8 input. */
  input?: Int8Array
  /** Committed input mode: Poseidon of the input (see inputCommitment). */
  inputHash?: bigint
}
