/**
 * What verification costs: a hop's receipt work (input chain, fingerprint, signature on the
 * node; the check on the client) as a share of the hop's compute, receipt bytes per token, and
 * the latency of `redundant` (k = 2) and `spot` (p = 0.2) generations over `none`.
 */
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { existsSync } from 'node:fs'
import { buildModel, readManifest } from '../../host/model-store.js'
import { loadModel, loadShard } from '../../native-node/store.js'
import { loadShardNode } from '../../native-node/ort.js'
import { tamperShard } from '../../native-node/fault.js'
import { mulberry32 } from '../../shared/rng.js'
import { stories } from '../helpers/reference.js'
import { startRelay } from '../../relay/relay.js'
import { preset } from '../../shared/model/config.js'
import { compareFingerprints, fingerprint, encodeFingerprint } from '../../shared/verify/fingerprint.js'
import { chainRows, EMPTY_CHAIN, signReceipt, verifyReceipt } from '../../shared/verify/receipt.js'
import { nativeSigner } from '../../host/native-crypto.js'
import { layerLeaf, merkleRoot } from '../../shared/verify/merkle.js'
import type { HopOutput, ShardRunner } from '../../shared/runner.js'
import type { VerificationOptions } from '../../shared/client/types.js'
import { spawnTessera, waitFor, type Proc } from '../helpers/network.js'
import { tempDir } from '../helpers/paths.js'
import { ensureModel } from './spine.js'
import { median } from './median.js'
import { kvLayout } from '../../shared/shard/build.js'

export interface ReceiptCost {
  computeMs: number
  fingerprintMs: number
  fingerprintPercent: number
  nodeReceiptMs: number
  nodeReceiptPercent: number
  clientCheckMs: number
  clientCheckPercent: number
  receiptBytesPerDecodeToken: number
}

/** Decode steps through one shard; per step: node compute, the node's receipt work, the client's check. */
async function receiptCost(runner: ShardRunner, dim: number, steps: number): Promise<ReceiptCost> {
  const key = await generateKeyPair('Ed25519')
  const sign = nativeSigner(key)
  const peer = peerIdFromPrivateKey(key).toString()
  const first = runner.shard.layers[0] === 0
  const s = runner.open()
  const compute: number[] = []
  const fp: number[] = []
  const node: number[] = []
  const client: number[] = []
  let bytesPerToken = 0
  let chain: Uint8Array = EMPTY_CHAIN
  for (let i = 0; i < steps; i++) {
    const tokens = Int32Array.of(1 + (i % 100))
    const hidden = new Float32Array(dim).fill(0.01 * (i % 7))
    const input = first ? { tokens } : { hidden, seq: 1 }
    const bytes = new Uint8Array((first ? tokens : hidden).buffer)
    let t = performance.now()
    const out: HopOutput = await s.forward(input)
    compute.push(performance.now() - t)
    t = performance.now()
    const f = encodeFingerprint(fingerprint(out.data, out.seq, out.width))
    fp.push(performance.now() - t)
    t = performance.now()
    const next = chainRows(chain, bytes, 1)
    // The per-layer commitment as serve.ts makes it: each block's fingerprint, a Merkle root.
    const leaves = (out.layers ?? []).map((l, k) => layerLeaf(runner.shard.layers[0] + k, fingerprint(l, out.seq, l.length / out.seq)))
    const body = {
      peer,
      session: 'bench',
      step: i,
      root: 'ab'.repeat(32),
      layers: runner.shard.layers,
      start: i,
      input: next,
      output: f,
      ...(leaves.length > 0 ? { trace: merkleRoot(leaves) } : {})
    }
    const receipt = await signReceipt(body, sign) // as a native node signs (host/native-crypto.ts)
    node.push(performance.now() - t + fp[fp.length - 1])
    // The client extends the same chain and checks signature, fields and fingerprint.
    t = performance.now()
    const expected = chainRows(chain, bytes, 1)
    await verifyReceipt(receipt, { ...body, input: expected, output: { data: out.data, seq: out.seq, width: out.width } })
    client.push(performance.now() - t)
    chain = next
    bytesPerToken = receipt.byteLength
  }
  s.close()
  const c = median(compute)
  return {
    computeMs: c,
    fingerprintMs: median(fp),
    fingerprintPercent: (100 * median(fp)) / c,
    nodeReceiptMs: median(node),
    nodeReceiptPercent: (100 * median(node)) / c,
    clientCheckMs: median(client),
    clientCheckPercent: (100 * median(client)) / c,
    receiptBytesPerDecodeToken: bytesPerToken
  }
}

/** Receipt bytes per token of a prefill of `n` tokens (the fingerprint grows with positions, the rest does not). */
async function prefillReceiptBytes(n: number): Promise<number> {
  const key = await generateKeyPair('Ed25519')
  const out = new Float32Array(n * 64).map((_, i) => Math.sin(i))
  const r = await signReceipt(
    {
      peer: peerIdFromPrivateKey(key).toString(),
      session: 'bench',
      step: 0,
      root: 'ab'.repeat(32),
      layers: [0, 2],
      start: 0,
      input: EMPTY_CHAIN,
      output: encodeFingerprint(fingerprint(out, n, 64))
    },
    async (b) => await key.sign(b)
  )
  return r.byteLength / n
}

async function modeLatency(dir: string, groups: string[], tokens: number): Promise<Record<string, number>> {
  const relay = await startRelay({ httpPort: 0, p2pPort: 0, models: [], ledger: join(tempDir('bench-ledger'), 'ledger.sqlite') })
  const nodes: Proc[] = await Promise.all(
    groups.map(async (l) => await spawnTessera(['node', '--relay', relay.nodeAddr, '--model', dir, '--layers', l, '--device', 'cpu'], 300_000))
  )
  try {
    await waitFor(async () => (await relay.client.network()).peers.length === groups.length)
    const time = async (verification: VerificationOptions): Promise<number> => {
      const t = performance.now()
      const gen = relay.client.generate({ prompt: [1, 2, 3, 4], maxTokens: tokens, verification })
      for (let r = await gen.next(); r.done !== true; r = await gen.next()) {
        /* drain */
      }
      return performance.now() - t
    }
    // Warm every node (first runs of each shape are slow), then interleave the modes so drift hits all alike.
    for (let i = 0; i < 3; i++) await time({ mode: 'redundant', k: 2 })
    const runs: Record<'none' | 'redundant' | 'spot', number[]> = { none: [], redundant: [], spot: [] }
    for (let round = 0; round < 7; round++) {
      runs.none.push(await time({ mode: 'none' }))
      runs.redundant.push(await time({ mode: 'redundant', k: 2 }))
      runs.spot.push(await time({ mode: 'spot', p: 0.2 }))
    }
    const none = median(runs.none)
    const redundant = median(runs.redundant)
    const spot = median(runs.spot)
    return { noneMs: none, redundantMs: redundant, spotMs: spot, redundantOverNone: redundant / none, spotOverNone: spot / none }
  } finally {
    for (const n of nodes) n.proc.kill('SIGTERM')
    await relay.stop()
  }
}

/**
 * How small a weight perturbation the fingerprints see: the share of single hop-steps (a prefill
 * or one decode step of shard [0,2) of stories260K) whose fingerprint a `perturb=EPS` node gets
 * wrong, for several EPS. Redundant mode catches a generation if any of its steps is caught.
 */
async function perturbSensitivity(cacheDir: string): Promise<Array<{ eps: number; hopSteps: number; caught: number }>> {
  const dir = join(cacheDir, `stories260K-cut2-${kvLayout()}`) // the default layout in the name: a build made under another default must not stand in
  if (!existsSync(join(dir, 'manifest.json'))) await buildModel(await stories(), dir, { source: 'stories260K.bin', cuts: [2] })
  const manifest = await readManifest(dir)
  const shard = manifest.shards[0]
  const honest = await loadShard(dir, manifest, 0, { device: 'cpu' })
  const rand = mulberry32(5)
  const prompts = Array.from({ length: 20 }, (_, i) => Array.from({ length: 1 + ((i * 7) % 30) }, () => 1 + Math.floor(rand() * 500)))
  const rows = []
  for (const eps of [0.002, 0.005, 0.01, 0.02, 0.05]) {
    const bad = await loadShardNode(await tamperShard(dir, shard, { kind: 'perturb', eps }), shard, manifest.config, { device: 'cpu' })
    let hopSteps = 0
    let caught = 0
    for (const prompt of prompts) {
      const a = honest.open()
      const b = bad.open()
      for (const tokens of [prompt, ...prompt.slice(0, 8).map((t) => [t])]) {
        const x = await a.forward({ tokens })
        const y = await b.forward({ tokens })
        hopSteps++
        if (compareFingerprints(fingerprint(x.data, x.seq, x.width), fingerprint(y.data, y.seq, y.width)).verdict === 'mismatch') caught++
      }
      a.close()
      b.close()
    }
    await bad.dispose()
    rows.push({ eps, hopSteps, caught })
    console.log(`perturb=${eps}: ${caught} of ${hopSteps} hop-steps caught (${((100 * caught) / hopSteps).toFixed(1)}%)`)
  }
  await honest.dispose()
  return rows
}

/**
 * What an optimistic watcher saves by auditing in one prefill: 128 rows through a middle shard
 * step by step (as the peer that generated them did) vs all at once.
 */
async function auditSpeedup(runner: ShardRunner, dim: number, rows = 128): Promise<{ rows: number; decodeMs: number; prefillMs: number; speedup: number }> {
  const hidden = new Float32Array(rows * dim).map((_, i) => Math.sin(i) * 0.1)
  const time = async (chunk: number): Promise<number> => {
    const best = []
    for (let run = 0; run < 3; run++) {
      const s = runner.open()
      const t = performance.now()
      for (let r = 0; r < rows; r += chunk) await s.forward({ hidden: hidden.subarray(r * dim, (r + chunk) * dim), seq: chunk })
      best.push(performance.now() - t)
      s.close()
    }
    return Math.min(...best)
  }
  const decodeMs = await time(1)
  const prefillMs = await time(rows)
  return { rows, decodeMs, prefillMs, speedup: decodeMs / prefillMs }
}

/**
 * What a dispute costs the referee: one block (the middle one) of a whole-model shard re-executed
 * over `rows` rows, vs the whole shard over the same rows (what a referee without per-layer
 * commitments replays). The part's one-time load is reported apart.
 */
async function disputeCost(
  runner: ShardRunner,
  vocab: number,
  rows = 128
): Promise<{ rows: number; blocks: number; layer: number; partLoadMs: number; blockMs: number; shardMs: number; saving: number }> {
  const [a, b] = runner.shard.layers
  const layer = (a + b) >> 1
  const tokens = Array.from({ length: rows }, (_, i) => 1 + ((i * 37) % (vocab - 1)))
  const s = runner.open()
  const out = await s.forward({ tokens })
  s.close()
  const entering = { hidden: out.layers![layer - a - 1], seq: rows }
  const t0 = performance.now()
  await runner.runPart!(layer, entering)
  const partLoadMs = performance.now() - t0
  const best = async (f: () => Promise<unknown>): Promise<number> => {
    const times = []
    for (let i = 0; i < 5; i++) {
      const t = performance.now()
      await f()
      times.push(performance.now() - t)
    }
    return Math.min(...times)
  }
  const blockMs = await best(async () => await runner.runPart!(layer, entering))
  const shardMs = await best(async () => {
    const x = runner.open()
    await x.forward({ tokens })
    x.close()
  })
  return { rows, blocks: b - a, layer, partLoadMs, blockMs, shardMs, saving: shardMs / blockMs }
}

export async function benchVerify(cacheDir: string): Promise<Record<string, unknown>> {
  const sensitivity = await perturbSensitivity(cacheDir)
  const costs = []
  const audits = []
  for (const name of ['small', 'medium']) {
    const dir = await ensureModel(cacheDir, name, 'fp32', 4)
    const c = preset(name)
    const { runners } = await loadModel(dir, { device: 'cpu' })
    const audit = { preset: name, layers: runners[1].shard.layers, ...(await auditSpeedup(runners[1], c.dim)) }
    audits.push(audit)
    console.log(
      `${name} [${audit.layers.join(',')}): ${audit.rows} generated rows re-executed step by step ${audit.decodeMs.toFixed(0)} ms` +
        `, in one prefill ${audit.prefillMs.toFixed(0)} ms: × ${audit.speedup.toFixed(1)} faster (an optimistic watcher's audit)`
    )
    // A middle shard (hidden states out) and the last (logits out: the widest rows to fingerprint).
    for (const r of [runners[1], runners[runners.length - 1]]) {
      const row = { preset: name, layers: r.shard.layers, ...(await receiptCost(r, c.dim, 48)) }
      costs.push(row)
      console.log(
        `${name} [${r.shard.layers.join(',')}): hop compute ${row.computeMs.toFixed(2)}` +
          ` ms; fingerprint ${row.fingerprintMs.toFixed(3)} ms (${row.fingerprintPercent.toFixed(1)}%)` +
          `, node's whole receipt ${row.nodeReceiptMs.toFixed(3)} ms (${row.nodeReceiptPercent.toFixed(1)}%)` +
          `, client's check ${row.clientCheckMs.toFixed(3)} ms (${row.clientCheckPercent.toFixed(1)}%)` +
          `; receipt ${row.receiptBytesPerDecodeToken} bytes per decode token`
      )
    }
    for (const r of runners) await r.dispose()
  }
  const disputes = []
  for (const name of ['small', 'medium']) {
    const dir = await ensureModel(cacheDir, name, 'fp32', 1)
    const { runners } = await loadModel(dir, { device: 'cpu' })
    const d = { preset: name, ...(await disputeCost(runners[0], preset(name).vocabSize)) }
    disputes.push(d)
    console.log(
      `${name}: a referee re-executes block ${d.layer} of ${d.blocks} over ${d.rows} rows in ${d.blockMs.toFixed(1)} ms` +
        ` (its graph loads once in ${d.partLoadMs.toFixed(0)} ms) vs the whole shard in ${d.shardMs.toFixed(1)} ms` +
        `: 1 block instead of ${d.blocks} (+ head), × ${d.saving.toFixed(1)} less work`
    )
    for (const r of runners) await r.dispose()
  }
  const prefill = { tokens: 64, bytesPerToken: await prefillReceiptBytes(64) }
  console.log(`prefill of ${prefill.tokens} tokens: ${prefill.bytesPerToken.toFixed(1)} receipt bytes per token`)

  // Two nodes per hop: what redundant k = 2 needs, and a checker for spot.
  const dir = await ensureModel(cacheDir, 'small', 'fp32', 4)
  const tokens = 32
  const latency = await modeLatency(dir, ['0-4', '0-4', '4-8', '4-8'], tokens)
  console.log(
    `small, 2 hops × 2 nodes, ${tokens} tokens, median of 7 interleaved runs: none ${latency.noneMs.toFixed(0)} ms` +
      `, redundant k=2 ${latency.redundantMs.toFixed(0)} ms (× ${latency.redundantOverNone.toFixed(2)})` +
      `, spot p=0.2 ${latency.spotMs.toFixed(0)} ms (× ${latency.spotOverNone.toFixed(2)})` +
      ` — all processes share this machine's cores`
  )
  return {
    receipt: costs,
    prefill,
    latency: { preset: 'small', tokens, ...latency },
    perturbSensitivity: sensitivity,
    optimisticAudit: audits,
    disputeCost: disputes
  }
}
