/**
 * The simulator's first scenarios (sim/): Llama-2-70B int4 over a chain of GPU nodes through the
 * shipped client, in virtual time. Petals' headline setting (3 × RTX 3090-class nodes, 100 ms
 * round trips) and the round trip and GPU swept around it, each beside what the links and the
 * hardware alone say a token costs.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { GPUS, GROUP_LINKS, layersThatFit, LLAMA2_70B_INT4 } from '../../sim/hardware.js'
import { forwarded, speculative, TINYLLAMA_DRAFT } from '../../sim/whatif.js'
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
  // What would move Petals' setting: each change simulated through the shipped client where the client can run it, projected from the simulated parts where it cannot yet (sim/whatif.ts).
  const whatIfs = []
  const whatIfRuns: Array<[string, Partial<ChainScenario>]> = [
    [`bigger shards: 2 × RTX 3090 (${layersThatFit(LLAMA2_70B_INT4, GPUS.rtx3090)} layers fit on each)`, { nodes: 2 }],
    ['bigger shards: 1 × A100 80GB (the whole model, one hop)', { nodes: 1, gpu: GPUS.a100 }],
    [`tensor parallelism: 1 node of 4 × RTX 3090 over ${GROUP_LINKS.pcie4.name}`, { nodes: 1, tensorParallel: { gpus: 4, link: GROUP_LINKS.pcie4 } }],
    [`tensor parallelism: 1 node of 4 × RTX 3090 over ${GROUP_LINKS.lan10g.name}`, { nodes: 1, tensorParallel: { gpus: 4, link: GROUP_LINKS.lan10g } }],
    ['32 sessions at once, continuous batching (16 rows a run)', { sessions: 32 }],
    ['32 sessions at once, every step alone', { sessions: 32, batchRows: 1 }]
  ]
  for (const [name, change] of whatIfRuns) {
    const s = { ...PETALS, ...change }
    const r = await simulateChain(s)
    whatIfs.push({
      name,
      how: 'simulated',
      sessions: s.sessions ?? 1,
      completed: r.completed,
      tokensPerSecond: r.tokensPerSecond,
      aggregateTokensPerSecond: r.aggregateTokensPerSecond,
      msPerToken: r.msPerToken,
      realMs: r.realMs
    })
    console.log(
      `what if ${name}: ${r.tokensPerSecond.toFixed(2)} tokens/s a session, ${r.aggregateTokensPerSecond.toFixed(1)} in all (${r.completed}/${s.sessions ?? 1} completed)`
    )
  }
  const base = rows.find((x) => x.name === 'petals')!
  const fwd = forwarded(PETALS, base)
  const spec = speculative(PETALS, base, base, TINYLLAMA_DRAFT)
  const both = speculative(PETALS, base, fwd, TINYLLAMA_DRAFT)
  whatIfs.push(
    {
      name: 'node-to-node forwarding: (hops + 1) / 2 round trips a token',
      how: 'projected',
      sessions: 1,
      tokensPerSecond: fwd.tokensPerSecond,
      msPerToken: fwd.msPerToken
    },
    {
      name: `speculative decoding: ${TINYLLAMA_DRAFT.name}, α = ${TINYLLAMA_DRAFT.acceptance}, γ = ${spec.gamma} (${spec.tokensPerPass.toFixed(2)} tokens a pass)`,
      how: 'projected',
      sessions: 1,
      tokensPerSecond: spec.tokensPerSecond,
      msPerToken: spec.msPerToken
    },
    {
      name: `forwarding + speculative decoding, γ = ${both.gamma} (${both.tokensPerPass.toFixed(2)} tokens a pass)`,
      how: 'projected',
      sessions: 1,
      tokensPerSecond: both.tokensPerSecond,
      msPerToken: both.msPerToken
    }
  )
  for (const w of whatIfs.slice(-3)) console.log(`what if ${w.name}: ${w.tokensPerSecond.toFixed(2)} tokens/s (projected)`)

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
    ['10,000 peers (1 minute)', { ...swarmDefaults(10_000), durationMs: 60_000 }],
    ['1,000 peers, an hour', { ...swarmDefaults(1000), durationMs: 60 * 60_000 }],
    // The swarm rows above carry 32 values a row; this one the model's real rows and logits (its CPU cost is why the others do not).
    [
      `1,000 peers, real rows (${LLAMA2_70B_INT4.hidden} values, 32,000 logits; 2 minutes)`,
      { ...swarmDefaults(1000), durationMs: 2 * 60_000, width: LLAMA2_70B_INT4.hidden, vocab: 32000 }
    ]
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
  // Tokens/s against the swarm's size: the swarms of the default mix without faults, checks or outages, an hour's left out (the same size as the ten minutes').
  const bySize = swarms.filter(
    (x) => x.verification.mode === 'none' && x.outage === undefined && x.faultyShare === 0 && x.width === 32 && x.durationMs <= tenMinutes
  )
  const peersPlot = linePlot({
    title: 'Simulated swarms: one session’s tokens/s against the number of peers',
    x: 'peers (natives and tabs)',
    y: 'tokens/s a session',
    logX: true,
    xTicks: bySize.map((x) => x.peers),
    series: (['p95', 'p50', 'p5'] as const).map((k) => ({ label: k, points: bySize.map((x): [number, number] => [x.peers, x.tokensPerSecond[k]]) }))
  })
  const plots = ['simulate-rtt.svg', 'simulate-coverage.svg', 'simulate-peers.svg']
  await writeFile(join(outDir, plots[0]), rttPlot)
  await writeFile(join(outDir, plots[1]), coveragePlot)
  await writeFile(join(outDir, plots[2]), peersPlot)
  console.log(`wrote ${plots.map((p) => join(outDir, p)).join(', ')}`)
  return {
    plots: plots.map((p) => `bench-results/${p}`),
    draft: TINYLLAMA_DRAFT,
    groupLinks: GROUP_LINKS,
    whatIfs,
    model: LLAMA2_70B_INT4.name,
    layerSource: LLAMA2_70B_INT4.source,
    gpuSources: Object.fromEntries(Object.entries(GPUS).map(([k, g]) => [k, g.source])),
    rows,
    swarms
  }
}
