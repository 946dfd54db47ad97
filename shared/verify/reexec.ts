/**
 * The arbiter: a checker that holds the model re-runs the disputed hop itself (one prefill over
 * every row the hop was fed) and convicts only a receipt that disagrees with its own computation.
 * Colluding witnesses, staked or not, then frame no one: the accused's own signed receipt and the
 * recomputation are the whole proof, and a witness's receipt counts only as one more receipt to
 * compare. Which rule decides (shared/verify/evidence.ts):
 * - the evidence carries `inputs` and the checker has a Reexecute that runs this root and these
 *   layers: this module, and nothing else;
 * - no `inputs`, no Reexecute, or one that answers undefined (it cannot run that model or those
 *   layers): the witness rule, ≥2 witnesses with standing, as before; evidence already in the log
 *   stays re-checkable by it.
 * A Reexecute that fails (rows the model refuses, a runtime error) convicts no one: the evidence is refused.
 */
import { base64ToBytes, bytesToBase64 } from '../base64.js'
import { InputError } from '../errors.js'
import { bytesToHex } from '../hash.js'
import type { Evidence, EvidenceInputs, Verdict } from '../ledger/types.js'
import { bytesOf } from '../protocol/infer.js'
import { MAX_MESSAGE_BYTES, MAX_STEP_TOKENS } from '../protocol/limits.js'
import type { HopInput, HopOutput } from '../runner.js'
import { compareFingerprints, decodeFingerprint, fingerprint, tailFingerprint, type Fingerprint } from './fingerprint.js'
import { chainRows, EMPTY_CHAIN, openReceipt, type ReceiptBody } from './receipt.js'

/** Runs layers [a, b) of the model `root` over `inputs` from position 0; undefined when this checker cannot run them. */
export type Reexecute = (job: { root: string; layers: [number, number]; inputs: HopInput }) => Promise<HopOutput | undefined>

/** How long a re-execution is remembered (a client reporting both sides of one dispute pays one prefill), and how many. */
export const REEXEC_CACHE = { ttlMs: 60_000, entries: 8 }

/** The rows of `inputs`, checked and bounded, and the bytes the input chain hashes them as. */
/** A hop's input rows as evidence carries them (JSON-safe): token ids, or little-endian fp32 [seq × width] in base64. decodeInputs undoes it. */
export function encodeInputs(x: HopInput): EvidenceInputs {
  if ('tokens' in x) return { tokens: Array.from(x.tokens), seq: x.tokens.length }
  return { hidden: bytesToBase64(bytesOf(x.hidden)), seq: x.seq }
}

export function decodeInputs(x: EvidenceInputs | undefined, firstHop: boolean): { input: HopInput; bytes: Uint8Array; seq: number } {
  if (typeof x !== 'object' || x === null) throw new InputError('inputs must be an object { tokens | hidden, seq }')
  const { seq } = x
  if (!Number.isInteger(seq) || seq < 1 || seq > MAX_STEP_TOKENS) throw new InputError(`inputs must hold 1 to ${MAX_STEP_TOKENS} rows, not ${String(seq)}`)
  if ((x.tokens === undefined) === (x.hidden === undefined)) throw new InputError('inputs carry either tokens or hidden states')
  if (firstHop !== (x.tokens !== undefined))
    throw new InputError(firstHop ? 'a first hop is fed token ids, not hidden states' : 'a later hop is fed hidden states, not token ids')
  if (x.tokens !== undefined) {
    if (!Array.isArray(x.tokens) || x.tokens.length !== seq) throw new InputError(`inputs must carry ${seq} token ids`)
    if (!x.tokens.every((t) => Number.isInteger(t) && t >= 0 && t < 2 ** 31)) throw new InputError('token ids must be non-negative int32 integers')
    const tokens = Int32Array.from(x.tokens)
    return { input: { tokens }, bytes: new Uint8Array(tokens.buffer), seq }
  }
  if (typeof x.hidden !== 'string' || x.hidden.length > Math.ceil((MAX_MESSAGE_BYTES * 4) / 3) + 4)
    throw new InputError('hidden states must be base64 of at most a message')
  let bytes: Uint8Array
  try {
    bytes = base64ToBytes(x.hidden)
  } catch {
    throw new InputError('hidden states are not valid base64')
  }
  if (bytes.byteLength === 0 || bytes.byteLength % (4 * seq) !== 0)
    throw new InputError(`${bytes.byteLength} bytes of hidden states do not split into ${seq} fp32 rows`)
  const hidden = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)
  // A node refuses non-finite hidden states (node/serve.ts), so no honest receipt is about them.
  const bad = hidden.findIndex((v) => !Number.isFinite(v))
  if (bad >= 0) throw new InputError(`hidden states must be finite: value ${bad} is ${hidden[bad]}`)
  return { input: { hidden, seq }, bytes, seq }
}

/**
 * Judges `e` by re-execution; undefined when the witness rule must decide instead (no inputs, or the
 * Reexecute cannot run this model). Re-executions are cached by (root, layers, input chain).
 */
export function reexecJudge(reexecute: Reexecute, cache = REEXEC_CACHE): (e: Evidence) => Promise<Verdict | undefined> {
  const runs = new Map<string, { at: number; fp: Promise<{ fp: Fingerprint; width: number } | undefined> }>()
  const rerun = (root: string, layers: [number, number], chain: Uint8Array, input: HopInput): Promise<{ fp: Fingerprint; width: number } | undefined> => {
    const now = Date.now()
    for (const [k, v] of runs) if (now - v.at > cache.ttlMs) runs.delete(k)
    const key = `${root}:${layers[0]}-${layers[1]}:${bytesToHex(chain)}`
    const hit = runs.get(key)
    if (hit !== undefined) return hit.fp
    const fp = reexecute({ root, layers, inputs: input }).then((out) => {
      if (out === undefined) return undefined
      const seq = 'tokens' in input ? input.tokens.length : input.seq
      if (out.seq !== seq || out.data.length !== seq * out.width) throw new InputError(`the re-execution returned ${out.seq} rows for ${seq}`)
      return { fp: fingerprint(out.data, out.seq, out.width), width: out.width }
    })
    fp.catch(() => runs.delete(key))
    runs.set(key, { at: now, fp })
    if (runs.size > cache.entries) runs.delete(runs.keys().next().value!)
    return fp
  }

  return async (e) => {
    if (e.inputs === undefined) return undefined
    const no = (reason: string): Verdict => ({ valid: false, reason })
    if (e.receipts.length < 1) return no("needs the accused's receipt")
    let bodies: ReceiptBody[]
    try {
      bodies = await Promise.all(e.receipts.map(async (r) => await openReceipt(r)))
    } catch (err) {
      return no((err as Error).message)
    }
    if (bodies.some((b) => (b as { kind?: unknown }).kind !== undefined || !Array.isArray(b.layers) || !(b.input instanceof Uint8Array)))
      return no('these are not all hop receipts')
    const [accused] = bodies
    if (accused.peer !== e.accused) return no(`the first receipt is ${accused.peer}'s, not the accused's`)
    if (new Set(bodies.map((b) => b.peer)).size !== bodies.length) return no('the receipts are not from distinct peers')
    const layers: [number, number] = [accused.layers[0], accused.layers[1]]
    if (!Number.isInteger(layers[0]) || !Number.isInteger(layers[1]) || layers[0] < 0 || layers[1] <= layers[0]) return no('the receipt names no layer range')
    if (!bodies.every((b) => b.root === accused.root && b.layers[0] === layers[0] && b.layers[1] === layers[1]))
      return no('the receipts are about different computations (model or layers differ)')
    let rows: ReturnType<typeof decodeInputs>
    try {
      rows = decodeInputs(e.inputs, layers[0] === 0)
    } catch (err) {
      return no(`bad inputs: ${(err as Error).message}`)
    }
    const chain = chainRows(EMPTY_CHAIN, rows.bytes, rows.seq)
    const hex = bytesToHex(chain)
    const stranger = bodies.find((b) => bytesToHex(b.input) !== hex)
    if (stranger !== undefined) return no(`the inputs do not hash to the input chain of ${stranger.peer}'s receipt`)
    let signed: Fingerprint[]
    try {
      signed = bodies.map((b) => decodeFingerprint(b.output))
    } catch (err) {
      return no((err as Error).message)
    }
    const short = bodies.findIndex((b, i) => !(signed[i].positions >= 1) || b.start + signed[i].positions !== rows.seq)
    if (short >= 0) return no(`${bodies[short].peer}'s receipt does not end at the end of the inputs (row ${rows.seq})`)
    let ran: { fp: Fingerprint; width: number } | undefined
    try {
      ran = await rerun(accused.root, layers, chain, rows.input)
    } catch (err) {
      return { valid: false, unjudged: true, reason: `the relay could not re-execute layers [${layers.join(',')}): ${(err as Error).message}` }
    }
    if (ran === undefined) return undefined
    const full = ran.fp
    const verdicts = signed.map((f) => compareFingerprints(f, tailFingerprint(full, f.positions)))
    const matches = bodies.filter((_, i) => verdicts[i].verdict === 'match').map((b) => b.peer)
    const what = `re-ran layers [${layers.join(',')}) over ${rows.seq} rows`
    const liars = bodies.filter((_, i) => verdicts[i].verdict !== 'match').map((b) => b.peer)
    if (verdicts[0].verdict === 'match')
      return {
        valid: false,
        reason: `the relay ${what} and the accused's receipt agrees with it${liars.length > 0 ? `; ${liars.join(', ')} signed other outputs` : ''}`,
        matches
      }
    const c = verdicts[0]
    return {
      valid: true,
      reason:
        `the relay ${what} and the accused's output at positions [${accused.start},${rows.seq}) differs from it` +
        ` (overlap ${c.minOverlap.toFixed(2)}, rel. error ${c.maxRelErr.toPrecision(2)})`,
      matches
    }
  }
}
