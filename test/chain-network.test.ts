/**
 * The network settling on a chain: a relay whose ledger is the TesseraStake contract on a local
 * anvil (relay/ledger-evm.ts), honest and faulty native nodes, real libp2p, onnxruntime, solc,
 * viem and Groth16 proofs. The verify (1) fault drills slash the faulty peers' stakes on chain,
 * the contract's events match the relay's audit log, honest stakes stay whole; a forging ZK
 * prover is slashed by a counter-proof the chain itself verifies; and a relay started afresh (or
 * on a restarted chain) rebuilds everything from the chain.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { createPublicClient, http, type Hex } from 'viem'
import { buildModel } from '../host/model-store.js'
import { startRelay, type RunningRelay } from '../relay/relay.js'
import { startNode, type RunningNode } from '../native-node/node.js'
import { startAnvil, type Anvil } from '../relay/chain/anvil.js'
import { peerKey } from '../relay/chain/clients.js'
import { stakeArtifact } from '../relay/chain/compile.js'
import { deployTessera, type Deployment } from '../relay/chain/deploy.js'
import { toWei, type EvmLedger, type EvmLedgerConfig } from '../relay/ledger-evm.js'
import { seededZkModel, setupZkModel, type ZkSetup } from '../host/zk/setup.js'
import { parseFault } from '../shared/node/fault.js'
import { mulberry32 } from '../shared/rng.js'
import { openZkReply } from '../shared/protocol/zk.js'
import { decodeProof } from '../shared/zk/proof.js'
import { randomInputs } from '../shared/zk/model.js'
import { quantizeInput } from '../shared/zk/quantize.js'
import type { GenerationResult } from '../shared/client/types.js'
import { reference, stories } from './helpers/reference.js'
import { REPO, tempDir } from './helpers/paths.js'
import { api, spawnTessera, waitFor } from './helpers/network.js'
import { contractEvents } from './helpers/chain-events.js'
import { context, hasChromium, launch, screenshot } from './helpers/browser.js'
import { writeFile } from 'node:fs/promises'

let model: string
let anvil: Anvil
let deployment: Deployment
let config: EvmLedgerConfig
let zk: ZkSetup
let relay: RunningRelay
const honest: RunningNode[] = []
let forger: RunningNode
/** Nodes to stop at the end (the restart case stops them early). */
const running: RunningNode[] = []
const stateFile = join(tempDir('chain-state'), 'anvil.json')

const relayOptions = (cfg: EvmLedgerConfig, seed: number) => ({
  httpPort: 0,
  p2pPort: 0,
  models: [model],
  ledger: join(tempDir('chain-claims'), 'claims.sqlite'),
  evm: cfg,
  zk: ['tiny'],
  joinStake: 100,
  client: { banMs: 1, random: mulberry32(seed) }
})

beforeAll(async () => {
  model = tempDir('chain-model')
  await buildModel(await stories(), model, { source: 'stories260K.bin', cuts: [2] })
  zk = await setupZkModel(seededZkModel('tiny'))
  anvil = await startAnvil({ stateFile })
  deployment = await deployTessera({ rpcUrl: anvil.url, privateKey: anvil.accounts[0], out: null, zk: [{ entry: zk.entry, zkey: zk.keys.zkey }] })
  config = {
    rpcUrl: anvil.url,
    chainId: anvil.chainId,
    stakeAddress: deployment.stakeAddress,
    privateKey: anvil.accounts[0],
    fromBlock: deployment.deployBlock
  }
  relay = await startRelay(relayOptions(config, 7))
  honest.push(await startNode({ relay: relay.addr, model, layers: [0, 2], zk: ['tiny'] }))
  for (const layers of [
    [0, 2],
    [2, 5],
    [2, 5]
  ] as Array<[number, number]>)
    honest.push(await startNode({ relay: relay.addr, model, layers }))
  forger = await startNode({ relay: relay.addr, model, layers: [2, 5], zk: ['tiny'], zkForge: true })
  running.push(...honest, forger)
  await waitFor(async () => (await relay.client.network()).peers.length === 5)
  // Join stakes are sent on announce: wait until all five are on chain.
  await waitFor(async () => (await Promise.all([...honest, forger].map(async (n) => (await relay.ledger.standing(n.peerId)).stake))).every((s) => s === 100))
}, 600_000)

afterAll(async () => {
  for (const n of running) await n.stop()
  await relay?.stop()
  await anvil?.stop()
})

/** The contract's view of a peer, read directly (not through the ledger under test). */
async function onChain(peer: string, chain = anvil, d = deployment): Promise<{ stake: bigint; slashed: number; blacklisted: boolean }> {
  const { abi } = await stakeArtifact()
  const r = (await createPublicClient({ transport: http(chain.url, { retryCount: 0 }) }).readContract({
    address: d.stakeAddress,
    abi,
    functionName: 'peers',
    args: [peerKey(peer)]
  })) as readonly [bigint, bigint, string, bigint, number, boolean]
  return { stake: r[0], slashed: r[4], blacklisted: r[5] }
}

async function events(name: string): Promise<Array<{ args: Record<string, unknown> }>> {
  return (await contractEvents(anvil.url, deployment)).filter((l) => l.eventName === name)
}

async function run(req: Parameters<RunningRelay['client']['generate']>[0]): Promise<GenerationResult> {
  const gen = relay.client.generate(req)
  for (let r = await gen.next(); ; r = await gen.next()) if (r.done === true) return r.value
}

describe('the network on the EVM ledger', () => {
  for (const spec of ['random-output', 'wrong-weights', 'skip-layer=1']) {
    it(`--fault ${spec}: caught by redundant execution, slashed on chain`, async () => {
      const faulty = await startNode({ relay: relay.addr, model, layers: [0, 2], fault: parseFault(spec) })
      try {
        await waitFor(async () => (await relay.ledger.standing(faulty.peerId)).stake === 100)
        const cases = reference()
        let caught = false
        for (let g = 0; g < 40 && !caught; g++) {
          const c = cases[g % cases.length]
          const n = Math.min(4, c.decisive_prefix)
          const r = await run({ prompt: c.prompt, maxTokens: n, verification: { mode: 'redundant', k: 2 } })
          expect(r.tokens).toEqual(c.greedy.slice(0, n))
          expect(r.verification.faults.every((f) => f.accused === faulty.peerId)).toBe(true)
          caught = r.verification.faults.some((f) => f.slashed)
        }
        expect(caught, 'the faulty peer was drawn into a lane within 40 generations').toBe(true)
        const chain = await onChain(faulty.peerId)
        const standing = await relay.ledger.standing(faulty.peerId)
        expect(chain.slashed).toBeGreaterThanOrEqual(1)
        expect(chain.slashed).toBe(standing.slashed)
        expect(chain.stake).toBe(toWei(standing.stake))
        expect(standing.stake).toBe(100 * 0.5 ** standing.slashed)
      } finally {
        await faulty.stop()
      }
    }, 600_000)
  }

  it('a forging ZK prover is slashed by a counter-proof the chain verifies; a forged counter-proof is refused by it', async () => {
    const { zkInfer } = await import('../shared/client/zk.js')
    const { libp2pDialer } = await import('../shared/route/directory.js')
    const x = Array.from(quantizeInput(zk.model.quant, randomInputs(zk.entry.shape.layers[0].inputs, 1, 41)[0]))
    const reports: Array<{ receipts: Uint8Array[] }> = []
    const quiet = {
      weight: () => 0.5,
      excluded: () => false,
      observe: () => {},
      report: async (e: { receipts: Uint8Array[] }) => {
        reports.push(e)
        return { slashed: false, amount: 0, reason: '' }
      }
    }
    const ask = async (peer: string) =>
      await zkInfer({ dialer: libp2pDialer(relay.libp2p), peers: async () => [relay.registry.find(peer)!], models: () => zk.entry, ledger: quiet }, 'tiny', x)
    await expect(ask(forger.peerId)).rejects.toThrow(/no verified proof/)
    const forged = reports[0].receipts
    const good = await openZkReply((await ask(honest[0].peerId)).reply)
    const counter = { proof: decodeProof(good.proof), publicSignals: good.publicSignals }
    const evm = relay.ledger as EvmLedger
    const reporter = relay.libp2p.peerId.toString()
    const before = await onChain(forger.peerId)

    // A counter-proof with one coordinate bent: the chain's verifier returns false, the contract refuses it.
    const bent = { ...counter, proof: { ...counter.proof, pi_a: [counter.proof.pi_a[0], (BigInt(counter.proof.pi_a[1]) + 1n).toString(), '1'] } }
    const refused = await relay.ledger.slash({ kind: 'proof', accused: forger.peerId, receipts: forged, detail: { counterProof: bent } }, reporter)
    expect(refused.slashed).toBe(false)
    expect(refused.reason).toMatch(/ProofRejected/)
    const refusedGas = evm.lastGas
    expect(await onChain(forger.peerId)).toEqual(before)

    const slashed = await relay.ledger.slash({ kind: 'proof', accused: forger.peerId, receipts: forged, detail: { counterProof: counter } }, reporter)
    expect(slashed.slashed, slashed.reason).toBe(true)
    const proofGas = evm
      .gas()
      .filter((g) => g.op === 'slashByProof')
      .at(-1)!.gas
    const after = await onChain(forger.peerId)
    expect(after.slashed).toBe(before.slashed + 1)
    expect(after.stake).toBe(before.stake / 2n)
    const ev = (await events('Slashed')).at(-1)!.args
    expect(ev).toMatchObject({ peer: peerKey(forger.peerId), kind: 5 })
    console.log(`on chain: forged counter-proof refused (its Rejected record ${refusedGas} gas); valid counter-proof slashByProof ${proofGas} gas`)
    // The same evidence again is refused, whatever counter-proof comes with it.
    const again = await relay.ledger.slash({ kind: 'proof', accused: forger.peerId, receipts: forged, detail: { counterProof: counter } }, reporter)
    expect(again.slashed).toBe(false)
    expect(again.reason).toMatch(/already used|EvidenceUsed/)
  }, 300_000)

  it("the contract's events are the audit log; honest stakes are whole", async () => {
    const l = await api(relay.httpUrl, '/api/ledger')
    expect(l.chainOk).toBe(true)
    const slashes = (await events('Slashed')).map((e) => [e.args.peer as Hex, e.args.amount as bigint])
    const audited = (l.audit as Array<{ kind: string; peer: string; amount: number }>)
      .filter((e) => e.kind === 'slash')
      .map((e) => [peerKey(e.peer), toWei(e.amount)])
    expect(audited).toEqual(slashes)
    expect(slashes.length).toBeGreaterThanOrEqual(4)
    const stakes = (await events('Staked')).length
    expect((l.audit as Array<{ kind: string; amount: number }>).filter((e) => e.kind === 'stake' && e.amount > 0)).toHaveLength(stakes)
    for (const n of honest) {
      expect(await onChain(n.peerId)).toEqual({ stake: toWei(100), slashed: 0, blacklisted: false })
      expect(l.standings.find((s: { peer: string }) => s.peer === n.peerId)).toMatchObject({ stake: 100, slashed: 0, blacklisted: false })
    }
  })

  it('a relay started afresh, and one on a restarted chain, rebuild the same ledger from the chain', async () => {
    // The nodes are done; stopped first, they do not keep announcing to a relay that is gone.
    for (const n of running.splice(0)) await n.stop()
    const before = await api(relay.httpUrl, '/api/ledger')
    await relay.stop()
    // Nothing local is kept: a new claims file, a new ledger object, only the chain.
    relay = await startRelay(relayOptions(config, 8))
    const fresh = await api(relay.httpUrl, '/api/ledger')
    expect(fresh.chainOk).toBe(true)
    expect(fresh.standings).toEqual(before.standings)
    expect(fresh.audit).toEqual(before.audit)
    await relay.stop()
    // anvil dumps its state on exit and loads it on start; the port is new.
    await anvil.stop()
    anvil = await startAnvil({ stateFile })
    config = { ...config, rpcUrl: anvil.url }
    relay = await startRelay(relayOptions(config, 9))
    const restarted = await api(relay.httpUrl, '/api/ledger')
    expect(restarted.standings).toEqual(before.standings)
    expect(restarted.audit).toEqual(before.audit)
    expect(restarted.chainOk).toBe(true)
    expect(restarted.backend).toEqual({ kind: 'evm', chainId: anvil.chainId, contract: deployment.stakeAddress })
  }, 120_000)

  it('tessera relay --ledger evm --chain <deployment> serves the same ledger; the network page says where it lives', async () => {
    const dir = tempDir('chain-cli')
    await writeFile(join(dir, 'chain.json'), JSON.stringify({ ...deployment, rpcUrl: anvil.url }))
    const cli = await spawnTessera([
      'relay',
      '--port',
      '0',
      '--p2p-port',
      '0',
      '--web',
      join(REPO, 'dist', 'web'),
      '--ledger',
      'evm',
      '--chain',
      join(dir, 'chain.json'),
      '--ledger-file',
      join(dir, 'claims.sqlite')
    ])
    try {
      const http = cli.ready.http as string
      const l = await api(http, '/api/ledger')
      expect(l.standings).toEqual((await api(relay.httpUrl, '/api/ledger')).standings)
      expect(l.backend).toMatchObject({ kind: 'evm', contract: deployment.stakeAddress })
      if (!hasChromium()) return
      const browser = await launch()
      try {
        const page = await (await context(browser, http)).newPage()
        await page.goto(`${http}/network.html`)
        await page.waitForFunction(() => document.querySelector('#ledger-chain')?.textContent?.includes('TesseraStake') === true, undefined, {
          timeout: 30_000
        })
        expect(await page.textContent('#ledger-chain')).toMatch(
          /TesseraStake contract 0x[0-9a-fA-F]{40} on chain 31337, rebuilt from its events\. Audit chain verified/
        )
        await screenshot(page, 'network-evm')
      } finally {
        await browser.close()
      }
    } finally {
      cli.proc.kill('SIGTERM')
    }
  }, 120_000)
})
