/**
 * Signatures in the simulator. Every receipt is still signed by its peer and checked by the
 * client through the shipped plug (shared/verify/signature.ts), but with HMAC-SHA256 under a
 * secret only that peer and this registry hold, instead of Ed25519: a receipt still proves who
 * made it (nobody else can make one that checks), at a few µs instead of the ~50 µs sign and
 * ~130 µs check that would bound how many hop-steps a simulation can run. Peer ids stay the
 * real ones of Ed25519 keys.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import type { PrivateKey } from '@libp2p/interface'
import { useEd25519Verify } from '../shared/verify/signature.js'
import { installNativeCrypto } from '../host/native-crypto.js'
import type { Signer } from '../shared/verify/receipt.js'

const secrets = new Map<string, Buffer>() // by the public key's raw bytes, hex
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
const mac = (secret: Buffer, msg: Uint8Array): Uint8Array => new Uint8Array(createHmac('sha256', secret).update(msg).digest())

/** A signer for `key`'s peer in the simulation; its signatures check only while simulated signatures are installed. */
export function simSigner(key: PrivateKey): Signer {
  const secret = randomBytes(32)
  secrets.set(hex(key.publicKey.raw), secret)
  return async (b) => mac(secret, b)
}

/** Checks signatures the simulated way until the returned function puts Node's Ed25519 back. */
export function useSimSignatures(): () => void {
  useEd25519Verify((raw, msg, sig) => {
    const secret = secrets.get(hex(raw))
    if (secret === undefined || sig.byteLength !== 32) return false
    return timingSafeEqual(mac(secret, msg), sig)
  })
  return () => {
    installNativeCrypto()
  }
}
