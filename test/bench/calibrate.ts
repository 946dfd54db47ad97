/**
 * The simulator against reality: one topology run for real on loopback (a relay and native nodes
 * as processes, `small` fp32 in two hops, a spare for the second) and in the simulator with the
 * figures measured in that very run (each hop's compute from the nodes' marks, each hop's round
 * trip less its compute as the link). Tokens/s side by side, and the time a kill -9 of the second
 * hop's node mid-generation holds the next token back.
 */
import { join } from 'node:path'
import { startRelay } from '../../relay/relay.js'
import { createClient, type Client } from '../../shared/client/client.js'
import type { Generator } from '../../shared/client/types.js'
import { mulberry32 } from '../../shared/rng.js'
import { preset } from '../../shared/model/config.js'
import { useHopMarks } from '../../shared/hop-marks.js'
import { hopMarksInto, monotonicUs, type HopMarkRecord } from '../../host/hop-marks.js'
import { simNetwork, type SimPeer } from '../../sim/network.js'
import { simulate } from '../../sim/run.js'
import { spawnTessera, waitFor, type Proc } from '../helpers/network.js'
import { tempDir } from '../helpers/paths.js'
import { ensureModel } from './spine.js'
import { hopInPlace, marksFromLog } from './hop.js'
import { median } from './median.js'

const PROMPT = Array.from({ length: 16 }, (_, i) => 1 + i * 3)
const TOKENS = 64
const KILL_AT = 32

interface Hop {
  layers: [number, number]
  computeMs: number
  roundTripMs: number
  /** The prompt's step through the hop, for the per-row prefill cost a replay pays. */
  prefillComputeMs: number
}

/** Token times (ms, the caller's clock) of a generation; `onToken` may act at each. */
async function timed(
  g: Generator,
  maxTokens: number,
  onToken?: (i: number, hops: Array<{ peer: string; layers: [number, number] }>) => void
): Promise<number[]> {
  const at: number[] = []
  const gen = g.generate({ prompt: PROMPT, maxTokens })
  for (let r = await gen.next(); r.done !== true; r = await gen.next()) {
    at.push(performance.now())
    onToken?.(at.length - 1, r.value.hops)
  }
  return at
}
const tps = (at: number[]): number => (at.length - 1) / ((at[at.length - 1] - at[0]) / 1000)
/** How long the longest gap held the next token back, past the median gap. */
const heldUp = (at: number[]): number => {
  const gaps = at.slice(1).map((t, i) => t - at[i])
  return Math.max(...gaps) - median(gaps)
}

/** Where a failover's gap goes, from the marks of the hop at `hop` (µs): the spare has the replay, its compute, the rest until the next token. */
interface FailoverParts {
  /** The kill to the spare having the replay's step: the failure seen, a new route, a dial, the send. */
  toSpareMs: number
  /** The replay's compute on the spare: the whole history as one step. */
  replayMs: number
  /** The spare's result to the next token at the client. */
  restMs: number
}
function failoverParts(marks: HopMarkRecord[], hop: number, killUs: number, tokenUs: number): FailoverParts | undefined {
  const read = marks.filter((m) => m.hop === hop && m.mark === 'node:read' && m.us >= killUs).sort((a, b) => a.us - b.us)[0]
  if (read === undefined) return undefined
  const at = (mark: HopMarkRecord['mark']): number => marks.find((m) => m.session === read.session && m.step === read.step && m.mark === mark)?.us ?? Number.NaN
  return { toSpareMs: (read.us - killUs) / 1000, replayMs: (at('node:computed') - at('node:start')) / 1000, restMs: (tokenUs - at('node:computed')) / 1000 }
}

export async function benchCalibrate(cacheDir: string): Promise<Record<string, unknown>> {
  const dir = await ensureModel(cacheDir, 'small', 'fp32', 4)
  const c = preset('small')
  const groups = ['0-4', '4-8', '4-8'] // the second hop twice: the spare takes over after the kill
  const relay = await startRelay({ httpPort: 0, p2pPort: 0, models: [], ledger: join(tempDir('bench-ledger'), 'ledger.sqlite') })
  const nodes: Proc[] = []
  let real: { tokensPerSecond: number; heldUpMs: number; hops: Hop[]; failover?: FailoverParts }
  try {
    nodes.push(
      ...(await Promise.all(
        groups.map(
          async (l) =>
            await spawnTessera(['node', '--relay', relay.nodeAddr, '--model', dir, '--layers', l, '--device', 'cpu'], 300_000, { TESSERA_HOP_MARKS: '1' })
        )
      ))
    )
    await waitFor(async () => (await relay.client.network()).peers.length === groups.length)
    const client: Client = relay.client
    await timed(client, TOKENS) // warm
    const marks: HopMarkRecord[] = []
    hopMarksInto(marks)
    const since = monotonicUs()
    const at = await timed(client, TOKENS)
    useHopMarks(undefined)
    await new Promise((r) => setTimeout(r, 300)) // the nodes write their marks every 100 ms
    const all = [...marks, ...nodes.flatMap((n) => marksFromLog(n.log))]
    const hops: Hop[] = [0, 4].map((first) => {
      const mine = all.filter((m) => m.hop === first && m.us >= since)
      const p = hopInPlace(mine, since)
      const step0 = (mark: string): number | undefined => mine.find((m) => m.step === 0 && m.mark === mark)?.us
      return {
        layers: [first, first + 4],
        computeMs: p.computeMs,
        roundTripMs: p.roundTripMs,
        prefillComputeMs: ((step0('node:computed') ?? 0) - (step0('node:start') ?? 0)) / 1000
      }
    })
    // kill -9 of the second hop's node once KILL_AT tokens are out.
    const byPeer = new Map(nodes.map((n) => [n.ready.peer as string, n]))
    let killUs = 0
    let tokenUs = 0
    let victim: string | undefined
    const failed = await timed(client, TOKENS + KILL_AT, (i, route) => {
      if (i === KILL_AT + 1) tokenUs = monotonicUs()
      if (i !== KILL_AT) return
      victim = route.find((h) => h.layers[0] === 4)?.peer
      killUs = monotonicUs()
      if (victim !== undefined) byPeer.get(victim)?.proc.kill('SIGKILL')
    })
    await new Promise((r) => setTimeout(r, 300)) // the spare's marks of the replay
    const spare = nodes.find((n, i) => groups[i] === '4-8' && n.ready.peer !== victim)
    const failover = spare === undefined ? undefined : failoverParts(marksFromLog(spare.log), 4, killUs, tokenUs)
    real = { tokensPerSecond: tps(at), heldUpMs: heldUp(failed), hops, ...(failover !== undefined ? { failover } : {}) }
  } finally {
    for (const n of nodes) n.proc.kill('SIGTERM')
    await relay.stop()
  }

  // The simulator, given those figures: compute per layer, prefill per row, the rest of each round trip as the link.
  const sim = await simulate(async () => {
    const net = simNetwork({ name: 'calibrate-small', width: c.dim, vocab: c.vocabSize, layers: c.nLayers }, { clientUplinkMbps: 10_000 })
    const peers: SimPeer[] = []
    for (const h of [real.hops[0], real.hops[1], real.hops[1]]) {
      const layers = h.layers[1] - h.layers[0]
      const msPerLayer = h.computeMs / layers
      const msPerPrefillRowLayer = Math.max(0, (h.prefillComputeMs - h.computeMs) / (PROMPT.length - 1) / layers)
      peers.push(
        await net.add({
          layers: h.layers,
          cost: { msPerLayer, msPerPrefillRowLayer },
          device: 'cpu',
          uplinkMbps: 10_000,
          rttMs: h.roundTripMs - h.computeMs,
          computeInTime: true
        })
      )
    }
    const client = createClient({ dialer: net.dialer, directory: net.directory, random: mulberry32(1) })
    await timed(client, TOKENS) // as the real one: a warm generation first
    const at = await timed(client, TOKENS)
    // The same marks as the real nodes make, on the virtual clock.
    const marks: HopMarkRecord[] = []
    useHopMarks((mark, session, hop, step) => marks.push({ mark, session, hop, step, us: Date.now() * 1000 }))
    let killUs = 0
    let tokenUs = 0
    const failed = await timed(client, TOKENS + KILL_AT, (i, route) => {
      if (i === KILL_AT + 1) tokenUs = Date.now() * 1000
      if (i !== KILL_AT) return
      const victim = route.find((h) => h.layers[0] === 4)
      killUs = Date.now() * 1000
      peers.find((p) => p.id === victim?.peer)?.kill()
    })
    useHopMarks(undefined)
    return { tokensPerSecond: tps(at), heldUpMs: heldUp(failed), failover: failoverParts(marks, 4, killUs, tokenUs) }
  })
  const row = {
    preset: 'small',
    groups,
    measured: real,
    simulated: sim.value,
    tokensRatio: sim.value.tokensPerSecond / real.tokensPerSecond,
    failoverRatio: sim.value.heldUpMs / real.heldUpMs
  }
  console.log(
    `calibration, small in 2 hops on loopback: measured ${real.tokensPerSecond.toFixed(1)} tokens/s, simulated ${sim.value.tokensPerSecond.toFixed(1)} (× ${row.tokensRatio.toFixed(2)});` +
      ` kill -9 of the second hop held a token up ${real.heldUpMs.toFixed(0)} ms, simulated ${sim.value.heldUpMs.toFixed(0)} ms;` +
      ` the gap: ${[real.failover, sim.value.failover].map((f) => (f === undefined ? '–' : `spare has the replay ${f.toSpareMs.toFixed(1)} + replay ${f.replayMs.toFixed(1)} + rest ${f.restMs.toFixed(1)} ms`)).join(' measured, ')} simulated;` +
      ` hops ${real.hops.map((h) => `[${h.layers.join(',')}) compute ${h.computeMs.toFixed(2)} of ${h.roundTripMs.toFixed(2)} ms, prompt ${h.prefillComputeMs.toFixed(1)} ms`).join('; ')}`
  )
  return row
}
