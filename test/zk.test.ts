/**
 * Zero-knowledge mode: the int8 model tracks the float one; the circuit computes exactly the
 * integer reference; proofs verify, and a proof for another input, a tampered output and other
 * weights are each rejected. The trusted setup runs once into .cache/zk (a 2^11 ceremony for the
 * tiny model on a clean clone, ~1–2 min on 2 cores) and is reused by later runs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { ProtocolError } from '../shared/errors.js'
import { bytesOfInt32, signZkReply } from '../shared/protocol/zk.js'
import { checkProofEvidence } from '../shared/verify/proof.js'
import { fromField, toField } from '../shared/zk/field.js'
import { layout, pack } from '../shared/zk/layout.js'
import { forwardFloat, randomInputs } from '../shared/zk/model.js'
import { accumulate, forwardInt, quantizationError, quantizeInput, requantize, type QuantModel } from '../shared/zk/quantize.js'
import { decodeProof, encodeProof, PROOF_BYTES } from '../shared/zk/proof.js'
import { decodePublicSignals, releaseZkWorkers, verifyZkProof } from '../shared/zk/verify.js'
import { requiredPower } from '../host/zk/ceremony.js'
import { compileCircuit } from '../host/zk/compile.js'
import { parseProgress } from '../host/zk/progress.js'
import type { ProveResult, ZkProver } from '../host/zk/prove.js'
import { seededZkModel, setupZkModel, type ZkSetup } from '../host/zk/setup.js'

const code = async (p: Promise<unknown>): Promise<string> =>
  await p.then(
    () => 'resolved',
    (e: unknown) => (e instanceof ProtocolError ? e.code : String(e))
  )

describe('quantization', () => {
  it('keeps the int8 model within 5% of the float one, argmax flips only on near-ties', () => {
    // Power-of-two scales leave each tensor between 64 and 127 int8 steps at its peak, so each
    // weight and activation is off by ≤ 1/128 of the peak; over two layers of 16–64 terms that
    // adds up to ~2.5% of the largest output (measured on 1,000 inputs). 5% leaves room; an
    // argmax may only change where the float model's top two are closer than twice the error.
    for (const name of ['tiny', 'small']) {
      const m = seededZkModel(name)
      const inputs = randomInputs(m.shape.layers[0].inputs, 500, 99)
      const e = quantizationError(m.float, m.quant, inputs)
      console.log(
        `${name}: max |error| ${e.maxAbsError.toFixed(4)} (${(100 * e.maxRelError).toFixed(2)}% of the largest output)` +
          `, argmax agrees on ${(100 * e.argmaxAgreement).toFixed(1)}% of ${e.inputs} inputs`
      )
      expect(e.maxRelError).toBeLessThan(0.05)
      expect(e.argmaxAgreement).toBeGreaterThan(0.9)
      for (const x of inputs) {
        const want = forwardFloat(m.float, x)
        const got = forwardInt(m.quant, quantizeInput(m.quant, x))
        const [first, second] = [...want].sort((a, b) => b - a)
        if (want.indexOf(first) !== got.indexOf(Math.max(...got))) expect(first - second).toBeLessThan(2 * e.maxAbsError)
      }
    }
  })

  it('rounds half up, then clamps to int8 (ReLU: to [0, 127])', () => {
    expect([requantize(95, 6, false), requantize(96, 6, false), requantize(-96, 6, false), requantize(-97, 6, false)]).toEqual([1, 2, -1, -2])
    expect([requantize(1e6, 6, true), requantize(-1e6, 6, true), requantize(-1e6, 6, false)]).toEqual([127, 0, -128])
  })

  it('packs signed accumulators so that slots add without carries', () => {
    const m = seededZkModel('small')
    const layer = m.quant.layers[0]
    const L = layout(m.shape)[0]
    const x = quantizeInput(m.quant, randomInputs(layer.inputs, 1, 3)[0])
    const acc = accumulate(layer, x)
    // Σ_j P_j · x_j + B for group 0, as the circuit computes it, unpacks into the accumulators.
    const rows = Array.from({ length: L.slots }, (_, i) => i)
    let sum = toField(
      pack(
        rows.map((o) => layer.bias[o]),
        L.k
      )
    )
    for (let j = 0; j < layer.inputs; j++)
      sum = toField(
        sum +
          pack(
            rows.map((o) => layer.weights[o * layer.inputs + j]),
            L.k
          ) *
            toField(x[j])
      )
    let v = fromField(sum)
    for (const o of rows) {
      const slot = BigInt.asIntN(L.k, v)
      expect(Number(slot)).toBe(acc[o])
      v = (v - slot) >> BigInt(L.k)
    }
  })
})

describe('setup progress', () => {
  it('reads snarkjs log lines as monotone fractions of a stage', () => {
    const lines = [
      'tauG1: fft 3 mix start: 0/1',
      'tauG1: fft 11 mix end: 1/2',
      'tauG1: fft 12 join  12/12  1/1 0/1',
      'tauG2: fft 0 mix start: 0/1',
      'betaTauG1: fft 12 join  12/12  1/1 0/1'
    ]
    const f = lines.map((l) => parseProgress('ptau-prepare', l, 12) ?? -1)
    expect(f.every((v, i) => v > 0 && (i === 0 || v >= f[i - 1]))).toBe(true)
    expect(f[4]).toBeCloseTo(1, 3)
    expect(parseProgress('zkey-new', 'Writing points start B2: 866/2764', 12)).toBeCloseTo(0.5 + (0.5 * 866) / 2764, 5)
    expect(parseProgress('zkey-new', 'Reading r1cs', 12)).toBeUndefined()
  })
})

describe('circuit', () => {
  let tiny: ZkSetup
  let prover: ZkProver
  const inputs = (q: QuantModel, n: number, seed: number): Int8Array[] => randomInputs(q.layers[0].inputs, n, seed).map((x) => quantizeInput(q, x))

  beforeAll(async () => {
    const started = performance.now()
    tiny = await setupZkModel(seededZkModel('tiny'))
    prover = await tiny.prover()
    console.log(
      `tiny: ${tiny.circuit.constraints} constraints, 2^${tiny.keys.power}; setup ${((performance.now() - started) / 1000).toFixed(1)}` +
        ` s here (${tiny.keys.reused ? 'cached' : `ptau ${(tiny.keys.ptauMs / 1000).toFixed(1)} s, keys ${(tiny.keys.zkeyMs / 1000).toFixed(1)} s`})`
    )
  }, 1_200_000)

  afterAll(async () => {
    await releaseZkWorkers()
  })

  it('outputs exactly the integer reference, and the proofs verify', async () => {
    for (const x of inputs(tiny.model.quant, 3, 5)) {
      const r = await prover.prove(x)
      expect(Array.from(r.statement.output)).toEqual(Array.from(forwardInt(tiny.model.quant, x)))
      const s = await verifyZkProof(tiny.entry, r, { input: x, output: forwardInt(tiny.model.quant, x) })
      expect(Array.from(s.input ?? [])).toEqual(Array.from(x))
      // The 256-byte wire form carries the same proof.
      expect(encodeProof(r.proof).length).toBe(PROOF_BYTES)
      await verifyZkProof(tiny.entry, { ...r, proof: decodeProof(encodeProof(r.proof)) })
    }
  })

  describe('rejects', () => {
    let r: ProveResult
    let x: Int8Array
    beforeAll(async () => {
      x = inputs(tiny.model.quant, 1, 8)[0]
      r = await prover.prove(x)
    })
    const width = (): number => tiny.entry.shape.layers[tiny.entry.shape.layers.length - 1].outputs

    it('a proof about another input', async () => {
      const other = Int8Array.from(x, (v, i) => (i === 0 ? (v === 5 ? 6 : 5) : v))
      expect(await code(verifyZkProof(tiny.entry, r, { input: other }))).toBe('ZK_WRONG_INPUT')
      // …and the same proof with the input signal swapped for it.
      const signals = [...r.publicSignals]
      signals[width() + 1] = toField(other[0]).toString()
      expect(await code(verifyZkProof(tiny.entry, { proof: r.proof, publicSignals: signals }, { input: other }))).toBe('ZK_INVALID_PROOF')
    })

    it('a tampered output', async () => {
      const signals = [...r.publicSignals]
      signals[0] = toField(fromField(BigInt(signals[0])) + 1n).toString()
      expect(await code(verifyZkProof(tiny.entry, { proof: r.proof, publicSignals: signals }))).toBe('ZK_INVALID_PROOF')
      const claimed = Int32Array.from(r.statement.output, (v, i) => (i === 0 ? v + 1 : v))
      expect(await code(verifyZkProof(tiny.entry, r, { output: claimed }))).toBe('ZK_WRONG_OUTPUT')
    })

    it('other weights (the commitment does not match)', async () => {
      // Same shape, so the same circuit and keys: the proof is valid, but for other weights.
      const q = tiny.model.quant
      const tampered: QuantModel = {
        ...q,
        layers: q.layers.map((l, i) => (i === 0 ? { ...l, weights: Int8Array.from(l.weights, (w, j) => (j === 0 ? -w || 1 : w)) } : l))
      }
      const cheat = await (await setupZkModel({ ...tiny.model, quant: tampered })).prover()
      const forged = await cheat.prove(x)
      expect(await code(verifyZkProof(tiny.entry, forged, { input: x }))).toBe('ZK_WRONG_MODEL')
      // Claiming the honest commitment instead breaks the proof.
      const signals = [...forged.publicSignals]
      signals[width()] = tiny.entry.weightCommitment
      expect(await code(verifyZkProof(tiny.entry, { proof: forged.proof, publicSignals: signals }, { input: x }))).toBe('ZK_INVALID_PROOF')
    })

    it('public signals that no proof of this circuit can have', () => {
      expect(() => decodePublicSignals(tiny.entry, r.publicSignals.slice(1))).toThrow(/expected 21 signals/)
      const signals = [...r.publicSignals]
      signals[width() + 1] = '300'
      expect(() => decodePublicSignals(tiny.entry, signals)).toThrow(/input 0 = 300 is outside/)
    })
  })

  it('proof evidence convicts the forger that signed it, and never an honest prover', async () => {
    const x = inputs(tiny.model.quant, 1, 21)[0]
    const r = await prover.prove(x)
    const [honestKey, forgerKey] = await Promise.all([generateKeyPair('Ed25519'), generateKeyPair('Ed25519')])
    const [honest, forger] = [honestKey, forgerKey].map((k) => peerIdFromPrivateKey(k).toString())
    const models = (n: string) => (n === tiny.entry.name ? tiny.entry : undefined)
    const reply = async (by: typeof honestKey, output: Int32Array, peer = peerIdFromPrivateKey(by).toString()) =>
      await signZkReply(
        {
          peer,
          model: tiny.entry.name,
          input: new Uint8Array(x.buffer, x.byteOffset, x.byteLength),
          output: bytesOfInt32(output),
          proof: encodeProof(r.proof),
          publicSignals: r.publicSignals,
          ms: 1
        },
        async (b) => await by.sign(b)
      )
    // An honest prover's valid proof is nothing to slash, whoever reports it and whoever is named.
    const good = await reply(honestKey, r.statement.output)
    expect(await checkProofEvidence([good], honest, models)).toEqual({ valid: false, reason: 'the proof verifies: nothing to slash' })
    expect((await checkProofEvidence([good], forger, models)).valid).toBe(false)
    // A forger claims another output with the honest proof: convicted, but only as itself.
    const lie = await reply(
      forgerKey,
      Int32Array.from(r.statement.output, (v, i) => (i === 0 ? v + 1 : v))
    )
    expect(await checkProofEvidence([lie], forger, models)).toMatchObject({ valid: true })
    expect(await checkProofEvidence([lie], honest, models)).toMatchObject({ valid: false, reason: expect.stringMatching(/not the accused's/) })
    // Framing: a forged reply that names the honest peer but is signed by another key does not open.
    const framed = await reply(
      forgerKey,
      Int32Array.from(r.statement.output, (v) => v + 1),
      honest
    )
    expect(await checkProofEvidence([framed], honest, models)).toMatchObject({ valid: false, reason: expect.stringMatching(/signature does not verify/) })
    // Nor does the honest reply with a byte flipped (the signature no longer covers it).
    const bent = Uint8Array.from(good)
    bent[bent.length - 100] ^= 1
    expect((await checkProofEvidence([bent], honest, models)).valid).toBe(false)
  })

  it('commits to the input instead of publishing it', async () => {
    const committed = await setupZkModel(seededZkModel('tiny', { input: 'committed' }))
    const [x, other] = inputs(committed.model.quant, 2, 11)
    const r = await (await committed.prover()).prove(x)
    expect(r.publicSignals).toHaveLength(tiny.entry.shape.layers[1].outputs + 2)
    const s = await verifyZkProof(committed.entry, r, { input: x })
    expect(s.input).toBeUndefined()
    expect(Array.from(s.output)).toEqual(Array.from(forwardInt(committed.model.quant, x)))
    expect(await code(verifyZkProof(committed.entry, r, { input: other }))).toBe('ZK_WRONG_INPUT')
  }, 300_000)

  it('fits the 64 → 64 → 16 model in 2^15 constraints', async () => {
    const small = await compileCircuit(seededZkModel('small').shape)
    console.log(`small: ${small.constraints} constraints (${small.reused ? 'cached' : `compiled in ${(small.compileMs / 1000).toFixed(1)} s`})`)
    expect(requiredPower(small)).toBeLessThanOrEqual(15)
  }, 300_000)
})
