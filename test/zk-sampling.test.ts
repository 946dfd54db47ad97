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
import { encodeFingerprint, fingerprint } from '../shared/verify/fingerprint.js'
import { chainRows, EMPTY_CHAIN, signReceipt, type ReceiptBody } from '../shared/verify/receipt.js'
import { type SamplingExpect, verifySampledTokens, verifySamplingProof } from '../shared/verify/sampling.js'
import { logitsCommitment, provedArgmax, quantizeLogits, LOGIT_EXP } from '../shared/zk/argmax.js'
import { pinnedModel, pinnedSampling, verificationKeyHash } from '../shared/zk/pin.js'
import { PROOF_BYTES } from '../shared/zk/proof.js'
import { VerificationError } from '../shared/errors.js'
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

/** The session the requester ran itself: model root, its 5 layers in one last hop, a 3-row prefill at 0, and the chain it fed. */
const ROOT = 'a'.repeat(64)
const N_LAYERS = 5
const ROWS = 3
const CONTEXT = chainRows(EMPTY_CHAIN, Uint8Array.from([1, 0, 0, 0, 7, 0, 0, 0, 9, 0, 0, 0]), ROWS)

/** A 1-position-per-row fingerprint of `rows` rows, as the receipt's `output` (its row count is the fingerprint's positions). */
const output = (rows: number): Uint8Array => encodeFingerprint(fingerprint(new Float32Array(rows * VOCAB).fill(1), rows, VOCAB))

/** A last hop's receipt committing to `q`, honest unless a field is overridden. */
async function receipt(q: Int32Array, by: Key = key, over: Partial<ReceiptBody> = {}): Promise<Uint8Array> {
  return await signReceipt(
    {
      peer: peerIdFromPrivateKey(by).toString(),
      session: 's',
      step: 0,
      root: ROOT,
      layers: [0, N_LAYERS],
      start: 0,
      input: CONTEXT,
      output: output(ROWS),
      logits: logitsCommitment(q),
      ...over
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
  it('binds the proof to what the requester knows: a relay cannot pass off a receipt of its own making', async () => {
    const q = quantizeLogits(logits(6))
    const token = provedArgmax(q)
    const p = await s.prover.prove(q, token)
    const route = [peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString(), peer]
    // What the client knows from its own session: the route it built, the model, the last hop's layers, the token's position and context.
    const known: SamplingExpect = { token, peer, peers: route, root: ROOT, nLayers: N_LAYERS, layers: [0, N_LAYERS], position: ROWS - 1, input: CONTEXT }
    const honest = { token, peer, receipt: await receipt(q), ...p }
    await expect(verifySamplingProof(s.entry, honest, known)).resolves.toEqual({ commitment: logitsCommitment(q) })
    const why = async (e: Promise<unknown>): Promise<string> =>
      await e.then(
        () => 'resolved',
        (err: unknown) => (err instanceof ProtocolError ? `${err.code}: ${err.message}` : String(err))
      )
    // The relay signs the commitment itself, with a key of its own, and names itself as the peer.
    const relay = await generateKeyPair('Ed25519')
    const relayId = peerIdFromPrivateKey(relay).toString()
    const relaySigned = { ...honest, peer: relayId, receipt: await receipt(q, relay) }
    expect(await why(verifySamplingProof(s.entry, relaySigned, { ...known, peer: undefined }))).toMatch(/^BAD_RECEIPT: .*did not name/)
    // The last hop's own key, but a receipt about another model, other layers, another position, another context.
    const cases: Array<[Partial<ReceiptBody>, RegExp]> = [
      [{ root: 'b'.repeat(64) }, /model root/],
      [{ layers: [0, N_LAYERS - 1] }, /last layer/],
      [{ layers: [1, N_LAYERS] }, /last hop's/],
      [{ start: 1 }, /position 3, not .* 2/],
      [{ output: output(ROWS + 1) }, /position 3/],
      [{ input: chainRows(EMPTY_CHAIN, Uint8Array.from([2, 0, 0, 0, 7, 0, 0, 0, 9, 0, 0, 0]), ROWS) }, /another context/]
    ]
    for (const [over, msg] of cases) {
      const r = await receipt(q, key, over)
      expect(await why(verifySamplingProof(s.entry, { ...honest, receipt: r }, known))).toMatch(new RegExp(`^BAD_RECEIPT: .*${msg.source}`))
    }
    // A valid proof for another token (other logits, honestly committed by the hop) does not vouch for the token returned.
    const q2 = quantizeLogits(logits(7))
    const t2 = provedArgmax(q2)
    expect(t2).not.toBe(token)
    const other = { token: t2, peer, receipt: await receipt(q2), ...(await s.prover.prove(q2, t2)) }
    expect(await code(verifySamplingProof(s.entry, other, known))).toBe('ZK_WRONG_OUTPUT')
    // The proof's commitment must be the receipt's: the other proof under the honest receipt.
    expect(await code(verifySamplingProof(s.entry, { ...other, receipt: honest.receipt }, { ...known, token: t2 }))).toBe('ZK_WRONG_COMMITMENT')
    // From the token ids alone (the prompt the app sent): position and, for a hop fed token ids, its chain.
    const ctx = { token, root: ROOT, nLayers: N_LAYERS }
    await expect(verifySamplingProof(s.entry, honest, { ...ctx, context: [1, 7, 9] })).resolves.toEqual({ commitment: logitsCommitment(q) })
    expect(await why(verifySamplingProof(s.entry, honest, { ...ctx, context: [2, 7, 9] }))).toMatch(/^BAD_RECEIPT: .*another context/)
    expect(await why(verifySamplingProof(s.entry, honest, { ...ctx, context: [1, 7, 9, 4] }))).toMatch(/^BAD_RECEIPT: .*position 2, not .* 3/)
    // Whole answers: the per-token knowledge reaches each proof.
    await expect(verifySampledTokens([s.entry], [token], [{ ...honest, index: 0, vocab: VOCAB }], () => known)).resolves.toMatchObject({})
    expect(await code(verifySampledTokens([s.entry], [token], [{ ...honest, index: 0, vocab: VOCAB }], () => ({ ...known, root: 'c'.repeat(64) })))).toBe(
      'BAD_RECEIPT'
    )
  }, 120_000)
  it('a relay serving a swapped verification key is refused against the pinned hash', async () => {
    const pins = { sampling: { [VOCAB]: verificationKeyHash(s.entry.verificationKey) } }
    // Key order on the wire does not change the hash; the honest key passes.
    const reordered = Object.fromEntries(Object.entries(s.entry.verificationKey).reverse())
    expect(pinnedSampling([{ ...s.entry, verificationKey: reordered }], pins)).toHaveLength(1)
    // A key of the relay's own setup: one point changed (it would then hold the trapdoor for it).
    const vk = structuredClone(s.entry.verificationKey) as { vk_alpha_1: string[] }
    vk.vk_alpha_1[0] = (BigInt(vk.vk_alpha_1[0]) + 1n).toString()
    const swapped = { ...s.entry, verificationKey: vk }
    expect(() => pinnedSampling([swapped], pins)).toThrow(VerificationError)
    expect(() => pinnedSampling([swapped], pins)).toThrow(/not the pinned/)
    // An unpinned vocabulary is not taken on the relay's word, and so its proofs find no circuit.
    expect(pinnedSampling([{ ...s.entry, vocab: VOCAB + 1 }], pins)).toEqual([])
    // ZK models: a pin per name; a swapped key or a model without a pin is refused.
    const model = { name: 'm', verificationKey: s.entry.verificationKey } as unknown as Parameters<typeof pinnedModel>[0]
    const mpins = { models: { m: verificationKeyHash(s.entry.verificationKey) } }
    expect(pinnedModel(model, mpins)).toBe(model)
    expect(() => pinnedModel({ ...model, verificationKey: vk }, mpins)).toThrow(/not the pinned/)
    expect(() => pinnedModel({ ...model, name: 'n' }, mpins)).toThrow(/no pinned verification key/)
  })
})
