import { sha256 as nobleSha256 } from '@noble/hashes/sha2.js'
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js'

/** Incremental sha256, the same in Node and browsers. */
export interface Hasher {
  update(chunk: Uint8Array): Hasher
  digest(): Uint8Array
}

// Pure JS by default, so the core runs anywhere; a host with a native one installs it
// (host/native-crypto.ts: Node's is ~12× faster on a hop's 16 KiB rows, which every hop hashes twice).
let create: () => Hasher = () => nobleSha256.create()

/** Makes every sha256 of the shared core use `factory` (it must compute sha256 exactly). */
export function useSha256(factory: () => Hasher): void {
  create = factory
}

export const newSha256 = (): Hasher => create()
/** sha256 of `parts` concatenated (no copy into one buffer). */
export function sha256(...parts: Uint8Array[]): Uint8Array {
  const h = create()
  for (const p of parts) h.update(p)
  return h.digest()
}
export const sha256Hex = (bytes: Uint8Array): string => bytesToHex(sha256(bytes))
export { bytesToHex, hexToBytes }
