/**
 * The asking side of /tessera/dispute/1.0.0, for the claim board: bisection over two parties'
 * per-layer commitments, the block output a challenger kept, and a referee's re-execution of one
 * block. Every answer is checked against what its sender signed before it is used.
 */
import type { Capability } from '../protocol/capability.js'
import { bytesOf, DISPUTE_PROTOCOL, f32 } from '../protocol/infer.js'
import { MAX_MESSAGE_BYTES } from '../protocol/limits.js'
import { seqOf, type HopInput } from '../runner.js'
import { compareFingerprints, decodeFingerprint, fingerprint, tailFingerprint, type Fingerprint } from '../verify/fingerprint.js'
import { layerLeaf, verifyMerkleProof } from '../verify/merkle.js'
import { openPart, type Opening, type PartBody } from '../verify/dispute.js'
import { chainRows, EMPTY_CHAIN, type ReceiptBody } from '../verify/receipt.js'
import { bytesToHex } from '../hash.js'
import { TesseraError } from '../errors.js'
import type { Dialer } from '../client/remote-hop.js'
import { request } from '../client/request.js'

/** A party failed to answer in time, or answered with something it did not commit to. */
export class DisputeTimeout extends TesseraError {
  constructor(
    readonly who: 'accused' | 'watcher',
    message: string
  ) {
    super('DISPUTE_TIMEOUT', message)
  }
}

/** One dispute request, one reply, within `ms`. */
async function ask(dialer: Dialer, peer: Capability, message: Record<string, unknown>, ms: number): Promise<Record<string, unknown>> {
  return await request(dialer, peer, DISPUTE_PROTOCOL, message, { ms, maxBytes: MAX_MESSAGE_BYTES })
}

export interface Party {
  who: 'accused' | 'watcher'
  cap: Capability | undefined
  body: ReceiptBody
}

export interface Located {
  /** The first block whose committed fingerprints differ; the hop's end = its head (every block agrees). */
  layer?: number
  reveals: number
  note: string
  /** The party that did not answer (or answered with what it had not committed to). */
  timedOut?: string
  /** Every opening revealed, proven against its party's receipt. */
  openings: Opening[]
}

/**
 * Bisection over the layers of hop [a, b): both parties reveal their committed fingerprint of
 * block mid (checked against the Merkle root each signed), compared over the disputed step's
 * `positions` rows; the first block where they differ is where one of them went wrong.
 * log2(b - a) rounds of two reveals.
 */
export async function locate(
  dialer: Dialer,
  o: { layers: [number, number]; accused: Party; watcher: Party; positions: number; revealMs: number }
): Promise<Located> {
  const { layers, accused, watcher, positions, revealMs } = o
  const [a, b] = layers
  const openings: Opening[] = []
  if (accused.body.trace === undefined || watcher.body.trace === undefined)
    return { reveals: 0, note: 'no per-layer commitment in the receipts (shards built without layer outputs)', openings }
  const leaf = async (p: Party, layer: number): Promise<Fingerprint> => {
    if (p.cap === undefined) throw new DisputeTimeout(p.who, 'it left the network')
    const opened = await reveal(dialer, p.cap, { body: p.body, layer, first: a, ms: revealMs }).catch((err: Error) => {
      throw new DisputeTimeout(p.who, err.message)
    })
    openings.push(opened)
    return tailFingerprint(decodeFingerprint(opened.fp), positions)
  }
  const differs = async (layer: number): Promise<boolean> => compareFingerprints(await leaf(accused, layer), await leaf(watcher, layer)).verdict === 'mismatch'
  try {
    if (!(await differs(b - 1)))
      return {
        layer: b,
        reveals: openings.length,
        note: "every block's commitment agrees: the head (what turns block outputs into the hop's output) is where they part",
        openings
      }
    let lo = a
    let hi = b - 1
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (await differs(mid)) hi = mid
      else lo = mid + 1
    }
    return { layer: lo, reveals: openings.length, note: `block ${lo} is the first whose committed fingerprints differ`, openings }
  } catch (err) {
    if (!(err instanceof DisputeTimeout)) throw err
    const peer = err.who === 'accused' ? accused.body.peer : watcher.body.peer
    return { reveals: openings.length, note: `the ${err.who} did not answer a reveal: ${err.message}`, timedOut: peer, openings }
  }
}

/** A party's committed fingerprint of `layer` of its receipt's step, checked against its trace root. */
export async function reveal(
  dialer: Dialer,
  peer: Capability,
  { body, layer, first, ms }: { body: ReceiptBody; layer: number; first: number; ms: number }
): Promise<Opening> {
  const m = await ask(dialer, peer, { t: 'reveal', session: body.session, step: body.step, layer }, ms)
  if (m.t !== 'leaf' || !(m.fp instanceof Uint8Array) || !Array.isArray(m.proof) || !m.proof.every((x) => x instanceof Uint8Array))
    throw new TesseraError('BAD_REPLY', 'malformed reveal')
  if (!verifyMerkleProof(layerLeaf(layer, m.fp), layer - first, m.proof as Uint8Array[], body.trace!))
    throw new TesseraError('BAD_REPLY', `its reveal of layer ${layer} is not what it committed to`)
  return { peer: body.peer, layer, fp: m.fp, proof: m.proof as Uint8Array[] }
}

/** The output of block `layer` a challenger kept from its replay (every row), checked against its commitment. */
export async function keptState(
  dialer: Dialer,
  peer: Capability,
  { body, layer, committed, ms }: { body: ReceiptBody; layer: number; committed: Fingerprint; ms: number }
): Promise<HopInput> {
  const m = await ask(dialer, peer, { t: 'state', session: body.session, step: body.step, layer }, ms)
  if (m.t !== 'state' || !(m.data instanceof Uint8Array) || !Number.isSafeInteger(m.seq) || !Number.isSafeInteger(m.width))
    throw new TesseraError('BAD_REPLY', 'malformed state')
  const hidden = f32(m.data)
  const seq = m.seq as number
  if (hidden.length !== seq * (m.width as number) || seq !== committed.positions)
    throw new TesseraError('BAD_REPLY', `its state holds ${hidden.length} values, not ${committed.positions} rows`)
  if (compareFingerprints(fingerprint(hidden, seq, m.width as number), committed).verdict !== 'match')
    throw new TesseraError('BAD_REPLY', `its state of block ${layer} is not what it committed to`)
  return { hidden, seq }
}

/**
 * A referee re-executes hop `hop` from its input `input` (rows from position 0, entering block
 * hop[0]) up to and through block `layer`, and signs its output of `layer`; the statement is
 * checked to be about exactly that.
 */
export async function execute(
  dialer: Dialer,
  referee: Capability,
  { root, hop, layer, input, ms }: { root: string; hop: [number, number]; layer: number; input: HopInput; ms: number }
): Promise<{ statement: Uint8Array; body: PartBody }> {
  const seq = seqOf(input)
  const from = hop[0]
  const bytes = 'tokens' in input ? new Uint8Array(Int32Array.from(input.tokens).buffer) : bytesOf(input.hidden)
  const m = await ask(dialer, referee, { t: 'execute', root, hop, layer, from, seq, ...('tokens' in input ? { tokens: bytes } : { hidden: bytes }) }, ms)
  if (m.t !== 'part' || !(m.statement instanceof Uint8Array)) throw new TesseraError('BAD_REPLY', 'no statement in the reply')
  const body = await openPart(m.statement)
  const chain = chainRows(EMPTY_CHAIN, bytes, seq)
  if (
    body.peer !== referee.peer ||
    body.root !== root ||
    body.hop[0] !== hop[0] ||
    body.hop[1] !== hop[1] ||
    body.layer !== layer ||
    (body.from ?? body.layer) !== from ||
    bytesToHex(body.input) !== bytesToHex(chain)
  )
    throw new TesseraError('BAD_REPLY', 'its statement is about another computation')
  if (decodeFingerprint(body.output).positions !== seq)
    throw new TesseraError('BAD_REPLY', `its statement covers ${decodeFingerprint(body.output).positions} rows, not ${seq}`)
  return { statement: m.statement, body }
}
