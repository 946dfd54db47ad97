/**
 * The simulator's first scenarios (sim/): Llama-2-70B int4 over a chain of GPU nodes through the
 * shipped client, in virtual time. Petals' headline setting (3 × RTX 3090-class nodes, 100 ms
 * round trips) and the round trip and GPU swept around it, each beside what the links and the
 * hardware alone say a token costs.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { GPUS, GROUP_LINKS, layersThatFit, LLAMA2_70B_INT4 } from '../../sim/hardware.js'
import { TINYLLAMA_DRAFT } from '../../sim/whatif.js'
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
  // What would move Petals' setting: each change simulated through the shipped client.
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
  // Forwarding and speculative decoding, through the client's own code: the nodes hand each other their rows, a draft of
  // TinyLlama's speed and an assumed acceptance rate proposes, γ adapts (sim/draft.ts).
  const draft = TINYLLAMA_DRAFT
  const spec = { gamma: 8, draft }
  const latencyRuns: Array<[string, Partial<ChainScenario>]> = [
    ['node-to-node forwarding: (hops + 1) / 2 round trips a token', { forward: true }],
    [`speculative decoding: ${draft.name}, α = ${draft.acceptance}, γ ≤ 8 adapting`, { speculate: spec }],
    ['forwarding + speculative decoding', { forward: true, speculate: spec }],
    ['forwarding + speculative decoding, 1 Gbit/s uplinks', { forward: true, speculate: spec, uplinkMbps: 1000 }],
    ['forwarding + speculative decoding, a draft of α = 0.8', { forward: true, speculate: { ...spec, draft: { ...draft, acceptance: 0.8 } } }]
  ]
  for (const [name, change] of latencyRuns) {
    // 128 tokens: a speculative pass yields a few, and a few dozen passes keep the draws' luck out of the rate.
    const r = await simulateChain({ ...PETALS, tokens: 128, ...change })
    const sp = r.speculation
    const label = sp === undefined ? name : `${name} (mean γ ${sp.meanGamma.toFixed(1)}, ${sp.tokensPerPass.toFixed(2)} tokens a pass)`
    whatIfs.push({
      name: label,
      how: 'simulated',
      sessions: 1,
      completed: r.completed,
      tokensPerSecond: r.tokensPerSecond,
      msPerToken: r.msPerToken,
      realMs: r.realMs
    })
    console.log(`what if ${label}: ${r.tokensPerSecond.toFixed(2)} tokens/s`)
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
