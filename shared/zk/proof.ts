/**
 * A Groth16 proof as 256 bytes for the wire (snarkjs's JSON is ~720): A and C are G1 points
 * (x, y), B a G2 point (x.c0, x.c1, y.c0, y.c1), each coordinate 32 bytes big-endian, affine.
 * Compressing to 128 bytes would need square roots in the base field to decode; at one proof
 * per request the extra 128 bytes are not worth it.
 */
import { ProtocolError } from '../errors.js'
import type { Groth16Proof } from './types.js'

export const PROOF_BYTES = 256

const coordinates = (p: Groth16Proof): string[] => [p.pi_a[0], p.pi_a[1], p.pi_b[0][0], p.pi_b[0][1], p.pi_b[1][0], p.pi_b[1][1], p.pi_c[0], p.pi_c[1]]

export function encodeProof(proof: Groth16Proof): Uint8Array {
  const out = new Uint8Array(PROOF_BYTES)
  coordinates(proof).forEach((c, i) => {
    let v = BigInt(c)
    for (let b = 31; b >= 0; b--) {
      out[32 * i + b] = Number(v & 0xffn)
      v >>= 8n
    }
  })
  return out
}

export function decodeProof(bytes: Uint8Array): Groth16Proof {
  if (bytes.length !== PROOF_BYTES) throw new ProtocolError('ZK_MALFORMED', `a Groth16 proof is ${PROOF_BYTES} bytes, got ${bytes.length}`)
  const c = Array.from({ length: 8 }, (_, i) =>
    bytes
      .subarray(32 * i, 32 * i + 32)
      .reduce((v, byte) => (v << 8n) | BigInt(byte), 0n)
      .toString()
  )
  return {
    pi_a: [c[0], c[1], '1'],
    pi_b: [
      [c[2], c[3]],
      [c[4], c[5]],
      ['1', '0']
    ],
    pi_c: [c[6], c[7], '1'],
    protocol: 'groth16',
    curve: 'bn128'
  }
}
