/**
 * Slashing in a federation: three relays that do not trust each other share one TesseraStake on
 * a local anvil, each relay an arbiter with its own key, two approvals needed. A faulty node
 * announced to relay A is caught by the client of relay B (redundant execution); B publishes the
 * evidence and approves, A and C re-check it with their own checkers and approve, and the node is
 * slashed once per evidence. Every relay then shows the same standings and the same audit log,
 * rebuilt from the chain. Real libp2p, gossipsub, onnxruntime, solc, viem and anvil.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { createPublicClient, http, type Abi } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { buildModel } from '../host/model-store.js'
import { startRelay, type RunningRelay } from '../relay/relay.js'
import { startNode, type RunningNode } from '../native-node/node.js'
import { startAnvil, type Anvil } from '../relay/chain/anvil.js'
import { stakeArtifact } from '../relay/chain/compile.js'
import { deployTessera, type Deployment } from '../relay/chain/deploy.js'
import { parseFault } from '../shared/node/fault.js'
import { mulberry32 } from '../shared/rng.js'
import type { GenerationResult } from '../shared/client/types.js'
import { reference, stories } from './helpers/reference.js'
import { tempDir } from './helpers/paths.js'
import { api, waitFor } from './helpers/network.js'

let anvil: Anvil
let d: Deployment
const relays: RunningRelay[] = []
const nodes: RunningNode[] = []
let faulty: RunningNode

beforeAll(async () => {
  const model = tempDir('fedchain-model')
  await buildModel(await stories(), model, { source: 'stories260K.bin', cuts: [2] })
  anvil = await startAnvil()
  const keys = anvil.accounts.slice(1, 4)
  d = await deployTessera({
    rpcUrl: anvil.url,
    privateKey: anvil.accounts[0],
    out: null,
    arbiters: keys.map((k) => privateKeyToAccount(k as `0x${string}`).address),
    threshold: 2
  })
  for (const [i, key] of keys.entries()) {
    relays.push(
      await startRelay({
        httpPort: 0,
        p2pPort: 0,
        models: [model],
        ledger: join(tempDir('fedchain-claims'), 'claims.sqlite'),
        evm: { rpcUrl: anvil.url, chainId: anvil.chainId, stakeAddress: d.stakeAddress, privateKey: key, fromBlock: d.deployBlock, cosignEveryMs: 200 },
        joinStake: 100,
        relays: relays.slice(-1).map((r) => r.nodeAddr), // B knows A, C knows B
        client: { banMs: 1, random: mulberry32(11 + i) }
      })
    )
  }
  const [a] = relays
  // Two honest peers per layer beside the faulty one: a disagreement has a referee.
  for (const layers of [
    [0, 2],
    [0, 2],
    [2, 5],
    [2, 5]
  ] as Array<[number, number]>)
    nodes.push(await startNode({ relay: a.nodeAddr, model, layers }))
  faulty = await startNode({ relay: a.nodeAddr, model, layers: [0, 2], fault: parseFault('random-output') })
  nodes.push(faulty)
  // Staked once, by the relay they announced to; every relay reads the same stake from the chain.
  for (const r of relays) {
    await waitFor(async () => (await r.client.network()).peers.length === 5, 20_000)
    await waitFor(async () => (await Promise.all(nodes.map(async (n) => (await r.ledger.standing(n.peerId)).stake))).every((s) => s === 100), 20_000)
  }
}, 300_000)

afterAll(async () => {
  for (const n of nodes) await n.stop()
  for (const r of relays) await r.stop()
  await anvil?.stop()
})

async function run(relay: RunningRelay, req: Parameters<RunningRelay['client']['generate']>[0]): Promise<GenerationResult> {
  const gen = relay.client.generate(req)
  for (let r = await gen.next(); ; r = await gen.next()) if (r.done === true) return r.value
}

describe('a federation on one chain', () => {
  it('a fault caught by the client of relay B is slashed once, on two relays’ approvals; every relay shows the same standings and audit log', async () => {
    const b = relays[1]
    const cases = reference()
    let reported = 0
    for (let g = 0; g < 40 && reported === 0; g++) {
      const c = cases[g % cases.length]
      const n = Math.min(4, c.decisive_prefix)
      const r = await run(b, { prompt: c.prompt, maxTokens: n, verification: { mode: 'redundant', k: 2 } })
      expect(r.tokens).toEqual(c.greedy.slice(0, n))
      expect(r.verification.faults.every((f) => f.accused === faulty.peerId)).toBe(true)
      reported = r.verification.faults.length
    }
    expect(reported, 'the faulty peer was drawn into a lane within 40 generations').toBeGreaterThan(0)
    // B alone cannot slash: the others re-check the published evidence and approve.
    await waitFor(async () => (await relays[2].ledger.standing(faulty.peerId)).slashed >= 1, 20_000)
    await new Promise((resolve) => setTimeout(resolve, 1500)) // every co-signer's round has passed
    const abi: Abi = (await stakeArtifact()).abi
    const logs = (await createPublicClient({ transport: http(anvil.url, { retryCount: 0 }) }).getContractEvents({
      address: d.stakeAddress,
      abi,
      fromBlock: BigInt(d.deployBlock)
    })) as unknown as Array<{ eventName: string; args: Record<string, unknown> }>
    const slashed = logs.filter((l) => l.eventName === 'Slashed')
    const published = logs.filter((l) => l.eventName === 'EvidencePublished')
    // Once per evidence, however many relays approved it.
    expect(slashed.length).toBeGreaterThanOrEqual(1)
    expect(new Set(slashed.map((l) => l.args.evidenceId)).size).toBe(slashed.length)
    expect(slashed.every((l) => published.some((p) => p.args.evidenceId === l.args.evidenceId))).toBe(true)
    const approvers = new Set(logs.filter((l) => l.eventName === 'Approved' && l.args.evidenceId === slashed[0].args.evidenceId).map((l) => l.args.arbiter))
    expect(approvers.size).toBeGreaterThanOrEqual(2)
    const views = await Promise.all(relays.map(async (r) => await api(r.httpUrl, '/api/ledger')))
    for (const v of views) {
      expect(v.chainOk).toBe(true)
      expect(v.standings).toEqual(views[0].standings)
      expect(v.audit).toEqual(views[0].audit)
    }
    const standing = views[0].standings.find((s: { peer: string }) => s.peer === faulty.peerId)
    expect(standing.slashed).toBe(slashed.length)
    for (const n of nodes.filter((x) => x !== faulty)) expect(views[0].standings.find((s: { peer: string }) => s.peer === n.peerId).slashed).toBe(0)
    console.log(
      `federation on chain: ${slashed.length} slash(es) of the faulty node, each approved by ${approvers.size} of 3 arbiters; ` +
        `${published.length} evidence published; all 3 relays show the same ${views[0].standings.length} standings`
    )
  }, 300_000)
})
