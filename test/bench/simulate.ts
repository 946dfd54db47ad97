/**
 * The simulator's first scenarios (sim/): Llama-2-70B int4 over a chain of GPU nodes through the
 * shipped client, in virtual time. Petals' headline setting (3 × RTX 3090-class nodes, 100 ms
 * round trips) and the round trip and GPU swept around it, each beside what the links and the
 * hardware alone say a token costs.
 */
import { GPUS, LLAMA2_70B_INT4 } from '../../sim/hardware.js'
import { simulateChain, type ChainScenario } from '../../sim/pipeline.js'

const PETALS: ChainScenario = { model: LLAMA2_70B_INT4, gpu: GPUS.rtx3090, nodes: 3, rttMs: 100, uplinkMbps: 100, vocab: 32000, promptTokens: 16, tokens: 32 }

export async function benchSimulate(): Promise<Record<string, unknown>> {
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
  return {
    model: LLAMA2_70B_INT4.name,
    layerSource: LLAMA2_70B_INT4.source,
    gpuSources: Object.fromEntries(Object.entries(GPUS).map(([k, g]) => [k, g.source])),
    rows
  }
}
