/**
 * Node's native crypto for the shared core, which ships pure-JS fallbacks for browsers: sha256
 * (every hop hashes its 16 KiB rows at both ends; ~11 µs here against ~130 µs) and a receipt
 * signer with the key parsed once (~40 µs a signature against ~76 µs re-importing it each time),
 * and signature checks with each peer's key imported once.
 */
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto'
import type { PrivateKey } from '@libp2p/interface'
import { useSha256, type Hasher } from '../shared/hash.js'
import type { Signer } from '../shared/verify/receipt.js'
import { keyCache, useEd25519Verify } from '../shared/verify/signature.js'

const asBytes = (b: Buffer): Uint8Array => new Uint8Array(b.buffer, b.byteOffset, b.byteLength)
const b64 = (u: Uint8Array): string => Buffer.from(u).toString('base64url')

export function installNativeCrypto(): void {
  const keys = keyCache<KeyObject>()
  useEd25519Verify((raw, msg, sig) => {
    const x = b64(raw)
    const key = keys(x, () => createPublicKey({ format: 'jwk', key: { kty: 'OKP', crv: 'Ed25519', x } }))
    try {
      return verify(null, msg, key, sig)
    } catch {
      return false // a signature of the wrong length: not a signature
    }
  })
  useSha256(() => {
    const h = createHash('sha256')
    const hasher: Hasher = {
      update(chunk) {
        h.update(chunk)
        return hasher
      },
      digest: () => asBytes(h.digest())
    }
    return hasher
  })
}

/** Signs with Node's Ed25519, the key imported once; another key type keeps libp2p's own signer. */
export function nativeSigner(key: PrivateKey): Signer {
  if (key.type !== 'Ed25519') return async (b) => await key.sign(b)
  // libp2p's raw Ed25519 private key is the 32-byte seed followed by the public key.
  const k = createPrivateKey({ format: 'jwk', key: { kty: 'OKP', crv: 'Ed25519', d: b64(key.raw.subarray(0, 32)), x: b64(key.raw.subarray(32)) } })
  return async (b) => asBytes(sign(null, b, k))
}
