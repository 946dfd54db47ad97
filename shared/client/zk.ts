/**
 * `verification: "zk"` for the models small enough to prove (shared/zk): ask a peer that holds
 * the model to prove one inference, verify the Groth16 proof against the verification key and
 * weight commitment the manifest published (never the prover's word), and return the output
 * only if it verifies. A reply that does not is evidence: the peer signed it.
 */
import type { Capability } from '../protocol/capability.js'
import { MAX_RECORD_BYTES } from '../protocol/limits.js'
import { encodeZkRequest, int32Of, openZkReply, ZK_PROTOCOL } from '../protocol/zk.js'
import { InputError, NoRouteError, ProtocolError, TesseraError } from '../errors.js'
import { decodeProof, PROOF_BYTES } from '../zk/proof.js'
import type { Groth16Proof, ZkModelEntry } from '../zk/types.js'
import { verifyZkProof } from '../zk/verify.js'
import type { LedgerLink } from './ledger-link.js'
import type { Dialer } from './remote-hop.js'
import { request } from './request.js'

export interface ZkResult {
  model: string
  peer: string
  /** The int32 outputs, proven. */
  output: number[]
  /** Dequantized (× 2^-outputExp). */
  values: number[]
  proof: { bytes: number; proveMs: number; verifyMs: number }
  /** The signed reply, for anyone who wants to check the proof again. */
  reply: Uint8Array
}

export interface ZkClientOptions {
  dialer: Dialer
  /** Peers that announced ZK models (Capability.zk). */
  peers: () => Promise<Capability[]>
  /** The published entries: verification keys and weight commitments. */
  models: (name: string) => ZkModelEntry | undefined
  ledger: LedgerLink
  /** Dial + proof (ms; default 60000). */
  timeoutMs?: number
}

/** Proves `input` (int8) on `model` with the first peer whose proof verifies; throws when none does. */
export async function zkInfer(o: ZkClientOptions, model: string, input: ArrayLike<number>): Promise<ZkResult> {
  const entry = o.models(model)
  if (entry === undefined) throw new InputError(`unknown ZK model ${model}`)
  const width = entry.shape.layers[0].inputs
  if (input.length !== width || !Array.from(input).every((v) => Number.isInteger(v) && v >= -128 && v <= 127))
    throw new InputError(`${model} takes ${width} int8 inputs (integers from -128 to 127)`)
  const x = Int8Array.from(input)
  const peers = (await o.peers()).filter((p) => p.zk?.includes(model) === true && !o.ledger.excluded(p.peer))
  if (peers.length === 0) throw new NoRouteError(`no live peer proves ${model}`)
  const failures: string[] = []
  // Signed replies whose proof failed: evidence, reported once we know whether an honest proof follows.
  const forged: Array<{ peer: string; bytes: Uint8Array; reason: string }> = []
  for (const peer of peers.sort(() => Math.random() - 0.5)) {
    let bytes: Uint8Array
    try {
      bytes = await ask(o, peer, model, x)
    } catch (err) {
      failures.push(`${peer.peer.slice(-8)}: ${(err as Error).message}`)
      continue
    }
    const t = performance.now()
    try {
      const reply = await openZkReply(bytes)
      if (reply.peer !== peer.peer || reply.model !== model) throw new ProtocolError('BAD_RECEIPT', 'the reply is signed for another peer or model')
      const output = int32Of(reply.output)
      const proof = decodeProof(reply.proof)
      await verifyZkProof(entry, { proof, publicSignals: reply.publicSignals }, { input: x, output })
      o.ledger.observe(peer.peer, true)
      // The honest proof for the same input goes with the evidence: a chain's verifier contract can check it (relay/ledger-evm.ts).
      await report(o, model, forged, { proof, publicSignals: reply.publicSignals })
      return {
        model,
        peer: peer.peer,
        output: Array.from(output),
        values: Array.from(output, (v) => v * 2 ** -entry.scale.outputExp),
        proof: { bytes: PROOF_BYTES, proveMs: reply.ms, verifyMs: performance.now() - t },
        reply: bytes
      }
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err
      failures.push(`${peer.peer.slice(-8)}: ${err.message}`)
      o.ledger.observe(peer.peer, false)
      // A signed reply whose proof fails is evidence; the ledger verifies it again before slashing.
      if (err.code !== 'BAD_RECEIPT') forged.push({ peer: peer.peer, bytes, reason: err.message })
    }
  }
  await report(o, model, forged)
  throw new TesseraError('VERIFICATION_FAILED', `no verified proof for ${model}: ${failures.join('; ')}`)
}

async function ask(o: ZkClientOptions, peer: Capability, model: string, x: Int8Array): Promise<Uint8Array> {
  const m = await request(o.dialer, peer, ZK_PROTOCOL, encodeZkRequest(model, x), { ms: o.timeoutMs ?? 60_000, maxBytes: MAX_RECORD_BYTES })
  if (m.t !== 'proved' || !(m.reply instanceof Uint8Array)) throw new ProtocolError('BAD_REPLY', 'malformed reply')
  return m.reply
}

async function report(
  o: ZkClientOptions,
  model: string,
  forged: Array<{ peer: string; bytes: Uint8Array; reason: string }>,
  counterProof?: { proof: Groth16Proof; publicSignals: string[] }
): Promise<void> {
  for (const f of forged) {
    await o.ledger
      .report({
        kind: 'proof',
        accused: f.peer,
        receipts: [f.bytes],
        detail: { model, reason: f.reason, ...(counterProof !== undefined ? { counterProof } : {}) }
      })
      .catch(() => {})
  }
}
