/**
 * The commitments the circuit computes, in JS, so a manifest can carry the weight commitment
 * and a client can check an input hash.
 *
 * Poseidon comes from poseidon-lite: plain BigInt code with circomlib's constants, no
 * dependencies, the same in Node and browsers. (circomlibjs loads blake-hash and ethers with
 * it, which need Node's Buffer the moment they are imported: it fails in a tab.)
 */
import * as lite from 'poseidon-lite'
import { commitmentElements, layout, packInput, packModel, shapeOf } from './layout.js'
import type { QuantModel } from './quantize.js'

/** circomlib's Poseidon takes 1…16 inputs (t = 2…17). */
export const HASH_ARITY = 16

type PoseidonN = (inputs: bigint[]) => bigint
const POSEIDON: PoseidonN[] = [
  lite.poseidon1,
  lite.poseidon2,
  lite.poseidon3,
  lite.poseidon4,
  lite.poseidon5,
  lite.poseidon6,
  lite.poseidon7,
  lite.poseidon8,
  lite.poseidon9,
  lite.poseidon10,
  lite.poseidon11,
  lite.poseidon12,
  lite.poseidon13,
  lite.poseidon14,
  lite.poseidon15,
  lite.poseidon16
]

/** circomlib's Poseidon(n) of 1…16 field elements. */
export function poseidon(inputs: bigint[]): bigint {
  const f = POSEIDON[inputs.length - 1]
  if (f === undefined) throw new RangeError(`Poseidon takes 1…${HASH_ARITY} inputs, not ${inputs.length}`)
  return f(inputs)
}

/**
 * The circuit's ChainHash: Poseidon of the first 16 elements, then Poseidon(digest, next 15)
 * until all are absorbed. The count is fixed by the model's shape, so no length padding is needed.
 */
export function chainHash(elements: bigint[]): bigint {
  let digest = poseidon(elements.slice(0, HASH_ARITY))
  for (let at = HASH_ARITY; at < elements.length; at += HASH_ARITY - 1) {
    digest = poseidon([digest, ...elements.slice(at, at + HASH_ARITY - 1)])
  }
  return digest
}

/** The public commitment to a quantized model's weights and biases (the same in either input mode). */
export function weightCommitment(q: QuantModel): bigint {
  return chainHash(commitmentElements(packModel(q, layout(shapeOf(q, 'public')))))
}

/** The public signal that stands for an int8 input in 'committed' mode. */
export function inputCommitment(x: ArrayLike<number>): bigint {
  return chainHash(packInput(x))
}
