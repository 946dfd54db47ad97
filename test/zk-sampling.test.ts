/**
 * The sampling-step proof (zk/argmax.ts): the greedy token is the argmax of the logits the last
 * hop signed a commitment to. The circuit here is for a vocabulary of 32 (2^11, seconds to set
 * up, cached in .cache/zk); the network test proves stories260K's 512-token steps.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { ProtocolError } from '../shared/errors.js'
import { argmax } from '../shared/sampler.js'
import { mulberry32 } from '../shared/rng.js'
import { signReceipt } from '../shared/verify/receipt.js'
import { verifySamplingProof } from '../shared/verify/sampling.js'
import { logitsCommitment, provedArgmax, quantizeLogits, LOGIT_EXP } from '../shared/zk/argmax.js'
import { PROOF_BYTES } from '../shared/zk/proof.js'
import { releaseZkWorkers } from '../shared/zk/verify.js'
import { setupSampling, type SamplingSetup } from '../host/zk/setup.js'
import { reference } from './helpers/reference.js'

const VOCAB = 32
let s: SamplingSetup
type Key = Awaited<ReturnType<typeof generateKeyPair>>
let key: Key
let peer: string

beforeAll(async () => {
  s = await setupSampling(VOCAB)
  key = await generateKeyPair('Ed25519')
  peer = peerIdFromPrivateKey(key).toString()
}, 600_000)
afterAll(async () => {
  await releaseZkWorkers()
})

const code = async (p: Promise<unknown>): Promise<string> =>
  await p.then(
    () => 'resolved',
    (e: unknown) => (e instanceof ProtocolError ? e.code : String(e))
  )

function logits(seed: number): Float32Array {
  const r = mulberry32(seed)
  return Float32Array.from({ length: VOCAB }, () => (r() - 0.5) * 20)
}

/** A last hop's receipt committing to `q` (the fields other than `logits` do not matter here). */
async function receipt(q: Int32Array, by: Key = key): Promise<Uint8Array> {
  return await signReceipt(
    {
      peer: peerIdFromPrivateKey(by).toString(),
      session: 's',
      step: 0,
      root: '0'.repeat(64),
      layers: [0, 5],
      start: 0,
      input: new Uint8Array(32),
      output: new Uint8Array(4),
      logits: logitsCommitment(q)
    },
    async (b) => await by.sign(b)
  )
}

describe('logits quantization', () => {
  it("keeps llama2.c's greedy token on every reference prompt", () => {
    // Only a near-tie closer than 2^-16 could change it; the reference's margins are far larger.
    for (const c of reference()) {
      const row = Float32Array.from(c.last_prompt_logits)
      expect(provedArgmax(quantizeLogits(row))).toBe(argmax(row))
      expect(provedArgmax(quantizeLogits(row))).toBe(c.greedy[0])
    }
    expect(Array.from(quantizeLogits([1, -1, 0.5 ** LOGIT_EXP, 1e9, -1e9]))).toEqual([2 ** LOGIT_EXP, -(2 ** LOGIT_EXP), 1, 2 ** 23 - 1, -(2 ** 23)])
    expect(() => quantizeLogits([0, Number.NaN])).toThrow(/NaN/)
    expect(provedArgmax([3, 7, 7, 1])).toBe(1)
  })
})

describe(`sampling proof (vocabulary ${VOCAB})`, () => {
  it('proves the greedy token; Node verifies it against the signed commitment', async () => {
    console.log(`vocab ${VOCAB}: ${s.entry.constraints} constraints, 2^${s.entry.power}`)
    for (const seed of [1, 2, 3]) {
      const q = quantizeLogits(logits(seed))
      const token = provedArgmax(q)
      const p = await s.prover.prove(q, token)
      expect(p.proof.length).toBe(PROOF_BYTES)
      expect(p.publicSignals).toEqual([logitsCommitment(q), String(token)])
      await expect(verifySamplingProof(s.entry, { token, peer, receipt: await receipt(q), ...p }, { token, peer })).resolves.toEqual({
        commitment: logitsCommitment(q)
      })
    }
  }, 120_000)

  it('cannot prove a token that is not the argmax, nor the later of two tied maxima', async () => {
    const q = quantizeLogits(logits(4))
    const token = provedArgmax(q)
    await expect(s.prover.prove(q, (token + 1) % VOCAB)).rejects.toThrow(/not the argmax|cannot prove/)
    const tied = Int32Array.from(q)
    const other = (token + 5) % VOCAB
    tied[other] = tied[token]
    const [first, second] = [Math.min(token, other), Math.max(token, other)]
    expect(provedArgmax(tied)).toBe(first)
    await expect(s.prover.prove(tied, second)).rejects.toThrow(/cannot prove/)
    await expect(s.prover.prove(tied, first)).resolves.toMatchObject({ publicSignals: [logitsCommitment(tied), String(first)] })
  }, 120_000)

  it('rejects a proof about other logits, another token, another signer, a tampered proof', async () => {
    const q = quantizeLogits(logits(5))
    const token = provedArgmax(q)
    const p = await s.prover.prove(q, token)
    const good = { token, peer, receipt: await receipt(q), ...p }
    // The hop signed other logits (one value nudged): the proof is not about what it committed to.
    const nudged = Int32Array.from(q)
    nudged[(token + 1) % VOCAB] -= 1
    expect(await code(verifySamplingProof(s.entry, { ...good, receipt: await receipt(nudged) }))).toBe('ZK_WRONG_COMMITMENT')
    // Another token claimed with the same proof; or the public token edited to match.
    expect(await code(verifySamplingProof(s.entry, good, { token: (token + 1) % VOCAB }))).toBe('ZK_WRONG_OUTPUT')
    const edited = { ...good, token: (token + 1) % VOCAB, publicSignals: [p.publicSignals[0], String((token + 1) % VOCAB)] }
    expect(await code(verifySamplingProof(s.entry, edited))).toBe('ZK_INVALID_PROOF')
    // Signed by someone else than the peer named, or not signed at all over these bytes.
    const stranger = await generateKeyPair('Ed25519')
    expect(await code(verifySamplingProof(s.entry, { ...good, receipt: await receipt(q, stranger) }))).toBe('BAD_RECEIPT')
    const forged = Uint8Array.from(good.receipt)
    forged[forged.length - 1] ^= 1
    expect(await code(verifySamplingProof(s.entry, { ...good, receipt: forged }))).toBe('BAD_RECEIPT')
    const bent = Uint8Array.from(p.proof)
    bent[40] ^= 1
    expect(await code(verifySamplingProof(s.entry, { ...good, proof: bent }))).toBe('ZK_INVALID_PROOF')
    expect(await code(verifySamplingProof(s.entry, { ...good, publicSignals: ['x', '1'] }))).toBe('ZK_MALFORMED')
  }, 120_000)
})
