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
import { openReceipt } from './receipt.js'

/** Throws ProtocolError (BAD_RECEIPT, ZK_MALFORMED, ZK_WRONG_COMMITMENT, ZK_WRONG_OUTPUT, ZK_INVALID_PROOF); returns the commitment. */
export async function verifySamplingProof(
  entry: SamplingEntry,
  p: Omit<SamplingProof, 'index' | 'vocab'>,
  expect: { token?: number; peer?: string } = {}
): Promise<{ commitment: string }> {
  const body = await openReceipt(p.receipt)
  if (body.peer !== p.peer || (expect.peer !== undefined && body.peer !== expect.peer))
    throw new ProtocolError('BAD_RECEIPT', `the receipt is ${body.peer}'s, not ${expect.peer ?? p.peer}'s`)
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
export async function verifySampledTokens(entries: SamplingEntry[], tokens: number[], proofs: SamplingProof[] | undefined): Promise<{ ms: number }> {
  if (proofs === undefined || proofs.length !== tokens.length)
    throw new ProtocolError('ZK_MALFORMED', `${tokens.length} tokens came with ${proofs?.length ?? 'no'} sampling proofs`)
  const t = performance.now()
  for (let i = 0; i < tokens.length; i++) {
    const p = proofs[i]
    if (p.index !== i) throw new ProtocolError('ZK_MALFORMED', `sampling proof ${i} is for token ${p.index}`)
    const entry = entries.find((e) => e.vocab === p.vocab)
    if (entry === undefined) throw new ProtocolError('ZK_WRONG_MODEL', `no published sampling circuit for a vocabulary of ${p.vocab}`)
    await verifySamplingProof(entry, p, { token: tokens[i] })
  }
  return { ms: performance.now() - t }
}
