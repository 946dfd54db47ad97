/**
 * What the EVM ledger costs on a local anvil: gas per stake, slash, observe, slashByProof (a valid
 * counter-proof of the tiny ZK model) and a bare verifyProof, and the latency of each ledger call
 * as the relay sees it (send, receipt, event sync; median of several). Gas is the chain's own
 * figure and holds on any EVM chain; latency is local and says nothing about a public chain's
 * block time. Measures only.
 */
import { encodeFunctionData, type Abi, type Hex } from 'viem'
import { startAnvil } from '../../relay/chain/anvil.js'
import { connect } from '../../relay/chain/clients.js'
import { verifierArtifact } from '../../relay/chain/compile.js'
import { deployTessera, deployZkVerifier } from '../../relay/chain/deploy.js'
import { openEvmLedger, proofCallArgs } from '../../relay/ledger-evm.js'
import type { Evidence } from '../../shared/ledger/types.js'
import { toField } from '../../shared/zk/field.js'
import { randomInputs } from '../../shared/zk/model.js'
import { quantizeInput } from '../../shared/zk/quantize.js'
import { releaseZkWorkers } from '../../shared/zk/verify.js'
import { seededZkModel, setupZkModel } from '../../host/zk/setup.js'
import { median } from './median.js'

export interface ChainBenchRow {
  op: string
  gas: number
  medianMs: number
  runs: number
}

export async function benchChain(runs = 7): Promise<{ rows: ChainBenchRow[]; deployGas: number; verifierDeployGas: number }> {
  const anvil = await startAnvil()
  try {
    const d = await deployTessera({ rpcUrl: anvil.url, privateKey: anvil.accounts[0], out: null })
    const trusting = { check: async () => ({ valid: true, reason: 'bench' }) }
    const l = await openEvmLedger(
      { rpcUrl: anvil.url, chainId: anvil.chainId, stakeAddress: d.stakeAddress, privateKey: anvil.accounts[0], fromBlock: d.deployBlock },
      trusting
    )
    const rows: ChainBenchRow[] = []
    const measure = async (op: string, fn: (i: number) => Promise<unknown>): Promise<void> => {
      const ms: number[] = []
      const gas: number[] = []
      for (let i = 0; i < runs; i++) {
        const t = performance.now()
        await fn(i)
        ms.push(performance.now() - t)
        gas.push(l.lastGas)
      }
      rows.push({ op, gas: median(gas), medianMs: median(ms), runs })
    }
    // Peers are labeled (published once) beforehand, so each figure is of the operation alone.
    await l.stake('accused', 1000)
    await l.stake('reporter', 1)
    await measure('stake', async () => await l.stake('accused', 10))
    const ev = (i: number): Evidence => ({ kind: 'redundant', accused: 'accused', receipts: [new Uint8Array([i, 1])], detail: {} })
    await measure('slash', async (i) => await l.slash(ev(i), 'reporter'))
    await measure('observe', async (i) => await l.observe('accused', i % 2 === 0))

    const tiny = await setupZkModel(seededZkModel('tiny'))
    const c = await connect({ rpcUrl: anvil.url, chainId: anvil.chainId, privateKey: anvil.accounts[0] })
    const z = await deployZkVerifier(c, d.stakeAddress, { entry: tiny.entry, zkey: tiny.keys.zkey })
    const x = quantizeInput(tiny.model.quant, randomInputs(tiny.entry.shape.layers[0].inputs, 1, 5)[0])
    const honest = await (await tiny.prover()).prove(x)
    const claim = {
      model: 'tiny',
      claimedOutput: Array.from(honest.statement.output, (v, i) => toField(i === 0 ? v + 1 : v)),
      claimedInput: Array.from(x, (v) => toField(v))
    }
    await measure('slashByProof (valid counter-proof)', async (i) => {
      const r = await l.slashByProof({
        accused: 'accused',
        evidenceId: `0x${(i + 1).toString(16).padStart(64, '0')}`,
        ...claim,
        proof: honest.proof,
        publicSignals: honest.publicSignals,
        reporter: 'reporter'
      })
      if (!r.slashed) throw new Error(`the bench's counter-proof was refused: ${r.reason}`)
    })

    // A bare verifyProof transaction, with the gas set: anvil's estimate for it is too low (the pairing fails and it returns false).
    const { abi } = (await verifierArtifact(tiny.keys.zkey)) as { abi: Abi }
    const { a, b, c: cc } = proofCallArgs(honest.proof)
    const data: Hex = encodeFunctionData({ abi, functionName: 'verifyProof', args: [a, b, cc, honest.publicSignals.map(BigInt)] })
    const ms: number[] = []
    for (let i = 0; i < runs; i++) {
      const t = performance.now()
      const { data: ret } = await c.public.call({ to: z.verifier, data })
      ms.push(performance.now() - t)
      if (ret === undefined || BigInt(ret) !== 1n) throw new Error('the verifier did not accept the honest proof')
    }
    const hash = await c.wallet.sendTransaction({ chain: c.chain, account: c.account, to: z.verifier, data, gas: 2_000_000n })
    const receipt = await c.public.waitForTransactionReceipt({ hash })
    rows.push({ op: `verifyProof (tx; eth_call latency, ${z.signals} signals)`, gas: Number(receipt.gasUsed), medianMs: median(ms), runs })
    await l.close()

    console.log(`TesseraStake deploy ${d.gas} gas; tiny verifier deploy + register ${z.gas} gas`)
    console.log('op'.padEnd(44) + 'gas'.padStart(10) + 'median ms'.padStart(12))
    for (const r of rows) console.log(r.op.padEnd(44) + String(r.gas).padStart(10) + r.medianMs.toFixed(1).padStart(12))
    return { rows, deployGas: d.gas, verifierDeployGas: z.gas }
  } finally {
    await anvil.stop()
    await releaseZkWorkers()
  }
}
