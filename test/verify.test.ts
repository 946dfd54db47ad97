/**
 * Receipts, fingerprints, evidence and the vote: forged, misdirected and copied receipts are
 * rejected; fingerprints of honest runs on different runtimes match, and those of a changed model
 * do not; evidence convicts only with two agreeing witnesses for the very same input rows.
 */
import { describe, expect, it } from 'vitest'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { decode, encode } from 'cborg'
import { buildModel } from '../host/model-store.js'
import { loadModel } from '../native-node/store.js'
import { loadWasmRunners } from './helpers/wasm.js'
import { preset } from '../shared/model/config.js'
import { randomWeights } from '../shared/model/random.js'
import { compareFingerprints, decodeFingerprint, encodeFingerprint, fingerprint, THRESHOLDS, type Fingerprint } from '../shared/verify/fingerprint.js'
import { receiptEvidenceChecker } from '../shared/verify/evidence.js'
import { tally } from '../shared/verify/vote.js'
import { layerLeaf, merkleProof, merkleRoot, verifyMerkleProof } from '../shared/verify/merkle.js'
import type { Evidence } from '../shared/ledger/types.js'
import { chainRows, EMPTY_CHAIN, signReceipt, verifyReceipt, type Expected } from '../shared/verify/receipt.js'
import { disputeEvidence, signPart, type Opening } from '../shared/verify/dispute.js'
import { bytesOf } from '../shared/protocol/infer.js'
import type { ShardRunner, HopInput, HopOutput } from '../shared/runner.js'
import { maxAbsDiff, stories } from './helpers/reference.js'
import { tempDir } from './helpers/paths.js'
import { fillNormal, mulberry32 } from '../shared/rng.js'

describe('receipts', () => {
  const output = { data: fillNormal(new Float32Array(3 * 64), mulberry32(1), 1), seq: 3, width: 64 }
  const input = new Uint8Array(new Int32Array([1, 2, 3]).buffer)

  async function signed() {
    const key = await generateKeyPair('Ed25519')
    const peer = peerIdFromPrivateKey(key).toString()
    const body = {
      peer,
      session: 's1',
      step: 4,
      root: 'ab'.repeat(32),
      layers: [0, 2] as [number, number],
      start: 0,
      input: chainRows(EMPTY_CHAIN, input, 3),
      output: encodeFingerprint(fingerprint(output.data, output.seq, output.width))
    }
    const expected: Expected = { peer, session: 's1', step: 4, root: body.root, layers: [0, 2], start: 0, input: chainRows(EMPTY_CHAIN, input, 3), output }
    return { key, peer, body, expected, bytes: await signReceipt(body, async (b) => await key.sign(b)) }
  }

  it('verifies an honest receipt', async () => {
    const r = await signed()
    expect((await verifyReceipt(r.bytes, r.expected)).step).toBe(4)
  })

  it('rejects a missing receipt, a forged signature, another input, another output, another step', async () => {
    const r = await signed()
    await expect(verifyReceipt(undefined, r.expected)).rejects.toThrow(/carries no receipt/)
    const forged = decode(r.bytes) as { body: Uint8Array; signature: Uint8Array }
    forged.signature[3] ^= 1
    await expect(verifyReceipt(encode(forged), r.expected)).rejects.toThrow(/signature does not verify/)
    await expect(verifyReceipt(r.bytes, { ...r.expected, input: chainRows(EMPTY_CHAIN, new Uint8Array(4), 1) })).rejects.toThrow(/another input/)
    await expect(verifyReceipt(r.bytes, { ...r.expected, start: 1 })).rejects.toThrow(/another input/)
    const other = { ...output, data: output.data.map((x, i) => (i === 5 ? x + 1 : x)) }
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

  it('chains input rows so that any chunking of the same rows gives the same hash', () => {
    const rows = new Uint8Array(new Int32Array([5, 6, 7, 8]).buffer)
    const whole = chainRows(EMPTY_CHAIN, rows, 4)
    const stepwise = chainRows(chainRows(chainRows(EMPTY_CHAIN, rows.subarray(0, 4), 1), rows.subarray(4, 12), 2), rows.subarray(12), 1)
    expect(stepwise).toEqual(whole)
    expect(chainRows(EMPTY_CHAIN, rows.subarray(4), 3)).not.toEqual(chainRows(chainRows(EMPTY_CHAIN, rows.subarray(0, 4), 1), rows.subarray(4), 3))
    expect(() => chainRows(EMPTY_CHAIN, rows, 3)).toThrow(/do not split/)
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

  /** Every hop's outputs for `prompts` on a chain of runners: a prefill, then decode steps feeding `decode` ids one by one. */
  async function hopOutputs(runners: ShardRunner[], prompts: number[][], decode: number[][]): Promise<HopOutput[]> {
    const outs: HopOutput[] = []
    for (const [i, prompt] of prompts.entries()) {
      const sessions = runners.map((r) => r.open())
      for (const tokens of [prompt, ...decode[i].map((t) => [t])]) {
        let out = await sessions[0].forward({ tokens })
        outs.push(out)
        for (const s of sessions.slice(1)) {
          out = await s.forward({ hidden: out.data, seq: out.seq })
          outs.push(out)
        }
      }
      for (const s of sessions) s.close()
    }
    return outs
  }

  it('re-execute one block (or a head) alone exactly as the whole shard computes it, on onnxruntime-node and -web', async () => {
    const dir = tempDir('part')
    await buildModel(await stories(), dir, { source: 'stories260K.bin', cuts: [2, 4] })
    const { manifest, runners } = await loadModel(dir, { device: 'cpu' })
    const wasm = await loadWasmRunners(dir, manifest)
    const tokens = [1, 40, 90, 7, 300, 12, 5]
    for (const chain of [runners, wasm]) {
      let input: HopInput = { tokens }
      for (const r of chain) {
        const [a, b] = r.shard.layers
        const s = r.open()
        const out = await s.forward(input)
        s.close()
        // Blocks a..b-1 from what entered each, then the head from the last block's output.
        for (let l = a; l <= b; l++) {
          const part = await r.runPart!(l, l === a ? input : { hidden: out.layers![l - a - 1], seq: tokens.length })
          expect(maxAbsDiff(part.data, l < b ? out.layers![l - a] : out.data), `${r.device} block ${l} of [${a},${b})`).toBe(0)
        }
        input = { hidden: out.data, seq: out.seq }
      }
      // A block takes the residual stream, never token ids; and only its own shard's layers.
      await expect(chain[1].runPart!(3, { tokens })).rejects.toThrow(/residual stream, not token ids/)
      await expect(chain[1].runPart!(0, { hidden: new Float32Array(64), seq: 1 })).rejects.toThrow(/not in shard \[2,4\)/)
      for (const r of chain) await r.dispose()
    }
  })

  it('match across onnxruntime-node and onnxruntime-web WASM over 1000+ hops (zero false flags), and catch a changed model', async () => {
    const dir = tempDir('fp')
    await buildModel(await stories(), dir, { source: 'stories260K.bin', cuts: [2, 4] })
    const { manifest, runners } = await loadModel(dir, { device: 'cpu' })
    const wasm = await loadWasmRunners(dir, manifest)
    const rand = mulberry32(7)
    const ids = (n: number): number[] => Array.from({ length: n }, () => 1 + Math.floor(rand() * 500))
    // 20 varied prompts, each with 16 decode steps, through 3 shards: 1020 hop outputs.
    const prompts = Array.from({ length: 20 }, (_, i) => ids(1 + ((i * 7) % 60)))
    const decode = prompts.map(() => ids(16))
    const a = await hopOutputs(runners, prompts, decode)
    const b = await hopOutputs(wasm, prompts, decode)
    expect(a.length).toBeGreaterThanOrEqual(1000)
    let worstOverlap = 1
    let worstErr = 0
    for (let i = 0; i < a.length; i++) {
      const c = compareFingerprints(fingerprint(a[i].data, a[i].seq, a[i].width), fingerprint(b[i].data, b[i].seq, b[i].width))
      worstOverlap = Math.min(worstOverlap, c.minOverlap)
      worstErr = Math.max(worstErr, c.maxRelErr)
      expect(c.verdict, `hop output ${i}`).toBe('match')
    }
    console.log(
      `honest ort-node vs ort-web WASM over ${a.length} hop outputs: worst overlap ${worstOverlap.toFixed(3)} (threshold ${THRESHOLDS.minOverlap})` +
        `, worst rel. error ${worstErr.toExponential(2)} (threshold ${THRESHOLDS.maxRelErr})`
    )

    // The same shards built from other weights (a peer running the wrong model) never match.
    const other = tempDir('fp-other')
    await buildModel(randomWeights({ ...preset('tiny'), ...manifest.config }, 99), other, { source: 'other', cuts: [2, 4] })
    const wrong = await hopOutputs((await loadModel(other, { device: 'cpu' })).runners, prompts, decode)
    for (let i = 0; i < a.length; i++) {
      expect(compareFingerprints(fingerprint(a[i].data, a[i].seq, a[i].width), fingerprint(wrong[i].data, wrong[i].seq, wrong[i].width)).verdict).toBe(
        'mismatch'
      )
    }
  })
})

describe('evidence (what a ledger checks before it slashes)', () => {
  const root = 'cd'.repeat(32)
  const width = 64
  const history = new Uint8Array(new Int32Array([1, 2, 3]).buffer)
  const step = new Uint8Array(new Int32Array([4, 5]).buffer)
  const chain = chainRows(chainRows(EMPTY_CHAIN, history, 3), step, 2)
  const honest = fillNormal(new Float32Array(2 * width), mulberry32(11), 1)
  const wrong = fillNormal(new Float32Array(2 * width), mulberry32(12), 1)

  /** A receipt for rows [start, start + rows) of the session's input, with `out` as those rows' output. */
  async function receipt(out: Float32Array, o: { start?: number; input?: Uint8Array; key?: Awaited<ReturnType<typeof generateKeyPair>> } = {}) {
    const key = o.key ?? (await generateKeyPair('Ed25519'))
    const peer = peerIdFromPrivateKey(key).toString()
    const rows = out.length / width
    const bytes = await signReceipt(
      {
        peer,
        session: 's',
        step: 0,
        root,
        layers: [0, 2],
        start: o.start ?? 3,
        input: o.input ?? chain,
        output: encodeFingerprint(fingerprint(out, rows, width))
      },
      async (b) => await key.sign(b)
    )
    return { peer, bytes, key }
  }
  const evidence = (accused: { peer: string; bytes: Uint8Array }, ...witnesses: Array<{ bytes: Uint8Array }>): Evidence => ({
    kind: 'redundant',
    accused: accused.peer,
    receipts: [accused.bytes, ...witnesses.map((w) => w.bytes)],
    detail: {}
  })
  const check = receiptEvidenceChecker()

  it("accepts two agreeing witnesses against the accused, a referee's whole-history replay included", async () => {
    const cheat = await receipt(wrong)
    const a = await receipt(honest.map((x) => x + 1e-5)) // another backend's rounding
    // The referee replayed all 5 rows in one prefill: its receipt covers positions [0, 5).
    const replay = new Float32Array(5 * width)
    replay.set(fillNormal(new Float32Array(3 * width), mulberry32(13), 1))
    replay.set(honest, 3 * width)
    const referee = await receipt(replay, { start: 0 })
    const v = await check.check(evidence(cheat, a, referee))
    expect(v.valid, v.reason).toBe(true)
    expect(v.reason).toMatch(/2 peers agree on layers \[0,2\) at positions \[3,5\)/)
  })

  it('refuses thin, inconsistent, forged or mixed-up evidence', async () => {
    const cheat = await receipt(wrong)
    const a = await receipt(honest)
    const b = await receipt(honest)
    const no = async (e: Evidence, why: RegExp): Promise<void> => {
      const v = await check.check(e)
      expect(v.valid).toBe(false)
      expect(v.reason).toMatch(why)
    }
    await no(evidence(cheat, a), /needs the accused's receipt and 2 witnesses/)
    await no(evidence(cheat, a, await receipt(wrong.map((x) => -x))), /witnesses disagree/)
    await no(evidence(a, b, await receipt(honest)), /the accused agrees with/)
    await no(evidence(cheat, a, await receipt(honest, { input: chainRows(EMPTY_CHAIN, step, 2) })), /different computations/)
    await no(evidence(cheat, a, await receipt(honest, { start: 2 })), /do not end at the same position/)
    await no(evidence(cheat, a, await receipt(honest, { key: a.key })), /not from distinct peers/)
    await no({ ...evidence(cheat, a, b), accused: a.peer }, /not the accused's/)
    const forged = decode(b.bytes) as { body: Uint8Array; signature: Uint8Array }
    forged.signature[0] ^= 1
    await no(evidence(cheat, a, { bytes: encode(forged) }), /signature does not verify/)
    await no({ ...evidence(cheat, a, b), kind: 'signature' }, /not checked from receipts/)
    // A forged ZK proof is judged from the prover's one signed reply (test/zk-network.test.ts), never from hop receipts.
    await no({ ...evidence(cheat, a, b), kind: 'proof' }, /proof evidence is the accused's one signed reply/)
    const strict = receiptEvidenceChecker({ mayWitness: async (p) => p !== b.peer })
    expect((await strict.check(evidence(cheat, a, b))).reason).toMatch(/may not witness \(blacklisted\)/)
  })
})

describe('dispute evidence (one block re-executed by a referee)', () => {
  // Hop [0, 3) over 5 rows: the accused served rows [3, 5) as one step and went wrong from block 1
  // on; the watcher replayed rows [0, 5); the referee re-executed blocks 0 and 1 from the hop input.
  const root = 'ef'.repeat(32)
  const width = 64
  const hop: [number, number] = [0, 3]
  const rows = (x: Float32Array, from: number, to: number): Float32Array => x.subarray(from * width, to * width)
  const honest = [21, 22, 23].map((seed) => fillNormal(new Float32Array(5 * width), mulberry32(seed), 1))
  const wrong = [24, 25].map((seed) => fillNormal(new Float32Array(2 * width), mulberry32(seed), 1))
  const input = chainRows(EMPTY_CHAIN, new Uint8Array(new Int32Array([1, 2, 3, 4, 5]).buffer), 5)
  const fp = (x: Float32Array): Uint8Array => encodeFingerprint(fingerprint(x, x.length / width, width))

  async function party(perLayer: Float32Array[], start: number) {
    const key = await generateKeyPair('Ed25519')
    const peer = peerIdFromPrivateKey(key).toString()
    const fps = perLayer.map(fp)
    const leaves = fps.map((f, i) => layerLeaf(i, f))
    const receipt = await signReceipt(
      { peer, session: 's', step: 0, root, layers: hop, start, input, output: fps[2], trace: merkleRoot(leaves) },
      async (b) => await key.sign(b)
    )
    const opening = (layer: number): Opening => ({ peer, layer, fp: fps[layer], proof: merkleProof(leaves, layer) })
    return { peer, receipt, opening }
  }
  async function referee(o: { input?: Float32Array; output?: Float32Array; layer?: number; alone?: boolean } = {}) {
    const key = await generateKeyPair('Ed25519')
    const peer = peerIdFromPrivateKey(key).toString()
    const state = o.input ?? honest[0]
    return {
      peer,
      statement: await signPart(
        {
          peer,
          root,
          hop,
          layer: o.layer ?? 1,
          // From the hop's own input (the receipts' chain), every block through `layer`; `alone`: block `layer` on a state handed over.
          ...(o.alone === true ? { input: chainRows(EMPTY_CHAIN, bytesOf(state), 5) } : { from: hop[0], input }),
          inputFp: fp(state),
          output: fp(o.output ?? honest[1])
        },
        async (b) => await key.sign(b)
      )
    }
  }
  const setup = async () => ({
    accused: await party([rows(honest[0], 3, 5), ...wrong], 3),
    watcher: await party(honest, 0),
    ref: await referee()
  })
  const evidence = (
    loser: { peer: string; receipt: Uint8Array },
    winner: { receipt: Uint8Array },
    part: Uint8Array,
    openings: Opening[],
    layer = 1
  ): Evidence => disputeEvidence(loser, winner, part, { layer, openings, detail: {} })
  const check = receiptEvidenceChecker()

  it('convicts the party the referee disagrees with, given both agreed on what entered the block', async () => {
    const { accused, watcher, ref } = await setup()
    const openings = [accused.opening(0), accused.opening(1), watcher.opening(0), watcher.opening(1)]
    const v = await check.check(evidence(accused, watcher, ref.statement, openings))
    expect(v.valid, v.reason).toBe(true)
    expect(v.reason).toMatch(/agree on block 1 of \[0,3\) at rows \[3,5\) and the accused does not/)
    // The same evidence turned around (the watcher accused) convicts no one.
    expect((await check.check(evidence(watcher, accused, ref.statement, openings))).reason).toMatch(/the referee does not agree with/)
  })

  it('refuses openings that do not prove, a referee fed something else, and part statements passed off as receipts', async () => {
    const { accused, watcher, ref } = await setup()
    const openings = [accused.opening(0), accused.opening(1), watcher.opening(0), watcher.opening(1)]
    const no = async (e: Evidence, why: RegExp): Promise<void> => {
      const v = await check.check(e)
      expect(v.valid, v.reason).toBe(false)
      expect(v.reason).toMatch(why)
    }
    const forged = { ...accused.opening(1), fp: fp(rows(honest[1], 3, 5)) } // claims it had committed to the honest value
    await no(
      evidence(accused, watcher, ref.statement, [accused.opening(0), forged, watcher.opening(0), watcher.opening(1)]),
      /block 1 is missing or does not prove/
    )
    await no(evidence(accused, watcher, ref.statement, openings.slice(1)), /block 0 is missing or does not prove/)
    const elsewhere = await referee({ input: fillNormal(new Float32Array(5 * width), mulberry32(30), 1) })
    await no(evidence(accused, watcher, elsewhere.statement, openings), /the referee's input is not the block 0 output both parties committed to/)
    await no(evidence(accused, watcher, (await referee({ layer: 2 })).statement, openings), /re-executed block 2, the dispute is about 1/)
    // Block 1 alone on a state a party handed over (its top-k fingerprint right, the rest unchecked): refused.
    await no(evidence(accused, watcher, (await referee({ alone: true })).statement, openings), /did not re-execute from the hop's input/)
    await no(evidence(accused, watcher, ref.statement, openings, 2), /block 2 is missing or does not prove|re-executed block 1/)
    await no(
      { ...evidence(accused, watcher, ref.statement, openings), receipts: [accused.receipt, watcher.receipt, ref.statement] },
      /two hop receipts, a part statement and the openings/
    )
    // A referee's statement is never a hop receipt, in any kind of evidence.
    await no({ kind: 'redundant', accused: accused.peer, receipts: [accused.receipt, watcher.receipt, ref.statement], detail: {} }, /not all hop receipts/)
    const strict = receiptEvidenceChecker({ mayWitness: async (p) => p !== ref.peer })
    expect((await strict.check(evidence(accused, watcher, ref.statement, openings))).reason).toMatch(/may not witness/)
  })
})

describe('the vote', () => {
  const fp = (seed: number): Fingerprint => fingerprint(fillNormal(new Float32Array(64), mulberry32(seed), 1), 1, 64)
  it('groups matching outputs; the heavier group wins; a tie decides nothing', () => {
    const t = tally([
      { peer: 'a', fp: fp(1), weight: 0.5 },
      { peer: 'b', fp: fp(2), weight: 0.5 },
      { peer: 'c', fp: fp(1), weight: 0.5 }
    ])
    expect(t.winner.map((c) => c.peer)).toEqual(['a', 'c'])
    expect(t.losers.map((c) => c.peer)).toEqual(['b'])
    expect(
      tally([
        { peer: 'a', fp: fp(1), weight: 0.5 },
        { peer: 'b', fp: fp(1), weight: 0.9 }
      ]).unanimous
    ).toBe(true)
    expect(
      tally([
        { peer: 'a', fp: fp(1), weight: 0.5 },
        { peer: 'b', fp: fp(2), weight: 0.5 }
      ]).winner
    ).toEqual([])
    // Reputation weighs: one trusted peer outweighs one newcomer.
    expect(
      tally([
        { peer: 'a', fp: fp(1), weight: 0.9 },
        { peer: 'b', fp: fp(2), weight: 0.2 }
      ]).winner.map((c) => c.peer)
    ).toEqual(['a'])
  })
})

describe('per-layer commitments (Merkle)', () => {
  const leaves = Array.from({ length: 5 }, (_, i) => layerLeaf(10 + i, fingerprint(fillNormal(new Float32Array(64), mulberry32(i), 1), 1, 64)))
  it('proves each layer against the root, and nothing else', () => {
    const root = merkleRoot(leaves)
    for (let i = 0; i < leaves.length; i++) expect(verifyMerkleProof(leaves[i], i, merkleProof(leaves, i), root)).toBe(true)
    expect(verifyMerkleProof(leaves[1], 2, merkleProof(leaves, 1), root)).toBe(false) // right leaf, wrong place
    const other = layerLeaf(11, fingerprint(fillNormal(new Float32Array(64), mulberry32(99), 1), 1, 64))
    expect(verifyMerkleProof(other, 1, merkleProof(leaves, 1), root)).toBe(false) // another fingerprint for layer 11
    expect(merkleRoot([leaves[0]])).toEqual(leaves[0])
    expect(merkleRoot(leaves)).not.toEqual(merkleRoot(leaves.slice(0, 4)))
  })
})
