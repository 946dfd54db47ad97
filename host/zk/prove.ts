/**
 * Proving an inference: the witness (circom's wasm runs the whole quantized model on the
 * circuit's signals) and the Groth16 proof over it, with the keys loaded into memory once.
 */
import { readFile } from 'node:fs/promises'
import { groth16, wtns, type MemFile } from 'snarkjs'
import { InputError, TesseraError } from '../../shared/errors.js'
import { samplingInput, type SamplingEntry, type SamplingProver } from '../../shared/zk/argmax.js'
import { encodeProof } from '../../shared/zk/proof.js'
import type { ZkShape } from '../../shared/zk/layout.js'
import type { QuantModel } from '../../shared/zk/quantize.js'
import type { ZkModelEntry, ZkProof, ZkStatement } from '../../shared/zk/types.js'
import { decodePublicSignals } from '../../shared/zk/verify.js'
import { witnessBuilder } from '../../shared/zk/witness.js'

export interface ProveResult extends ZkProof {
  /** The proven statement (output, commitment, input or its hash). */
  statement: ZkStatement
  witnessMs: number
  proveMs: number
}

export interface ZkProver {
  prove(x: Int8Array): Promise<ProveResult>
}

/** A prover for quantized model `q` with the circuit files of its shape (see setup.ts). */
export async function openProver(q: QuantModel, shape: ZkShape, files: { wasm: string; zkey: string }, name = 'model'): Promise<ZkProver> {
  const [wasm, zkey] = await Promise.all([readFile(files.wasm), readFile(files.zkey)])
  const signals = witnessBuilder(q, shape)
  const entry: Pick<ZkModelEntry, 'shape' | 'name'> = { shape, name }
  return {
    async prove(x) {
      const input = signals(x)
      let t = performance.now()
      const witness: MemFile = { type: 'mem' }
      await wtns.calculate(input, new Uint8Array(wasm), witness)
      const witnessMs = performance.now() - t
      t = performance.now()
      const { proof, publicSignals } = await groth16.prove(new Uint8Array(zkey), witness)
      const proveMs = performance.now() - t
      // Our own circuit gave these: a decoding failure here is a bug, not a peer's fault.
      let statement: ZkStatement
      try {
        statement = decodePublicSignals(entry, publicSignals)
      } catch (err) {
        const why = err instanceof Error ? err.message : String(err)
        throw new TesseraError(
          'ZK_SETUP',
          `the circuit produced undecodable public signals (${why}), a bug or stale cached files: delete .cache/zk and set the model up again`
        )
      }
      return { proof, publicSignals, statement, witnessMs, proveMs }
    }
  }
}

/** Proves "token is the argmax of q" with the sampling circuit's files (setup.ts setupSampling). */
export async function openSamplingProver(entry: SamplingEntry, files: { wasm: string; zkey: string }): Promise<SamplingProver> {
  const [wasm, zkey] = await Promise.all([readFile(files.wasm), readFile(files.zkey)])
  return {
    entry,
    async prove(q, token) {
      if (q.length !== entry.vocab) throw new InputError(`the sampling circuit takes ${entry.vocab} logits, got ${q.length}`)
      const t = performance.now()
      const witness: MemFile = { type: 'mem' }
      try {
        await wtns.calculate(samplingInput(q, token), new Uint8Array(wasm), witness)
      } catch (err) {
        // The circuit's constraints fail: the token is not the argmax (or the input is not q).
        throw new InputError(`cannot prove token ${token} is the argmax of these logits: ${(err as Error).message.split('\n')[0]}`)
      }
      const { proof, publicSignals } = await groth16.prove(new Uint8Array(zkey), witness)
      return { proof: encodeProof(proof), publicSignals, ms: performance.now() - t }
    }
  }
}
