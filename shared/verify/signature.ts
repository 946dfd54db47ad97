/**
 * Checking a peer's Ed25519 signature: libp2p's own by default (pure JS in a browser, a key
 * re-imported per call in Node); a host with a faster one installs it (host/native-crypto.ts,
 * web/src/sign.ts). A client checks a signature on every hop of every token.
 */
import type { PublicKey } from '@libp2p/interface'

/** Whether `sig` is `raw` (a 32-byte Ed25519 public key)'s signature of `msg`. */
export type Ed25519Verify = (raw: Uint8Array, msg: Uint8Array, sig: Uint8Array) => boolean | Promise<boolean>

let ed25519: Ed25519Verify | undefined

export function useEd25519Verify(f: Ed25519Verify): void {
  ed25519 = f
}

export async function verifySignature(key: PublicKey, msg: Uint8Array, sig: Uint8Array): Promise<boolean> {
  if (ed25519 !== undefined && key.type === 'Ed25519') return await ed25519(key.raw, msg, sig)
  return await key.verify(msg, sig)
}

/** A small map that forgets everything when full: imported keys, by peer, for the verifiers above. */
export function keyCache<V>(max = 4096): (id: string, make: () => V) => V {
  const m = new Map<string, V>()
  return (id, make) => {
    let v = m.get(id)
    if (v === undefined) {
      if (m.size >= max) m.clear()
      v = make()
      m.set(id, v)
    }
    return v
  }
}
