/**
 * What the zero-knowledge mode costs per model size: constraints, the trusted setup (compile,
 * powers of tau, Groth16 keys: cached in .cache/zk, so a second run reports the first run's
 * figures), witness and proving time, verification time in Node and in Chromium, proof and key sizes, and the
 * quantization error. Measures only.
 */
import { randomInputs } from '../../shared/zk/model.js'
import { quantizationError, quantizeInput } from '../../shared/zk/quantize.js'
import { encodeProof } from '../../shared/zk/proof.js'
import { releaseZkWorkers, verifyZkProof } from '../../shared/zk/verify.js'
import { seededZkModel, setupSampling, setupZkModel } from '../../host/zk/setup.js'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { logitsCommitment, provedArgmax, quantizeLogits } from '../../shared/zk/argmax.js'
import { signReceipt } from '../../shared/verify/receipt.js'
import { verifySamplingProof } from '../../shared/verify/sampling.js'
import { join } from 'node:path'
import { buildModel } from '../../host/model-store.js'
import { startNode } from '../../native-node/node.js'
import { startRelay } from '../../relay/relay.js'
import { REPO, tempDir } from '../helpers/paths.js'
import { context, hasChromium, launch } from '../helpers/browser.js'
import { reference, stories } from '../helpers/reference.js'
import { median } from './median.js'

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

/**
 * Verification in Chromium, as the SDK does it in a tab: a node proves `model` over the network,
 * the tab verifies (the time from the reply to a verified result). The first proof, which loads
 * snarkjs and starts its workers, is reported apart.
 */
async function browserVerify(model: string, proofs: number): Promise<{ model: string; firstMs: number; verifyMs: number } | undefined> {
  if (!hasChromium()) {
    console.log('browser verification: no Chromium here, skipped')
    return undefined
  }
  const dir = tempDir('bench-zk-llm')
  await buildModel(await stories(), dir, { source: 'stories260K.bin', cuts: [2] })
  const relay = await startRelay({
    httpPort: 0,
    p2pPort: 0,
    models: [dir],
    webRoot: join(REPO, 'dist', 'web'),
    ledger: join(tempDir('bench-zk-ledger'), 'ledger.sqlite'),
    zk: [model]
  })
  const node = await startNode({ relay: relay.addr, model: dir, layers: [0, 5], zk: [model] })
  const browser = await launch()
  try {
    const page = await (await context(browser, relay.httpUrl)).newPage()
    await page.goto(`${relay.httpUrl}/index.html`)
    const width = seededZkModel(model).shape.layers[0].inputs
    // A string, as a third-party page's script would be.
    const times = (await page.evaluate(
      `(async () => {
      const { connect } = await import('/sdk.js')
      const tessera = await connect()
      const times = []
      for (let i = 0; i < ${proofs + 1}; i++) times.push((await tessera.zk(${JSON.stringify(model)}, ` +
        `Array.from({ length: ${width} }, (_, j) => ((i * 31 + j * 7) % 255) - 127))).proof.verifyMs)
      await tessera.close()
      return times
    })()`
    )) as number[]
    const r = { model, firstMs: times[0], verifyMs: median(times.slice(1)) }
    console.log(
      `${model}: verified in Chromium in ${r.verifyMs.toFixed(1)} ms (median of ${proofs}; the page's first proof ${r.firstMs.toFixed(0)} ms, loading snarkjs)`
    )
    return r
  } finally {
    await browser.close()
    await node.stop()
    await relay.stop()
  }
}

export interface SamplingBenchRow {
  vocab: number
  constraints: number
  power: number
  setupCached: boolean
  compileMs: number
  zkeyMs: number
  /** The last hop's extra work per step: quantize the row and hash it (Poseidon). */
  commitMs: number
  proveMs: number
  verifyMs: number
  proofBytes: number
}

/**
 * The sampling-step proof on stories260K's real logits (llama2.c's, from the reference file):
 * what the last hop pays per step to commit, what the sampler pays per token to prove, what the
 * requester pays to verify.
 */
async function samplingCost(): Promise<SamplingBenchRow> {
  const rows = reference().map((c) => Float32Array.from(c.last_prompt_logits))
  const vocab = rows[0].length
  const s = await setupSampling(vocab, {
    progress: (p) => {
      if (p.ms !== undefined) console.log(`  sampling ${vocab}: ${p.label} ${(p.ms / 1000).toFixed(1)} s`)
    }
  })
  const key = await generateKeyPair('Ed25519')
  const peer = peerIdFromPrivateKey(key).toString()
  const commit: number[] = []
  const prove: number[] = []
  const verify: number[] = []
  let proofBytes = 0
  for (const [i, row] of [rows[0], ...rows].entries()) {
    let t = performance.now()
    const q = quantizeLogits(row)
    const commitment = logitsCommitment(q)
    const commitMs = performance.now() - t
    const receipt = await signReceipt(
      {
        peer,
        session: 'bench',
        step: 0,
        root: '0'.repeat(64),
        layers: [0, 5],
        start: 0,
        input: new Uint8Array(32),
        output: new Uint8Array(4),
        logits: commitment
      },
      async (b) => await key.sign(b)
    )
    const token = provedArgmax(q)
    const p = await s.prover.prove(q, token)
    t = performance.now()
    await verifySamplingProof(s.entry, { token, peer, receipt, ...p })
    const verifyMs = performance.now() - t
    proofBytes = p.proof.length
    if (i === 0) continue // warm-up
    commit.push(commitMs)
    prove.push(p.ms)
    verify.push(verifyMs)
  }
  const r: SamplingBenchRow = {
    vocab,
    constraints: s.entry.constraints,
    power: s.entry.power,
    setupCached: s.keys.reused,
    compileMs: s.circuit.compileMs,
    zkeyMs: s.keys.zkeyMs,
    commitMs: median(commit),
    proveMs: median(prove),
    verifyMs: median(verify),
    proofBytes
  }
  console.log(
    `sampling step (argmax of ${vocab} logits): ${r.constraints} constraints, 2^${r.power}; setup${r.setupCached ? ' (cached)' : ''}` +
      ` compile ${(r.compileMs / 1000).toFixed(1)} s, keys ${(r.zkeyMs / 1000).toFixed(1)} s; commit ${r.commitMs.toFixed(1)} ms per step on the last hop` +
      `, prove ${r.proveMs.toFixed(0)} ms per token, verify ${r.verifyMs.toFixed(1)} ms; proof ${r.proofBytes} B (median of ${prove.length} reference prompts)`
  )
  return r
}

export async function benchZk(
  models = ['tiny', 'small'],
  proofs = 5
): Promise<{ models: ZkBenchRow[]; sampling?: SamplingBenchRow; browser?: Awaited<ReturnType<typeof browserVerify>> }> {
  const rows: ZkBenchRow[] = []
  let sampling: SamplingBenchRow | undefined
  try {
    for (const name of models) {
      const m = seededZkModel(name)
      const s = await setupZkModel(m, {
        progress: (p) => {
          if (p.ms !== undefined) console.log(`  ${name}: ${p.label} ${(p.ms / 1000).toFixed(1)} s`)
        }
      })
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
      console.log(
        `${name} (${row.widths.join('→')}): ${row.constraints} constraints, 2^${row.power}; setup${row.setupCached ? ' (cached)' : ''}` +
          ` compile ${(row.compileMs / 1000).toFixed(1)} s, ptau ${(row.ptauMs / 1000).toFixed(1)} s,` +
          ` keys ${(row.zkeyMs / 1000).toFixed(1)} s; witness ${row.witnessMs.toFixed(0)} ms, prove ${row.proveMs.toFixed(0)} ms,` +
          ` verify ${row.verifyMs.toFixed(1)} ms; proof ${row.proofBytes} B (${row.proofJsonBytes} B JSON),` +
          ` vk ${row.verificationKeyJsonBytes} B JSON; int8 error ${(100 * row.maxRelError).toFixed(2)}%,` +
          ` argmax ${(100 * row.argmaxAgreement).toFixed(1)}%`
      )
    }
    sampling = await samplingCost()
  } finally {
    await releaseZkWorkers()
  }
  return { models: rows, sampling, browser: await browserVerify('small', proofs) }
}
