/**
 * Ed25519 in a page with the browser's own WebCrypto: a tab signs its receipts with it (the key
 * imported once), and any page checks peers' signatures with it (each key imported once).
 * libp2p's browser keys sign and verify in JavaScript; every hop of every token needs both.
 */
import type { PrivateKey } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Signer } from '../../shared/verify/receipt.js'
import { keyCache, useEd25519Verify } from '../../shared/verify/signature.js'

// PKCS #8 wrapping of a raw Ed25519 seed (RFC 8410): this prefix, then the 32 bytes.
const PKCS8_ED25519 = Uint8Array.from([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20])

export interface TabSigner {
  sign: Signer
  /** 'webcrypto' where the browser signs Ed25519 itself, else 'js' (libp2p's). */
  kind: 'webcrypto' | 'js'
  /** Median µs of a signature, each kind measured here on a receipt-sized message. */
  us: { webcrypto?: number; js: number }
}

export async function tabSigner(key: PrivateKey): Promise<TabSigner> {
  const js: Signer = async (b) => await key.sign(b)
  const probe = new Uint8Array(300).fill(7)
  const us = { js: await medianUs(js, probe) }
  if (key.type !== 'Ed25519') return { sign: js, kind: 'js', us }
  try {
    const pkcs8 = new Uint8Array(PKCS8_ED25519.length + 32)
    pkcs8.set(PKCS8_ED25519)
    pkcs8.set(key.raw.subarray(0, 32), PKCS8_ED25519.length)
    const k = await crypto.subtle.importKey('pkcs8', pkcs8, { name: 'Ed25519' }, false, ['sign'])
    const native: Signer = async (b) => new Uint8Array(await crypto.subtle.sign('Ed25519', k, b as Uint8Array<ArrayBuffer>))
    // Ed25519 is deterministic: the browser's must give libp2p's very bytes, or it is not used.
    const [a, b] = [await native(probe), await js(probe)]
    if (a.length !== b.length || a.some((x, i) => x !== b[i])) return { sign: js, kind: 'js', us }
    return { sign: native, kind: 'webcrypto', us: { ...us, webcrypto: await medianUs(native, probe) } }
  } catch {
    return { sign: js, kind: 'js', us } // no Ed25519 in this browser's WebCrypto
  }
}

async function medianUs(sign: Signer, msg: Uint8Array, n = 21): Promise<number> {
  const times: number[] = []
  for (let i = 0; i < n; i++) {
    const t = performance.now()
    await sign(msg)
    times.push((performance.now() - t) * 1000)
  }
  return times.sort((x, y) => x - y)[n >> 1]
}

let installed = false

/**
 * Checks Ed25519 signatures with WebCrypto from now on, where the browser has it: probed once on a
 * signature of a fresh key, so a browser without Ed25519 (or a broken one) keeps libp2p's.
 */
export async function useWebCryptoVerify(): Promise<boolean> {
  if (installed) return true
  try {
    const key = await generateKeyPair('Ed25519')
    const msg = new Uint8Array(32).fill(3)
    const sig = await key.sign(msg)
    const importKey = async (raw: Uint8Array): Promise<CryptoKey> =>
      await crypto.subtle.importKey('raw', raw as Uint8Array<ArrayBuffer>, { name: 'Ed25519' }, false, ['verify'])
    const check = async (k: CryptoKey, m: Uint8Array, s: Uint8Array): Promise<boolean> =>
      await crypto.subtle.verify('Ed25519', k, s as Uint8Array<ArrayBuffer>, m as Uint8Array<ArrayBuffer>)
    const k = await importKey(key.publicKey.raw)
    const bad = Uint8Array.from(sig, (b, i) => (i === 0 ? b ^ 1 : b))
    if (!(await check(k, msg, sig)) || (await check(k, msg, bad))) return false
    const keys = keyCache<Promise<CryptoKey>>()
    useEd25519Verify(async (raw, m, s) => {
      try {
        return await check(await keys(String.fromCharCode(...raw), async () => await importKey(raw)), m, s)
      } catch {
        return false
      }
    })
    installed = true
    return true
  } catch {
    return false
  }
}
