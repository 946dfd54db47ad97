/**
 * The arbiter's rule (shared/verify/reexec.ts) in process, on stories260K cut at [2]: receipts
 * signed over real hops (the accused's computed step by step, as a node serves it), and the checker
 * re-running the hop through the memory model. Colluders who sign the same wrong output, staked or
 * not, frame no one; a real cheat is convicted without any witness; inputs that are not the hop's are refused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { Evidence, EvidenceInputs } from '../shared/ledger/types.js'
import type { HopInput, HopOutput } from '../shared/runner.js'
import { mismatchEvidence, receiptEvidenceChecker } from '../shared/verify/evidence.js'
import { compareFingerprints, encodeFingerprint, fingerprint } from '../shared/verify/fingerprint.js'
import { chainRows, EMPTY_CHAIN, signReceipt } from '../shared/verify/receipt.js'
import { encodeInputs } from '../shared/verify/reexec.js'
import { MAX_STEP_TOKENS } from '../shared/protocol/limits.js'
import { fillNormal, mulberry32 } from '../shared/rng.js'
import { buildStories, modelRunners, type ModelRunners } from './helpers/memory-model.js'
import { modelReexecute } from './helpers/memory-board.js'
import { shardReexecutor } from '../native-node/reexec.js'

interface Id {
  peer: string
  key: PrivateKey
}
const identity = async (): Promise<Id> => {
  const key = await generateKeyPair('Ed25519')
  return { key, peer: peerIdFromPrivateKey(key).toString() }
}

const PROMPT = [1, 45, 102, 7, 33, 250]
let model: ModelRunners
beforeAll(async () => {
  model = await modelRunners(await buildStories([2]))
}, 120_000)
afterAll(async () => {
  await model?.dispose()
})

const rowBytes = (x: HopInput): Uint8Array => ('tokens' in x ? new Uint8Array(Int32Array.from(x.tokens).buffer) : new Uint8Array(x.hidden.buffer.slice(0)))

/** An honest node's hop over `layers`: the history fed in two steps (all but the last row, then the last); its receipt is about the last step. */
async function honestHop(id: Id, layers: [number, number], rows: HopInput, session = 's'): Promise<{ receipt: Uint8Array; out: HopOutput }> {
  const { runners } = await model.forPeer(layers)
  const sessions = runners.map((r) => r.open())
  const seq = 'tokens' in rows ? rows.tokens.length : rows.seq
  const width = 'tokens' in rows ? 0 : rows.hidden.length / rows.seq
  const part = (a: number, b: number): HopInput =>
    'tokens' in rows ? { tokens: Array.from(rows.tokens).slice(a, b) } : { hidden: rows.hidden.slice(a * width, b * width), seq: b - a }
  let out: HopOutput | undefined
  for (const [a, b] of [
    [0, seq - 1],
    [seq - 1, seq]
  ]) {
    out = await sessions[0].forward(part(a, b))
    for (const s of sessions.slice(1)) out = await s.forward({ hidden: out.data, seq: out.seq })
  }
  for (const s of sessions) s.close()
  return { receipt: await sign(id, layers, seq - 1, rows, out!, session), out: out! }
}

async function sign(
  id: Id,
  layers: [number, number],
  start: number,
  rows: HopInput,
  out: HopOutput,
  session = 's',
  root = model.manifest.root
): Promise<Uint8Array> {
  const seq = 'tokens' in rows ? rows.tokens.length : rows.seq
  const body = {
    peer: id.peer,
    session,
    step: 1,
    root,
    layers,
    start,
    input: chainRows(EMPTY_CHAIN, rowBytes(rows), seq),
    output: encodeFingerprint(fingerprint(out.data, out.seq, out.width))
  }
  return await signReceipt(body, async (b) => await id.key.sign(b))
}

/** The same last step with another output: what a cheat (or a colluder) signs. */
const wrong = (out: HopOutput, seed: number): HopOutput => ({ ...out, data: fillNormal(new Float32Array(out.data.length), mulberry32(seed), 3) })

describe('the arbiter re-executes a disputed hop', () => {
  it('two colluders framing an honest node with the same wrong output are refused, the honest node named as matching', async () => {
    const [honest, c1, c2] = [await identity(), await identity(), await identity()]
    const rows = { tokens: PROMPT }
    const h = await honestHop(honest, [0, 2], rows)
    const bad = wrong(h.out, 5)
    const framed = mismatchEvidence(
      'redundant',
      { peer: honest.peer, receipt: h.receipt },
      [{ receipt: await sign(c1, [0, 2], PROMPT.length - 1, rows, bad) }, { receipt: await sign(c2, [0, 2], PROMPT.length - 1, rows, bad) }],
      {}
    )
    // The witness rule alone (both colluders with standing) would convict the honest node: the attack is real.
    expect((await receiptEvidenceChecker({ mayWitness: async () => true }).check(framed)).valid).toBe(true)
    const reexecute = modelReexecute(model)
    const checker = receiptEvidenceChecker({ mayWitness: async () => true, reexecute })
    const v = await checker.check({ ...framed, inputs: encodeInputs(rows) })
    expect(v.valid, v.reason).toBe(false)
    expect(v.matches).toEqual([honest.peer])
    expect(v.reason).toMatch(/agrees with it/)
    expect(v.reason).toContain(c1.peer)
    // The other side of the same dispute: a colluder accused, the honest node's receipt beside it, one prefill for both.
    const caught = mismatchEvidence('redundant', { peer: c1.peer, receipt: framed.receipts[1] }, [{ receipt: h.receipt }], {})
    const w = await checker.check({ ...caught, inputs: encodeInputs(rows) })
    expect(w.valid, w.reason).toBe(true)
    expect(w.matches).toEqual([honest.peer])
    expect(reexecute.runs).toBe(1)
  }, 60_000)

  it('convicts a cheat on a later hop (hidden-state inputs) without any witness', async () => {
    const [cheat, honest] = [await identity(), await identity()]
    const { runners } = await model.forPeer([0, 2])
    const s = runners[0].open()
    const hidden = await s.forward({ tokens: PROMPT })
    s.close()
    const rows = { hidden: hidden.data, seq: hidden.seq }
    const h = await honestHop(honest, [2, 5], rows)
    const lie = await sign(cheat, [2, 5], rows.seq - 1, rows, wrong(h.out, 9))
    const checker = receiptEvidenceChecker({ reexecute: modelReexecute(model) })
    const alone: Evidence = { kind: 'spot', accused: cheat.peer, receipts: [lie], detail: {}, inputs: encodeInputs(rows) }
    const v = await checker.check(alone)
    expect(v, v.reason).toMatchObject({ valid: true, matches: [] })
    expect(v.reason).toMatch(/re-ran layers \[2,5\) over 6 rows/)
    // And the honest node's own receipt, accused alone, is cleared.
    const cleared = await checker.check({ ...alone, accused: honest.peer, receipts: [h.receipt] })
    expect(cleared).toMatchObject({ valid: false, matches: [honest.peer] })
    // Without inputs the same lone receipt convicts no one: the witness rule needs two witnesses.
    expect((await checker.check({ ...alone, inputs: undefined })).reason).toMatch(/needs the accused's receipt and 2 witnesses/)
  }, 60_000)

  it('refuses inputs that are not the rows the receipts were computed from', async () => {
    const [cheat, honest] = [await identity(), await identity()]
    const rows = { tokens: PROMPT }
    const h = await honestHop(honest, [0, 2], rows)
    const lie = await sign(cheat, [0, 2], PROMPT.length - 1, rows, wrong(h.out, 3))
    const reexecute = modelReexecute(model)
    const checker = receiptEvidenceChecker({ reexecute })
    const e: Evidence = { kind: 'redundant', accused: cheat.peer, receipts: [lie, h.receipt], detail: {} }
    const other = [...PROMPT.slice(0, -1), 99]
    expect((await checker.check({ ...e, inputs: { tokens: other, seq: other.length } })).reason).toMatch(/do not hash to the input chain of/)
    // Hidden states to a first hop, too many rows, a seq that is not the tokens', junk.
    expect((await checker.check({ ...e, inputs: { hidden: 'AAAA', seq: 1 } })).reason).toMatch(/bad inputs: a first hop is fed token ids/)
    const huge = Array(MAX_STEP_TOKENS + 1).fill(1)
    expect((await checker.check({ ...e, inputs: { tokens: huge, seq: huge.length } })).reason).toMatch(/bad inputs: inputs must hold 1 to 4096 rows/)
    expect((await checker.check({ ...e, inputs: { tokens: PROMPT, seq: 3 } })).reason).toMatch(/bad inputs: inputs must carry 3 token ids/)
    expect((await checker.check({ ...e, inputs: { tokens: [1.5], seq: 1 } as EvidenceInputs })).reason).toMatch(/bad inputs: token ids must be/)
    // Inputs that stop short of the disputed step: the receipts do not end where they do.
    const short = PROMPT.slice(0, -1)
    const early = await sign(cheat, [0, 2], 0, { tokens: short }, wrong(h.out, 4))
    expect((await checker.check({ ...e, receipts: [early], inputs: { tokens: short, seq: short.length } })).reason).toMatch(
      /does not end at the end of the inputs/
    )
    expect(reexecute.runs).toBe(0) // nothing refused before re-executing cost a prefill
  }, 60_000)

  it('refuses hidden states of the wrong width or not finite, and receipts about different layers', async () => {
    const [cheat, other] = [await identity(), await identity()]
    const rows = { hidden: fillNormal(new Float32Array(3 * 32), mulberry32(1), 1), seq: 3 } // the model's width is 64
    const out: HopOutput = { data: new Float32Array(64), seq: 1, width: 64, kind: 'hidden' }
    const checker = receiptEvidenceChecker({ reexecute: modelReexecute(model) })
    const lie = await sign(cheat, [2, 5], 2, rows, out)
    const v = await checker.check({ kind: 'spot', accused: cheat.peer, receipts: [lie], detail: {}, inputs: encodeInputs(rows) })
    expect(v.valid).toBe(false)
    expect(v.reason).toMatch(/could not re-execute layers \[2,5\): hidden states hold 96 values; expected 3 × 64/)
    const nan = { hidden: new Float32Array(3 * 64).fill(Number.NaN), seq: 3 }
    const n = await checker.check({
      kind: 'spot',
      accused: cheat.peer,
      receipts: [await sign(cheat, [2, 5], 2, nan, out)],
      detail: {},
      inputs: encodeInputs(nan)
    })
    expect(n.reason).toMatch(/bad inputs: hidden states must be finite/)
    const mixed = await checker.check({
      kind: 'spot',
      accused: cheat.peer,
      receipts: [lie, await sign(other, [0, 2], 2, rows, out)],
      detail: {},
      inputs: encodeInputs(rows)
    })
    expect(mixed.reason).toMatch(/different computations/)
  }, 60_000)

  it('falls back to the witness rule for a model the arbiter cannot run', async () => {
    const [honest, c1, c2] = [await identity(), await identity(), await identity()]
    const rows = { tokens: PROMPT }
    const out: HopOutput = { data: fillNormal(new Float32Array(64), mulberry32(2), 1), seq: 1, width: 64, kind: 'hidden' }
    const root = 'cd'.repeat(32)
    const bad = wrong(out, 6)
    const e: Evidence = {
      kind: 'redundant',
      accused: honest.peer,
      receipts: [
        await sign(honest, [0, 2], 5, rows, out, 's', root),
        await sign(c1, [0, 2], 5, rows, bad, 's', root),
        await sign(c2, [0, 2], 5, rows, bad, 's', root)
      ],
      detail: {},
      inputs: encodeInputs(rows)
    }
    const reexecute = modelReexecute(model)
    const refuseAll = receiptEvidenceChecker({ reexecute, mayWitness: async (p) => `${p.slice(0, 8)} is not staked` })
    expect((await refuseAll.check(e)).reason).toMatch(/is not staked/)
    const v = await receiptEvidenceChecker({ reexecute, mayWitness: async () => true }).check(e)
    expect(v.valid).toBe(true)
    expect(v.matches).toBeUndefined()
    expect(reexecute.runs).toBe(0)
  }, 60_000)
})

describe("the relay's arbiter over shard files (native-node/reexec.ts)", () => {
  it('runs a range across shards as the nodes do, one at a time, refuses past its queue, and says what it cannot run', async () => {
    const arbiter = shardReexecutor([{ dir: model.dir, manifest: model.manifest }], { keep: 1, queue: 0, ort: { device: 'cpu', threads: 1, spin: false } })
    try {
      const root = model.manifest.root
      const job = { root, layers: [0, 5] as [number, number], inputs: { tokens: PROMPT } }
      // Two shards with keep = 1: the first is not disposed under the run.
      const [out, busy] = await Promise.allSettled([arbiter.reexecute(job), arbiter.reexecute(job)])
      expect(busy).toMatchObject({ status: 'rejected', reason: { code: 'BUSY' } })
      const got = (out as PromiseFulfilledResult<HopOutput | undefined>).value!
      const ref = (await modelReexecute(model)(job))!
      expect({ seq: got.seq, width: got.width, kind: got.kind }).toEqual({ seq: PROMPT.length, width: model.manifest.config.vocabSize, kind: 'logits' })
      expect(compareFingerprints(fingerprint(got.data, got.seq, got.width), fingerprint(ref.data, ref.seq, ref.width)).verdict).toBe('match')
      expect((await arbiter.reexecute(job))!.seq).toBe(PROMPT.length) // the queue frees once a run ends
      expect(await arbiter.reexecute({ ...job, root: 'cd'.repeat(32) })).toBeUndefined()
      expect(await arbiter.reexecute({ ...job, layers: [0, 1] })).toBeUndefined()
      expect(arbiter.serves(root, [2, 5])).toBe(true)
    } finally {
      await arbiter.dispose()
    }
  }, 60_000)
})
