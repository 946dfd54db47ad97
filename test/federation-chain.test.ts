/**
 * Slashing in a federation, as real processes on loopback: three `tessera relay` processes that
 * do not trust each other share one TesseraStake on a local anvil, each relay an arbiter with its
 * own key, two approvals needed. A faulty node announced to relay A is caught through relay B's
 * HTTP API (redundant execution); B publishes the evidence and approves, A and C re-check it with
 * their own checkers and approve, and the node is slashed once per evidence. Every relay then
 * shows the same standings and the same audit log, rebuilt from the chain.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { privateKeyToAccount } from 'viem/accounts'
import { buildModel } from '../host/model-store.js'
import { startAnvil, type Anvil } from '../relay/chain/anvil.js'
import { deployTessera, type Deployment } from '../relay/chain/deploy.js'
import { reference, stories } from './helpers/reference.js'
import { tempDir } from './helpers/paths.js'
import { api, spawnRelay, spawnTessera, waitFor, type Proc } from './helpers/network.js'
import { contractEvents } from './helpers/chain-events.js'

let anvil: Anvil
let d: Deployment
const relays: Proc[] = []
const nodes: Proc[] = []
let faulty: Proc
const procs: Proc[] = []

beforeAll(async () => {
  const model = tempDir('fedchain-model')
  await buildModel(await stories(), model, { source: 'stories260K.bin', cuts: [2] })
  anvil = await startAnvil()
  const keys = anvil.accounts.slice(1, 4)
  const file = join(tempDir('fedchain-deploy'), 'chain.json')
  d = await deployTessera({
    rpcUrl: anvil.url,
    privateKey: anvil.accounts[0],
    out: file,
    arbiters: keys.map((k) => privateKeyToAccount(k as `0x${string}`).address),
    threshold: 2
  })
  for (const key of keys) {
    const peers = relays.slice(-1).flatMap((r) => ['--peer-relay', r.ready.nodeRelay]) // B knows A, C knows B
    const r = await spawnRelay(model, { extra: ['--ledger', 'evm', '--chain', file, '--chain-key', key, '--join-stake', '100', ...peers] })
    relays.push(r)
    procs.push(r)
  }
  // Two honest peers per layer beside the faulty one, all announced to A: a disagreement has a referee.
  const a = relays[0]
  const spawn = async (layers: string, extra: string[] = []): Promise<Proc> => {
    const p = await spawnTessera(['node', '--relay', a.ready.nodeRelay, '--model', model, '--layers', layers, ...extra])
    procs.push(p)
    return p
  }
  nodes.push(...(await Promise.all(['0-2', '0-2', '2-5', '2-5'].map(async (l) => await spawn(l)))))
  faulty = await spawn('0-2', ['--fault', 'random-output'])
  nodes.push(faulty)
  // Staked once, by the relay they announced to; every relay reads the same stakes from the chain.
  for (const r of relays) {
    await waitFor(async () => (await api(r.ready.http, '/api/network')).peers.length === 5, 30_000)
    await waitFor(async () => {
      const { standings } = await api(r.ready.http, '/api/ledger')
      return nodes.every((n) => standings.find((s: { peer: string }) => s.peer === n.ready.peer)?.stake === 100)
    }, 30_000)
  }
}, 300_000)

afterAll(async () => {
  for (const p of procs) if (p.proc.exitCode === null) p.proc.kill('SIGKILL')
  await anvil?.stop()
})

describe('a federation of relay processes on one chain', () => {
  it('a fault caught through relay B is slashed once, on two relays’ approvals; every relay shows the same standings and audit log', async () => {
    const b = relays[1]
    const cases = reference()
    let reported = 0
    for (let g = 0; g < 40 && reported === 0; g++) {
      const c = cases[g % cases.length]
      const n = Math.min(4, c.decisive_prefix)
      const r = await api(b.ready.http, '/v1/completions', { prompt: c.prompt, max_tokens: n, temperature: 0, verification: { mode: 'redundant', k: 2 } })
      expect(r.tessera.tokens).toEqual(c.greedy.slice(0, n))
      const faults = r.tessera.verification.faults as Array<{ accused: string }>
      expect(faults.every((f) => f.accused === faulty.ready.peer)).toBe(true)
      reported = faults.length
    }
    expect(reported, 'the faulty peer was drawn into a lane within 40 generations').toBeGreaterThan(0)
    // B alone cannot slash: the others re-check the published evidence and approve.
    const standing = async (r: Proc, peer: string) => (await api(r.ready.http, '/api/ledger')).standings.find((s: { peer: string }) => s.peer === peer)
    await waitFor(async () => (await standing(relays[2], faulty.ready.peer))?.slashed >= 1, 30_000)
    await new Promise((resolve) => setTimeout(resolve, 3000)) // every co-signer's round has passed
    const logs = await contractEvents(anvil.url, d)
    const slashed = logs.filter((l) => l.eventName === 'Slashed')
    const published = logs.filter((l) => l.eventName === 'EvidencePublished')
    // Once per evidence, however many relays approved it.
    expect(slashed.length).toBeGreaterThanOrEqual(1)
    expect(new Set(slashed.map((l) => l.args.evidenceId)).size).toBe(slashed.length)
    expect(slashed.every((l) => published.some((p) => p.args.evidenceId === l.args.evidenceId))).toBe(true)
    const approvers = new Set(logs.filter((l) => l.eventName === 'Approved' && l.args.evidenceId === slashed[0].args.evidenceId).map((l) => l.args.arbiter))
    expect(approvers.size).toBeGreaterThanOrEqual(2)
    const views = await Promise.all(relays.map(async (r) => await api(r.ready.http, '/api/ledger')))
    for (const v of views) {
      expect(v.chainOk).toBe(true)
      expect(v.standings).toEqual(views[0].standings)
      expect(v.audit).toEqual(views[0].audit)
    }
    const of = (peer: string) => views[0].standings.find((s: { peer: string }) => s.peer === peer)
    expect(of(faulty.ready.peer).slashed).toBe(slashed.length)
    for (const n of nodes.filter((x) => x !== faulty)) expect(of(n.ready.peer).slashed).toBe(0)
    console.log(
      `federation on chain: ${slashed.length} slash(es) of the faulty node, each approved by ${approvers.size} of 3 arbiters; ` +
        `${published.length} evidence published; all 3 relays show the same ${views[0].standings.length} standings`
    )
  }, 300_000)
})
