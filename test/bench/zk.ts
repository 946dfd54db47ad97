/**
 * What the zero-knowledge mode costs per model size: constraints, the trusted setup (compile,
 * powers of tau, Groth16 keys: cached in .cache/zk, so a second run reports the first run's
 * figures), witness and proving time, verification time in Node, proof and key sizes, and the
 * quantization error. Measures only.
 */
import { randomInputs } from '../../shared/zk/model.js'
import { quantizationError, quantizeInput } from '../../shared/zk/quantize.js'
import { encodeProof } from '../../shared/zk/proof.js'
import { releaseZkWorkers, verifyZkProof } from '../../shared/zk/verify.js'
import { seededZkModel, setupZkModel } from '../../native-node/zk/setup.js'

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]

export interface ZkBenchRow {
  model: string
  widths: number[]
  constraints: number
  power: number
  /** True when the setup came from the cache: its times are those measured when it was made. */
  setupCached: boolean
  compileMs: number
  ptauMs: number
  zkeyMs: number
  witnessMs: number
  proveMs: number
  verifyMs: number
  proofJsonBytes: number
  proofBytes: number
  publicSignals: number
  verificationKeyJsonBytes: number
  maxRelError: number
  argmaxAgreement: number
}

export async function benchZk (models = ['tiny', 'small'], proofs = 5): Promise<{ models: ZkBenchRow[] }> {
  const rows: ZkBenchRow[] = []
  try {
    for (const name of models) {
      const m = seededZkModel(name)
      const s = await setupZkModel(m, { progress: (p) => { if (p.ms !== undefined) console.log(`  ${name}: ${p.label} ${(p.ms / 1000).toFixed(1)} s`) } })
      const prover = await s.prover()
      const witness: number[] = []
      const prove: number[] = []
      const verify: number[] = []
      let proofJsonBytes = 0
      let proofBytes = 0
      const xs = randomInputs(m.shape.layers[0].inputs, proofs + 1, 17).map((v) => quantizeInput(m.quant, v))
      for (const [i, x] of xs.entries()) {
        const r = await prover.prove(x)
        const t = performance.now()
        await verifyZkProof(s.entry, r, { input: x })
        const verifyMs = performance.now() - t
        proofJsonBytes = JSON.stringify(r.proof).length
        proofBytes = encodeProof(r.proof).length
        // The first proof warms up (wasm compile, worker start-up): not measured.
        if (i === 0) continue
        witness.push(r.witnessMs)
        prove.push(r.proveMs)
        verify.push(verifyMs)
      }
      const e = quantizationError(m.float, m.quant, randomInputs(m.shape.layers[0].inputs, 1000, 23))
      const row: ZkBenchRow = {
        model: name,
        widths: [m.shape.layers[0].inputs, ...m.shape.layers.map((l) => l.outputs)],
        constraints: s.circuit.constraints,
        power: s.keys.power,
        setupCached: s.keys.reused,
        compileMs: s.circuit.compileMs,
        ptauMs: s.keys.ptauMs,
        zkeyMs: s.keys.zkeyMs,
        witnessMs: median(witness),
        proveMs: median(prove),
        verifyMs: median(verify),
        proofJsonBytes,
        proofBytes,
        publicSignals: s.circuit.publicSignals,
        verificationKeyJsonBytes: JSON.stringify(s.entry.verificationKey).length,
        maxRelError: e.maxRelError,
        argmaxAgreement: e.argmaxAgreement
      }
      rows.push(row)
      console.log(`${name} (${row.widths.join('→')}): ${row.constraints} constraints, 2^${row.power}; setup${row.setupCached ? ' (cached)' : ''} compile ${(row.compileMs / 1000).toFixed(1)} s, ptau ${(row.ptauMs / 1000).toFixed(1)} s, keys ${(row.zkeyMs / 1000).toFixed(1)} s; witness ${row.witnessMs.toFixed(0)} ms, prove ${row.proveMs.toFixed(0)} ms, verify ${row.verifyMs.toFixed(1)} ms; proof ${row.proofBytes} B (${row.proofJsonBytes} B JSON), vk ${row.verificationKeyJsonBytes} B JSON; int8 error ${(100 * row.maxRelError).toFixed(2)}%, argmax ${(100 * row.argmaxAgreement).toFixed(1)}%`)
    }
  } finally {
    await releaseZkWorkers()
  }
  return { models: rows }
}
