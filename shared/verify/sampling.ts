/**
 * Checking a sampling proof (zk/argmax.ts) as a requester: the last hop's receipt is signed by
 * the peer it names and carries a logits commitment; the proof's public signals are that
 * commitment and the token; the Groth16 proof verifies against the published key. Then the token
 * is the greedy choice over the logits that peer signed: nothing more (the layers are not proved).
 */
import { groth16 } from 'snarkjs'
import { ProtocolError } from '../errors.js'
import { decodeSamplingSignals, type SamplingEntry, type SamplingProof } from '../zk/argmax.js'
import { decodeProof } from '../zk/proof.js'
import { bytesToHex } from '../hash.js'
import { decodeFingerprint } from './fingerprint.js'
import { chainRows, EMPTY_CHAIN, openReceipt } from './receipt.js'

/**
 * What the requester knows from its own session, not from whoever hands it the proof (a relay):
 * the route's last hop, the model it asked for, and what it fed that hop. Every field given must
 * match the signed receipt; a relay that forwards proofs cannot then pass off a receipt signed by
 * a key of its own, for another model, other layers, another position or another context.
 */
export interface SamplingExpect {
  /** The returned token. */
  token?: number
  /** The peer the route named as the last hop (the trace's, as the client saw it). */
  peer?: string
  /** Peers the route named: the receipt must be signed by one of them. */
  peers?: readonly string[]
  /** The requested model's manifest root. */
  root?: string
  /** The model's nLayers: the receipt's layers must end there (it is the last hop). */
  nLayers?: number
  /** The trace's last-hop layer range. */
  layers?: readonly [number, number]
  /** Position of the sampled token's row: the receipt's start + rows − 1. */
  position?: number
  /** The input chain the client fed the last hop up to that row. */
  input?: Uint8Array
  /**
   * The token ids before the sampled one (prompt, then earlier tokens): fixes the position
   * (length − 1) and, when the receipt's hop starts at layer 0 and so was fed token ids, the chain.
   */
  context?: readonly number[]
}

/** Throws ProtocolError (BAD_RECEIPT, ZK_MALFORMED, ZK_WRONG_COMMITMENT, ZK_WRONG_OUTPUT, ZK_INVALID_PROOF); returns the commitment. */
export async function verifySamplingProof(
  entry: SamplingEntry,
  p: Omit<SamplingProof, 'index' | 'vocab'>,
  expect: SamplingExpect = {}
): Promise<{ commitment: string }> {
  const body = await openReceipt(p.receipt)
  const bad = (why: string): never => {
    throw new ProtocolError('BAD_RECEIPT', `sampling proof for token ${p.token} rejected: ${why}`)
  }
  if (body.peer !== p.peer || (expect.peer !== undefined && body.peer !== expect.peer)) bad(`the receipt is ${body.peer}'s, not ${expect.peer ?? p.peer}'s`)
  if (expect.peers !== undefined && !expect.peers.includes(body.peer)) bad(`the receipt is signed by ${body.peer}, a peer the route did not name`)
  if (expect.root !== undefined && body.root !== expect.root)
    bad(`the receipt is for model root ${String(body.root).slice(0, 12)}, not the requested ${expect.root.slice(0, 12)}`)
  const layers = Array.isArray(body.layers) ? body.layers : []
  if (expect.nLayers !== undefined && layers[1] !== expect.nLayers)
    bad(`the receipt's layers ${JSON.stringify(body.layers)} do not end at the model's last layer (${expect.nLayers})`)
  if (expect.layers !== undefined && (layers[0] !== expect.layers[0] || layers[1] !== expect.layers[1]))
    bad(`the receipt's layers ${JSON.stringify(body.layers)} are not the last hop's ${JSON.stringify(expect.layers)}`)
  const position = expect.position ?? (expect.context !== undefined ? expect.context.length - 1 : undefined)
  if (position !== undefined) {
    let rows = 0
    try {
      rows = decodeFingerprint(body.output).positions
    } catch {
      bad('the receipt has no readable output fingerprint')
    }
    const at = body.start + rows - 1
    if (!Number.isInteger(body.start) || at !== position) bad(`the receipt is for position ${at}, not the sampled token's ${position}`)
  }
  if (expect.context !== undefined) {
    const n = expect.context.length
    const ids = Int32Array.from(expect.context)
    const fed = n === 0 ? EMPTY_CHAIN : chainRows(EMPTY_CHAIN, new Uint8Array(ids.buffer), n)
    if (layers[0] === 0 && (!(body.input instanceof Uint8Array) || bytesToHex(body.input) !== bytesToHex(fed)))
      bad('the receipt is for another context (input chain) than the prompt and tokens before this one')
  }
  if (expect.input !== undefined && (!(body.input instanceof Uint8Array) || bytesToHex(body.input) !== bytesToHex(expect.input)))
    bad('the receipt is for another context (input chain) than the one fed to the last hop')
  if (typeof body.logits !== 'string')
    throw new ProtocolError('ZK_WRONG_COMMITMENT', 'the receipt commits to no logits: the hop was not asked to, or is not the last')
  const s = decodeSamplingSignals(p.publicSignals, entry.vocab)
  if (s.commitment.toString() !== body.logits)
    throw new ProtocolError('ZK_WRONG_COMMITMENT', `the proof is about other logits than the ones ${body.peer.slice(-8)} signed`)
  if (s.token !== p.token || (expect.token !== undefined && s.token !== expect.token))
    throw new ProtocolError('ZK_WRONG_OUTPUT', `the proof is for token ${s.token}, not ${expect.token ?? p.token}`)
  let valid = false
  try {
    valid = await groth16.verify(entry.verificationKey, p.publicSignals, decodeProof(p.proof))
  } catch (err) {
    if (err instanceof ProtocolError) throw err
  }
  if (!valid)
    throw new ProtocolError('ZK_INVALID_PROOF', `the sampling proof for token ${p.token} does not verify against the key for a vocabulary of ${entry.vocab}`)
  return { commitment: body.logits }
}

/**
 * A whole answer: one proof per token, in order, each verified against the entry for its
 * vocabulary. Returns the verification time; throws on the first proof that does not hold.
 */
export async function verifySampledTokens(
  entries: SamplingEntry[],
  tokens: number[],
  proofs: SamplingProof[] | undefined,
  /** What the requester knows about token i (route, root, layers, position, context); merged over the token check. */
  known: (i: number) => Omit<SamplingExpect, 'token'> = () => ({})
): Promise<{ ms: number }> {
  if (proofs === undefined || proofs.length !== tokens.length)
    throw new ProtocolError('ZK_MALFORMED', `${tokens.length} tokens came with ${proofs?.length ?? 'no'} sampling proofs`)
  const t = performance.now()
  for (let i = 0; i < tokens.length; i++) {
    const p = proofs[i]
    if (p.index !== i) throw new ProtocolError('ZK_MALFORMED', `sampling proof ${i} is for token ${p.index}`)
    const entry = entries.find((e) => e.vocab === p.vocab)
    if (entry === undefined) throw new ProtocolError('ZK_WRONG_MODEL', `no published sampling circuit for a vocabulary of ${p.vocab}`)
    await verifySamplingProof(entry, p, { ...known(i), token: tokens[i] })
  }
  return { ms: performance.now() - t }
}
