/**
 * The node side of /tessera/zk/1.0.0 (protocol/zk.ts): proves one inference of a ZK model per
 * stream and signs the reply. Proofs run one at a time (each takes the cores for a second or
 * more); a full queue answers BUSY rather than piling up.
 */
import { lpStream } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import { encode } from 'cborg'
import { ProtocolError, TesseraError } from '../errors.js'
import { logger } from '../log.js'
import { MAX_RECORD_BYTES } from '../protocol/limits.js'
import { bytesOfInt32, decodeZkRequest, int8Of, signZkReply } from '../protocol/zk.js'
import type { Signer } from '../verify/receipt.js'
import { encodeProof } from '../zk/proof.js'
import type { Groth16Proof, ZkStatement } from '../zk/types.js'
import { PEER_DEFAULTS } from './config.js'

const log = logger('tessera:node:zk')

/** A loaded ZK model: its input width and a prover (host/zk/prove.ts). */
export interface ZkServed {
  inputs: number
  prove(x: Int8Array): Promise<{ proof: Groth16Proof; publicSignals: string[]; statement: ZkStatement }>
}

export interface ZkServeOptions {
  peer: string
  sign: Signer
  models: Map<string, ZkServed>
  /** Proofs waiting at most (default PEER_DEFAULTS.zkQueue). */
  maxQueue?: number
  /** A drill: claim another output than the one proven, with the public signals changed to match (the proof no longer verifies). */
  forge?: boolean
}

export function createZkHandler(o: ZkServeOptions): { handle: (stream: Stream) => Promise<void>; stats: { proofs: number; errors: number } } {
  const stats = { proofs: 0, errors: 0 }
  let queue: Promise<unknown> = Promise.resolve()
  let waiting = 0
  const handle = async (stream: Stream): Promise<void> => {
    const lp = lpStream(stream, { maxDataLength: MAX_RECORD_BYTES })
    try {
      const m = decodeZkRequest((await lp.read({ signal: AbortSignal.timeout(10_000) })).subarray())
      const model = o.models.get(m.model)
      if (model === undefined) throw new ProtocolError('WRONG_MODEL', `this node proves ${[...o.models.keys()].join(', ') || 'no ZK model'}, not ${m.model}`)
      if (m.input.byteLength !== model.inputs) throw new ProtocolError('MALFORMED', `${m.model} takes ${model.inputs} int8 inputs, got ${m.input.byteLength}`)
      if (waiting >= (o.maxQueue ?? PEER_DEFAULTS.zkQueue)) throw new ProtocolError('BUSY', `${waiting} proofs are queued on this node`)
      waiting++
      const input = int8Of(m.input.slice())
      const started = performance.now()
      const run = queue.then(async () => await model.prove(input))
      queue = run.catch(() => {})
      const r = await run.finally(() => {
        waiting--
      })
      let output = r.statement.output
      let publicSignals = r.publicSignals
      if (o.forge === true) {
        // The output signals come first (verify.ts decodes them so): claim one more on the first.
        output = Int32Array.from(output, (v, i) => (i === 0 ? v + 1 : v))
        publicSignals = publicSignals.map((s, i) => (i === 0 ? (BigInt(s) + 1n).toString() : s))
      }
      stats.proofs++
      const reply = await signZkReply(
        {
          peer: o.peer,
          model: m.model,
          input: m.input,
          output: bytesOfInt32(output),
          proof: encodeProof(r.proof),
          publicSignals,
          ms: performance.now() - started
        },
        o.sign
      )
      await lp.write(encode({ t: 'proved', reply }))
    } catch (err) {
      stats.errors++
      log.debug(`zk request failed: ${(err as Error).message}`)
      await lp.write(encode({ t: 'error', code: err instanceof TesseraError ? err.code : 'INTERNAL', message: (err as Error).message })).catch(() => {})
    } finally {
      await stream.close().catch(() => {})
    }
  }
  return { handle, stats }
}
