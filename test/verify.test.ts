/**
 * Receipts and fingerprints: forged, misdirected and copied receipts are rejected; fingerprints
 * of honest runs on different runtimes match, and those of a changed model do not.
 */
import { describe, expect, it } from 'vitest'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { decode, encode } from 'cborg'
import { buildModel, loadModel } from '../native-node/store.js'
import { loadWasmRunners } from './helpers/wasm.js'
import { preset } from '../shared/model/config.js'
import { randomWeights } from '../shared/model/random.js'
import { compareFingerprints, decodeFingerprint, encodeFingerprint, fingerprint, THRESHOLDS } from '../shared/verify/fingerprint.js'
import { inputHash, signReceipt, verifyReceipt, type Expected } from '../shared/verify/receipt.js'
import type { ShardRunner, HopOutput } from '../shared/runner.js'
import { stories } from './helpers/reference.js'
import { tempDir } from './helpers/paths.js'
import { fillNormal, mulberry32 } from '../shared/rng.js'

describe('receipts', () => {
  const output = { data: fillNormal(new Float32Array(3 * 64), mulberry32(1), 1), seq: 3, width: 64 }
  const input = new Uint8Array(new Int32Array([1, 2, 3]).buffer)

  async function signed () {
    const key = await generateKeyPair('Ed25519')
    const peer = peerIdFromPrivateKey(key).toString()
    const body = { peer, session: 's1', step: 4, root: 'ab'.repeat(32), layers: [0, 2] as [number, number], input: inputHash(input), output: encodeFingerprint(fingerprint(output.data, output.seq, output.width)) }
    const expected: Expected = { peer, session: 's1', step: 4, root: body.root, layers: [0, 2], input: inputHash(input), output }
    return { key, peer, body, expected, bytes: await signReceipt(body, async (b) => await key.sign(b)) }
  }

  it('verifies an honest receipt', async () => {
    const r = await signed()
    expect((await verifyReceipt(r.bytes, r.expected)).step).toBe(4)
  })

  it('rejects a missing receipt, a forged signature, another input, another output, another step', async () => {
    const r = await signed()
    await expect(verifyReceipt(undefined, r.expected)).rejects.toThrow(/carries no receipt/)
    const forged = decode(r.bytes) as { body: Uint8Array, signature: Uint8Array }
    forged.signature[3] ^= 1
    await expect(verifyReceipt(encode(forged), r.expected)).rejects.toThrow(/signature does not verify/)
    await expect(verifyReceipt(r.bytes, { ...r.expected, input: inputHash(new Uint8Array([9])) })).rejects.toThrow(/another input/)
    const other = { ...output, data: output.data.map((x, i) => i === 5 ? x + 1 : x) }
    await expect(verifyReceipt(r.bytes, { ...r.expected, output: other })).rejects.toThrow(/not of the output/)
    await expect(verifyReceipt(r.bytes, { ...r.expected, step: 5 })).rejects.toThrow(/not s1 step 5/)
  })

  it('rejects a receipt copied from another peer', async () => {
    const honest = await signed()
    const copier = await signed()
    await expect(verifyReceipt(honest.bytes, { ...honest.expected, peer: copier.peer })).rejects.toThrow(/served the hop/)
    // Re-signing someone else's body with one's own key does not help either.
    const resigned = await signReceipt(honest.body, async (b) => await copier.key.sign(b))
    await expect(verifyReceipt(resigned, honest.expected)).rejects.toThrow(/signature does not verify/)
  })

  it('costs a few hundred bytes per token', async () => {
    const r = await signed()
    expect(r.bytes.byteLength / output.seq).toBeLessThan(400)
  })
})

describe('fingerprints', () => {
  it('round-trip through bytes and compare equal to themselves', () => {
    const data = fillNormal(new Float32Array(5 * 100), mulberry32(3), 1)
    const f = fingerprint(data, 5, 100)
    const g = decodeFingerprint(encodeFingerprint(f))
    expect(g).toEqual(f)
    expect(compareFingerprints(f, g)).toMatchObject({ minOverlap: 1, maxRelErr: 0, verdict: 'match' })
    expect(() => decodeFingerprint(new Uint8Array(7))).toThrow(/does not hold/)
  })

  /** Every hop's outputs for `prompts` on a chain of runners (teacher-forced decode after a prefill). */
  async function hopOutputs (runners: ShardRunner[], prompts: number[][]): Promise<HopOutput[]> {
    const outs: HopOutput[] = []
    for (const prompt of prompts) {
      const sessions = runners.map((r) => r.open())
      for (const tokens of [prompt, [prompt[0]], [prompt[prompt.length - 1]]]) {
        let out = await sessions[0].forward({ tokens })
        outs.push(out)
        for (const s of sessions.slice(1)) { out = await s.forward({ hidden: out.data, seq: out.seq }); outs.push(out) }
      }
      for (const s of sessions) s.close()
    }
    return outs
  }

  it('match across onnxruntime-node and onnxruntime-web WASM, and catch a changed model (stories260K, 3 shards)', async () => {
    const dir = tempDir('fp')
    await buildModel(await stories(), dir, { source: 'stories260K.bin', cuts: [2, 4] })
    const { manifest, runners } = await loadModel(dir, { device: 'cpu' })
    const wasm = await loadWasmRunners(dir, manifest)
    const rand = mulberry32(7)
    const prompts = Array.from({ length: 12 }, (_, i) => Array.from({ length: 1 + (i * 5) % 40 }, () => 1 + Math.floor(rand() * 500)))
    const a = await hopOutputs(runners, prompts)
    const b = await hopOutputs(wasm, prompts)
    let worstOverlap = 1
    let worstErr = 0
    for (let i = 0; i < a.length; i++) {
      const c = compareFingerprints(fingerprint(a[i].data, a[i].seq, a[i].width), fingerprint(b[i].data, b[i].seq, b[i].width))
      worstOverlap = Math.min(worstOverlap, c.minOverlap)
      worstErr = Math.max(worstErr, c.maxRelErr)
      expect(c.verdict, `hop output ${i}`).toBe('match')
    }
    console.log(`honest ort-node vs ort-web WASM over ${a.length} hop outputs: worst overlap ${worstOverlap.toFixed(3)} (threshold ${THRESHOLDS.minOverlap}), worst rel. error ${worstErr.toExponential(2)} (threshold ${THRESHOLDS.maxRelErr})`)

    // The same shards built from other weights (a peer running the wrong model) never match.
    const other = tempDir('fp-other')
    await buildModel(randomWeights({ ...preset('tiny'), ...manifest.config }, 99), other, { source: 'other', cuts: [2, 4] })
    const wrong = await hopOutputs((await loadModel(other, { device: 'cpu' })).runners, prompts)
    for (let i = 0; i < a.length; i++) {
      expect(compareFingerprints(fingerprint(a[i].data, a[i].seq, a[i].width), fingerprint(wrong[i].data, wrong[i].seq, wrong[i].width)).verdict).toBe('mismatch')
    }
  })
})
