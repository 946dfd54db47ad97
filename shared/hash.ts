import { sha256 } from '@noble/hashes/sha2.js'
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js'

/** Incremental sha256, the same in Node and browsers. */
export interface Hasher {
  update(chunk: Uint8Array): Hasher
  digest(): Uint8Array
}

export const newSha256 = (): Hasher => sha256.create()
export const sha256Hex = (bytes: Uint8Array): string => bytesToHex(sha256(bytes))
export { bytesToHex, hexToBytes }
