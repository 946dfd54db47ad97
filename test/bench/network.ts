/**
 * Network benchmarks (measure, never assert): decode through 2 and 4 native nodes on loopback
 * divided by the same model's decode in one process, and the per-hop overhead (round trip
 * minus the node's compute) for hidden size 4096.
 */
import { join } from 'node:path'
import { startRelay } from '../../relay/relay.js'
import { buildModel } from '../../host/model-store.js'
import { loadModel } from '../../native-node/store.js'
import { randomWeights } from '../../shared/model/random.js'
import { preset, type LlamaConfig } from '../../shared/model/config.js'
import { Pipeline, generate } from '../../shared/pipeline.js'
import type { Client } from '../../shared/client/client.js'
import { spawnTessera, waitFor, type Proc } from '../helpers/network.js'
import { tempDir } from '../helpers/paths.js'
import { ensureModel } from './spine.js'
import { median } from './median.js'
import { echoFloor, hopInPlace, hopStages, marksFromLog, signAfterIdle } from './hop.js'
import { hopMarksInto, monotonicUs, type HopMarkRecord } from '../../host/hop-marks.js'
import { useHopMarks } from '../../shared/hop-marks.js'

const PROMPT = Array.from({ length: 16 }, (_, i) => 1 + i * 3) // ids < 64: every model here has them

/** One-process configurations tried for the baseline: onnxruntime's default threads, spinning or not. */
const LOCAL_CONFIGS: Array<{ spin: boolean }> = [{ spin: true }, { spin: false }]

/** The best one-process decode of the configurations, each measured once: what the network is divided by. */
async function bestLocal(dir: string, tokens: number): Promise<{ tps: number; spin: boolean }> {
  let best = { tps: 0, spin: true }
  for (const c of LOCAL_CONFIGS) {
    const tps = await localTokensPerSecond(dir, tokens, c.spin)
    if (tps > best.tps) best = { tps, spin: c.spin }
  }
  return best
}

async function localTokensPerSecond(dir: string, tokens: number, spin: boolean): Promise<number> {
  const { runners } = await loadModel(dir, { device: 'cpu', spin })
  const p = new Pipeline(runners.map((r) => r.open()))
  // Warmed with a generation as long as the measured one, as the network is: the caches' first
  // runs at each capacity (64 rows, then 128) are slow ones, and must not fall on one side only.
  for await (const _ of generate(p, { prompt: PROMPT, maxTokens: tokens + 1 })) {
    /* warm */
  }
  p.close()
  const q = new Pipeline(runners.map((r) => r.open()))
  let t0 = 0
  let n = 0
  for await (const _ of generate(q, { prompt: PROMPT, maxTokens: tokens + 1 })) {
    if (n++ === 0) t0 = performance.now()
  }
  const tps = tokens / ((performance.now() - t0) / 1000)
  q.close()
  for (const r of runners) await r.dispose()
  return tps
}

/** `onMeasured` runs between the warm-up and the measured generation. */
async function remoteDecode(client: Client, tokens: number, onMeasured?: () => void): Promise<{ tps: number; overheadMs: number; roundTripMs: number }> {
  const warm = client.generate({ prompt: PROMPT, maxTokens: tokens + 1 }) // as long as the measured one (see localTokensPerSecond)
  while ((await warm.next()).done !== true) {
    /* warm */
  }
  onMeasured?.()
  const gen = client.generate({ prompt: PROMPT, maxTokens: tokens + 1 })
  let t0 = 0
  let n = 0
  const overhead: number[] = []
  const roundTrip: number[] = []
  for (let r = await gen.next(); r.done !== true; r = await gen.next()) {
    if (n++ === 0) {
      t0 = performance.now()
      continue
    }
    for (const h of r.value.hops) {
      overhead.push(h.ms - (h.nodeMs ?? 0))
      roundTrip.push(h.ms)
    }
  }
  return { tps: tokens / ((performance.now() - t0) / 1000), overheadMs: median(overhead), roundTripMs: median(roundTrip) }
}

/** Relay in this process, `groups` nodes as child processes; returns a stop function. */
async function network(dir: string, groups: string[], env?: Record<string, string>): Promise<{ client: Client; nodes: Proc[]; stop: () => Promise<void> }> {
  const relay = await startRelay({ httpPort: 0, p2pPort: 0, models: [], ledger: join(tempDir('bench-ledger'), 'ledger.sqlite') })
  const nodes: Proc[] = await Promise.all(
    groups.map(async (l) => await spawnTessera(['node', '--relay', relay.nodeAddr, '--model', dir, '--layers', l, '--device', 'cpu'], 300_000, env))
  )
  await waitFor(async () => (await relay.client.network()).peers.length === groups.length)
  return {
    client: relay.client,
    nodes,
    async stop() {
      for (const n of nodes) n.proc.kill('SIGTERM')
      await relay.stop()
    }
  }
}

function groupsOf(c: LlamaConfig, nodes: number): string[] {
  return Array.from({ length: nodes }, (_, i) => `${Math.round((i * c.nLayers) / nodes)}-${Math.round(((i + 1) * c.nLayers) / nodes)}`)
}

export async function benchNetwork(cacheDir: string, presets = ['small', 'medium'], tokens = 64): Promise<Record<string, unknown>> {
  const rows = []
  for (const name of presets) {
    const dir = await ensureModel(cacheDir, name, 'fp32', 4)
    const c = preset(name)
    // The baseline interleaved with the network runs: its best configuration before and after each.
    let before = await bestLocal(dir, tokens)
    for (const nodes of [2, 4]) {
      const net = await network(dir, groupsOf(c, nodes))
      let r: Awaited<ReturnType<typeof remoteDecode>>
      try {
        r = await remoteDecode(net.client, tokens)
      } finally {
        await net.stop()
      }
      const after = await bestLocal(dir, tokens)
      const best = after.tps > before.tps ? after : before
      before = after
      const local = best.tps
      rows.push({
        preset: name,
        nodes,
        localTokensPerSecond: local,
        localSpin: best.spin,
        networkTokensPerSecond: r.tps,
        ratio: r.tps / local,
        medianHopOverheadMs: r.overheadMs
      })
      console.log(
        `${name}: ${nodes} nodes ${r.tps.toFixed(1)} tokens/s vs one process at best ${local.toFixed(1)} (spinning ${best.spin}) → ratio ${(r.tps / local).toFixed(2)}` +
          `; median per-hop overhead ${r.overheadMs.toFixed(2)} ms`
      )
    }
  }

  // Per-hop overhead at hidden size 4096: a 2-layer model as wide as Llama-7B's residual stream
  // (narrow elsewhere, so compute stays small and the hop's transport cost shows).
  const wide: LlamaConfig = { ...preset('tiny'), dim: 4096, hiddenDim: 64, nLayers: 2, nHeads: 32, nKvHeads: 8, vocabSize: 64, maxSeqLen: 256 }
  const wideDir = join(cacheDir, 'wide4096-int4-2')
  await buildModel(randomWeights(wide, 1), wideDir, { source: 'bench:wide4096', dtype: 'int4', shards: 2 })
  // Nodes and this client mark each step's stages (host/hop-marks.ts) for the anatomy in place.
  const net = await network(wideDir, ['0-1', '1-2'], { TESSERA_HOP_MARKS: '1' })
  const clientMarks: HopMarkRecord[] = []
  hopMarksInto(clientMarks)
  let hop
  let inPlace
  try {
    let since = 0
    hop = await remoteDecode(net.client, tokens, () => {
      since = monotonicUs()
    })
    console.log(
      `hidden 4096: median per-hop overhead ${hop.overheadMs.toFixed(2)} ms` +
        ` (round trip minus node compute, ${((4096 * 4) / 1024).toFixed(0)} KiB of activations per token)`
    )
    await new Promise((r) => setTimeout(r, 300)) // the nodes write their marks every 100 ms
    inPlace = hopInPlace([...clientMarks, ...net.nodes.flatMap((n) => marksFromLog(n.log))], since)
  } finally {
    useHopMarks(undefined)
    await net.stop()
  }
  // Each node of the 2-node pipeline idles while the other hop runs: the echo at that cadence is the fair floor.
  const floor = await echoFloor(4096 * 4, hop.roundTripMs)
  const stages = await hopStages(4096)
  const idle = await signAfterIdle(hop.roundTripMs)
  const ours = stages.filter((st) => st.inOverhead !== false).reduce((a, st) => a + st.us / 1000, 0)
  for (const st of stages) console.log(`  ${st.side.padEnd(6)} ${st.stage.padEnd(48)} ${st.us.toFixed(1).padStart(7)} µs`)
  console.log(
    `in place (medians of ${inPlace.steps} steps): to the node ${inPlace.toNodeMs.toFixed(3)} ms, checks ${inPlace.checksMs.toFixed(3)},` +
      ` compute ${inPlace.computeMs.toFixed(3)}, fingerprint + receipt ${inPlace.receiptMs.toFixed(3)}, write ${inPlace.writeMs.toFixed(3)},` +
      ` to the client ${inPlace.toClientMs.toFixed(3)}; round trip ${inPlace.roundTripMs.toFixed(3)} ms;` +
      ` an Ed25519 signature ${idle.hotUs.toFixed(0)} µs back to back, ${idle.idleUs.toFixed(0)} µs after ${idle.gapMs.toFixed(1)} ms idle`
  )
  console.log(
    `bare libp2p echo of 16 KiB: ${floor.inProcessMs.toFixed(2)} ms in one process, ${floor.crossProcessMs.toFixed(2)} ms between two,` +
      ` ${floor.cadenceMs.toFixed(2)} ms between two at the hop's cadence (${floor.gapMs.toFixed(1)} ms idle before each);` +
      ` hop overhead ${hop.overheadMs.toFixed(2)} ms = our stages ${ours.toFixed(2)} + transport ${(hop.overheadMs - ours).toFixed(2)};` +
      ` ÷ the echo at the hop's cadence ${(hop.overheadMs / floor.cadenceMs).toFixed(2)}`
  )
  return {
    decode: rows,
    hop4096: {
      medianOverheadMs: hop.overheadMs,
      roundTripMs: hop.roundTripMs,
      tokensPerSecond: hop.tps,
      echoMs: floor.inProcessMs,
      echo: floor,
      stages,
      inPlace,
      signIdle: idle
    }
  }
}
