/**
 * The simulator's first scenarios (sim/): Llama-2-70B int4 over a chain of GPU nodes through the
 * shipped client, in virtual time. Petals' headline setting (3 × RTX 3090-class nodes, 100 ms
 * round trips) and the round trip and GPU swept around it, each beside what the links and the
 * hardware alone say a token costs.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { GPUS, LLAMA2_70B_INT4 } from '../../sim/hardware.js'
import { linePlot } from './plot.js'
import { simulateChain, type ChainScenario } from '../../sim/pipeline.js'
import { simulateSwarm, swarmDefaults, type SwarmScenario } from '../../sim/swarm.js'

const PETALS: ChainScenario = { model: LLAMA2_70B_INT4, gpu: GPUS.rtx3090, nodes: 3, rttMs: 100, uplinkMbps: 100, vocab: 32000, promptTokens: 16, tokens: 32 }

export async function benchSimulate(outDir: string): Promise<Record<string, unknown>> {
  const rows = []
  const runs: Array<[string, Partial<ChainScenario>]> = [
    ['petals', {}],
    ...[0, 20, 50].map((rtt): [string, Partial<ChainScenario>] => [`rtt${rtt}`, { rttMs: rtt }]),
    ...['rtx4090', 'a100', 'h100'].map((g): [string, Partial<ChainScenario>] => [g, { gpu: GPUS[g] }])
  ]
  for (const [name, change] of runs) {
    const s = { ...PETALS, ...change }
    const r = await simulateChain(s)
    rows.push({ name, gpu: s.gpu.name, nodes: s.nodes, rttMs: s.rttMs, uplinkMbps: s.uplinkMbps, ...r })
    console.log(
      `${name}: ${s.nodes} × ${s.gpu.name} at ${s.rttMs} ms: ${r.tokensPerSecond.toFixed(2)} tokens/s (${r.msPerToken.toFixed(1)} ms a token;` +
        ` by the model ${r.expected.totalMs.toFixed(1)} = round trips ${r.expected.rttMs} + compute ${r.expected.computeMs.toFixed(1)} + wire ${r.expected.wireMs.toFixed(1)});` +
        ` first token ${r.firstTokenMs} ms; ${(r.virtualMs / 1000).toFixed(1)} virtual s in ${r.realMs.toFixed(0)} ms, ${r.events} events`
    )
  }
  const swarms = []
  const tenMinutes = 10 * 60_000
  const swarmRuns: Array<[string, SwarmScenario]> = [
    ['100 peers', { ...swarmDefaults(100), durationMs: tenMinutes }],
    ['1,000 peers', { ...swarmDefaults(1000), durationMs: tenMinutes }],
    ['1,000 peers, redundant k = 2', { ...swarmDefaults(1000), durationMs: tenMinutes, verification: { mode: 'redundant', k: 2 } }],
    ['1,000 peers, spot p = 0.2', { ...swarmDefaults(1000), durationMs: tenMinutes, verification: { mode: 'spot', p: 0.2 } }],
    ['1,000 peers, a third gone at minute 5', { ...swarmDefaults(1000), durationMs: tenMinutes, outage: { atMs: 5 * 60_000, share: 1 / 3 } }],
    [
      '1,000 peers, 5% faulty, redundant k = 2',
      { ...swarmDefaults(1000), durationMs: tenMinutes, faultyShare: 0.05, verification: { mode: 'redundant', k: 2 } }
    ],
    ['10,000 peers (1 minute)', { ...swarmDefaults(10_000), durationMs: 60_000 }]
  ]
  for (const [name, s] of swarmRuns) {
    const r = await simulateSwarm(s)
    const { model: _m, gpuMix, tab, ...knobs } = s
    swarms.push({
      name,
      peers: s.natives + s.tabs,
      ...knobs,
      gpuMix: gpuMix.map(([g, share]) => [g.name, share]),
      tabLayers: tab.layers,
      tabMsPerLayer: tab.cost.msPerLayer,
      ...r
    })
    console.log(
      `${name}: ${r.completed}/${r.generations} generations, ${r.tokensPerSecond.p50.toFixed(1)} tokens/s a session (p5 ${r.tokensPerSecond.p5.toFixed(1)}, p95 ${r.tokensPerSecond.p95.toFixed(1)}),` +
        ` ${r.aggregateTokensPerSecond.toFixed(1)} in all; first token ${r.firstTokenMs.p50} ms (p95 ${r.firstTokenMs.p95}); ${r.failovers.generations} failed over (p50 ${r.failovers.p50Ms} ms);` +
        ` least-covered layer ≥ ${r.coverage.min}; route ${r.routeMs.p50.toFixed(2)} ms over ${r.routeMs.peers} records; wrong ${r.wrongTokens}, honest accused ${r.honestAccused};` +
        ` ${(r.virtualMs / 1000).toFixed(0)} virtual s in ${(r.realMs / 1000).toFixed(1)} s`
    )
  }
  // The plots: tokens/s against the round trip (Petals' chain), and the least-covered layer over time in the 1,000-peer swarms.
  const rttRows = rows.filter((x) => x.gpu === PETALS.gpu.name).sort((a, b) => a.rttMs - b.rttMs)
  const rttPlot = linePlot({
    title: `${LLAMA2_70B_INT4.name} on ${PETALS.nodes} × ${PETALS.gpu.name}, simulated: one session's tokens/s against the round trip`,
    x: 'round trip to each node (ms)',
    y: 'tokens/s',
    series: [{ label: 'simulated', points: rttRows.map((x): [number, number] => [x.rttMs, x.tokensPerSecond]) }],
    xTicks: rttRows.map((x) => x.rttMs)
  })
  const coverageSeries = swarms
    .filter((x) => x.peers === 1000 && (x.verification.mode === 'none' || x.outage !== undefined))
    .map((x) => ({ label: x.name, points: x.coverage.samples.map((p): [number, number] => [p.atMs / 60_000, p.min]) }))
  const coveragePlot = linePlot({
    title: 'Simulated swarm of 1,000 peers: peers serving the least-covered layer, over time',
    x: 'minutes',
    y: 'peers on the least-covered layer',
    series: coverageSeries
  })
  await writeFile(join(outDir, 'simulate-rtt.svg'), rttPlot)
  await writeFile(join(outDir, 'simulate-coverage.svg'), coveragePlot)
  console.log(`wrote ${join(outDir, 'simulate-rtt.svg')} and ${join(outDir, 'simulate-coverage.svg')}`)
  return {
    plots: ['bench-results/simulate-rtt.svg', 'bench-results/simulate-coverage.svg'],
    model: LLAMA2_70B_INT4.name,
    layerSource: LLAMA2_70B_INT4.source,
    gpuSources: Object.fromEntries(Object.entries(GPUS).map(([k, g]) => [k, g.source])),
    rows,
    swarms
  }
}
