/**
 * A binary Merkle tree over a hop's per-layer fingerprints: the receipt signs only the root
 * (32 bytes however many layers), and a node can later reveal one layer's fingerprint with a
 * proof that it is the one it committed to. An odd node at any level is paired with itself.
 */
import { sha256 } from '../hash.js'
import { encodeFingerprint, type Fingerprint } from './fingerprint.js'
import { TesseraError } from '../errors.js'

/** Leaf of layer L: sha256(0x00 ‖ L as u32 BE ‖ the encoded fingerprint). */
export function layerLeaf(layer: number, fp: Fingerprint | Uint8Array): Uint8Array {
  const body = fp instanceof Uint8Array ? fp : encodeFingerprint(fp)
  const buf = new Uint8Array(5 + body.byteLength)
  new DataView(buf.buffer).setUint32(1, layer)
  buf.set(body, 5)
  return sha256(buf)
}

const node = (a: Uint8Array, b: Uint8Array): Uint8Array => {
  const buf = new Uint8Array(65)
  buf[0] = 1 // inner nodes and leaves hash differently, so a leaf cannot pose as a subtree
  buf.set(a, 1)
  buf.set(b, 33)
  return sha256(buf)
}

export function merkleRoot(leaves: Uint8Array[]): Uint8Array {
  if (leaves.length === 0) throw new TesseraError('INTERNAL', 'a Merkle tree needs at least one leaf')
  let level = leaves
  while (level.length > 1) level = Array.from({ length: Math.ceil(level.length / 2) }, (_, i) => node(level[2 * i], level[2 * i + 1] ?? level[2 * i]))
  return level[0]
}

/** The sibling hashes from leaf i up to the root. */
export function merkleProof(leaves: Uint8Array[], i: number): Uint8Array[] {
  const proof: Uint8Array[] = []
  let level = leaves
  let at = i
  while (level.length > 1) {
    proof.push(level[at ^ 1] ?? level[at])
    level = Array.from({ length: Math.ceil(level.length / 2) }, (_, j) => node(level[2 * j], level[2 * j + 1] ?? level[2 * j]))
    at >>= 1
  }
  return proof
}

export function verifyMerkleProof(leaf: Uint8Array, i: number, proof: Uint8Array[], root: Uint8Array): boolean {
  let h = leaf
  let at = i
  for (const sibling of proof) {
    h = (at & 1) === 0 ? node(h, sibling) : node(sibling, h)
    at >>= 1
  }
  return h.length === root.length && h.every((b, k) => b === root[k])
}
