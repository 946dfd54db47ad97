/**
 * Node's native crypto stands in for the shared core's pure-JS fallbacks (host/native-crypto.ts):
 * it must give the very bytes they give, or a tab and a native node would disagree on every
 * receipt's input chain and every signature.
 */
import { describe, expect, it } from 'vitest'
import { sha256 as nobleSha256 } from '@noble/hashes/sha2.js'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { nativeSigner } from '../../host/native-crypto.js'
import { verifySignature } from '../../shared/verify/signature.js'
import { newSha256, sha256 } from '../../shared/hash.js'
import { chainRows, EMPTY_CHAIN } from '../../shared/verify/receipt.js'
import { mulberry32 } from '../../shared/rng.js'

describe('native crypto', () => {
  it('is installed in test processes and hashes exactly as the pure-JS sha256 does, whole or in parts', () => {
    const r = mulberry32(5)
    const bytes = Uint8Array.from({ length: 3 * 16384 + 7 }, () => Math.floor(r() * 256))
    // The shim installs Node's: a plain Uint8Array out, not noble's.
    expect(newSha256()).not.toHaveProperty('blockLen')
    expect(sha256(bytes)).toEqual(nobleSha256(bytes))
    expect(sha256(bytes.subarray(0, 5), bytes.subarray(5))).toEqual(nobleSha256(bytes))
    expect(sha256(bytes).constructor).toBe(Uint8Array)
    // A receipt's input chain over 3 rows, as a tab would compute it.
    let c = EMPTY_CHAIN
    for (let i = 0; i < 3; i++) {
      const buf = new Uint8Array(32 + 16384)
      buf.set(c)
      buf.set(bytes.subarray(i * 16384, (i + 1) * 16384), 32)
      c = nobleSha256(buf)
    }
    expect(chainRows(EMPTY_CHAIN, bytes.subarray(0, 3 * 16384), 3)).toEqual(c)
  })

  it("signs exactly as libp2p's key does (Ed25519 is deterministic), and libp2p verifies it", async () => {
    const key = await generateKeyPair('Ed25519')
    const sign = nativeSigner(key)
    for (const msg of [new Uint8Array(0), new TextEncoder().encode('a receipt body'), new Uint8Array(5000).fill(9)]) {
      const sig = await sign(msg)
      expect(sig).toEqual(new Uint8Array(await key.sign(msg))) // libp2p hands back a Buffer
      expect(await key.publicKey.verify(msg, sig)).toBe(true)
    }
  })

  it("checks libp2p's Ed25519 signatures as libp2p does: good ones pass, a flipped bit or a short one fails without throwing", async () => {
    const key = await generateKeyPair('Ed25519')
    const msg = new TextEncoder().encode('a receipt body')
    const sig = await key.sign(msg)
    expect(await verifySignature(key.publicKey, msg, sig)).toBe(true)
    const flipped = Uint8Array.from(sig, (b, i) => (i === 5 ? b ^ 4 : b))
    expect(await verifySignature(key.publicKey, msg, flipped)).toBe(false)
    expect(await key.publicKey.verify(msg, flipped)).toBe(false)
    expect(await verifySignature(key.publicKey, msg, sig.subarray(0, 40))).toBe(false)
    const other = await generateKeyPair('Ed25519')
    expect(await verifySignature(other.publicKey, msg, sig)).toBe(false) // not the cached key of the first
  })
})
