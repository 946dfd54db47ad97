/**
 * The BN254 scalar field that circom, snarkjs and Poseidon work in. Signed integers map to field
 * elements as x mod p (so -1 is p - 1); public signals travel as decimal strings.
 */
export const FIELD_PRIME = 21888242871839275222246405745257275088548364400416034343698204186575808495617n

/** Bits a packed value may use: 2^253 < p, so any 253-bit decomposition is unique. */
export const FIELD_BITS = 253

export function toField(x: bigint | number): bigint {
  const r = BigInt(x) % FIELD_PRIME
  return r < 0n ? r + FIELD_PRIME : r
}

/** The integer in (-p/2, p/2) that a field element stands for. */
export function fromField(x: bigint): bigint {
  return x > FIELD_PRIME / 2n ? x - FIELD_PRIME : x
}

/** A public signal (decimal string) as a field element, or undefined if it is not one. */
export function parseSignal(s: string): bigint | undefined {
  if (!/^[0-9]{1,78}$/.test(s)) return undefined
  const v = BigInt(s)
  return v < FIELD_PRIME ? v : undefined
}
