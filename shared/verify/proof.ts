/**
 * Evidence of a forged proof (kind 'proof'): the accused's signed reply to a ZK request
 * (protocol/zk.ts) whose Groth16 proof does not verify against the model's published entry, or
 * proves another input or output than the reply claims. The ledger redoes the verification.
 */
import { TesseraError } from '../errors.js'
import { int32Of, openZkReply } from '../protocol/zk.js'
import { decodeProof } from '../zk/proof.js'
import type { ZkModelEntry } from '../zk/types.js'
import { verifyZkProof } from '../zk/verify.js'

export async function checkProofEvidence(
  receipts: Uint8Array[],
  accused: string,
  models: (name: string) => ZkModelEntry | undefined
): Promise<{ valid: boolean; reason: string }> {
  if (receipts.length !== 1) return { valid: false, reason: "proof evidence is the accused's one signed reply" }
  let reply
  try {
    reply = await openZkReply(receipts[0])
  } catch (err) {
    return { valid: false, reason: (err as Error).message }
  }
  if (reply.peer !== accused) return { valid: false, reason: `the reply is ${reply.peer}'s, not the accused's` }
  const entry = models(reply.model)
  if (entry === undefined) return { valid: false, reason: `this ledger knows no ZK model ${reply.model}` }
  try {
    await verifyZkProof(
      entry,
      { proof: decodeProof(reply.proof), publicSignals: reply.publicSignals },
      { input: new Int8Array(reply.input.buffer, reply.input.byteOffset, reply.input.byteLength), output: int32Of(reply.output) }
    )
  } catch (err) {
    if (err instanceof TesseraError) return { valid: true, reason: `${accused.slice(-8)} signed a ${reply.model} result whose proof fails: ${err.message}` }
    throw err
  }
  return { valid: false, reason: 'the proof verifies: nothing to slash' }
}
