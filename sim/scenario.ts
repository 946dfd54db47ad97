/**
 * Scenario files for `tessera simulate`: a chain of GPU nodes (sim/pipeline.ts) or a swarm
 * (sim/swarm.ts), in JSON, every field optional but `kind`, checked with a message that names
 * the field. Built-in scenarios by name: `petals`, `swarm-100`, `swarm-1000`, `outage`, `faulty`.
 */
import { InputError } from '../shared/errors.js'
import type { VerificationOptions } from '../shared/client/types.js'
import { GPUS, GROUP_LINKS, LLAMA2_70B_INT4 } from './hardware.js'
import { simulateChain, type ChainResult, type ChainScenario } from './pipeline.js'
import { simulateSwarm, swarmDefaults, type SwarmResult, type SwarmScenario } from './swarm.js'

export interface ChainFile {
  kind: 'chain'
  gpu?: keyof typeof GPUS
  nodes?: number
  rttMs?: number
  uplinkMbps?: number
  promptTokens?: number
  tokens?: number
  sessions?: number
  batchRows?: number
  tensorParallel?: { gpus: number; link: keyof typeof GROUP_LINKS }
}
export interface SwarmFile {
  kind: 'swarm'
  peers?: number
  minutes?: number
  sessions?: number
  tokens?: number
  verification?: 'none' | 'redundant' | 'spot'
  faultyShare?: number
  outage?: { atMinute: number; share: number }
  tabStayMinutes?: number
  nativeStayHours?: number
  seed?: number
}
export type ScenarioFile = ChainFile | SwarmFile

export const BUILT_IN: Record<string, ScenarioFile> = {
  petals: { kind: 'chain', gpu: 'rtx3090', nodes: 3, rttMs: 100, uplinkMbps: 100 },
  'swarm-100': { kind: 'swarm', peers: 100, minutes: 10 },
  'swarm-1000': { kind: 'swarm', peers: 1000, minutes: 10 },
  outage: { kind: 'swarm', peers: 1000, minutes: 10, outage: { atMinute: 5, share: 1 / 3 } },
  faulty: { kind: 'swarm', peers: 1000, minutes: 10, faultyShare: 0.05, verification: 'redundant' }
}

const FIELDS = {
  chain: ['kind', 'gpu', 'nodes', 'rttMs', 'uplinkMbps', 'promptTokens', 'tokens', 'sessions', 'batchRows', 'tensorParallel'],
  swarm: ['kind', 'peers', 'minutes', 'sessions', 'tokens', 'verification', 'faultyShare', 'outage', 'tabStayMinutes', 'nativeStayHours', 'seed']
}

/** Checks a parsed scenario file; throws InputError naming the first bad field. */
export function parseScenario(x: unknown): ScenarioFile {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) throw new InputError('a scenario is a JSON object with a "kind" of "chain" or "swarm"')
  const o = x as Record<string, unknown>
  if (o.kind !== 'chain' && o.kind !== 'swarm') throw new InputError(`scenario "kind" must be "chain" or "swarm", not ${JSON.stringify(o.kind)}`)
  for (const k of Object.keys(o))
    if (!FIELDS[o.kind].includes(k)) throw new InputError(`a ${o.kind} scenario has no field "${k}" (it has ${FIELDS[o.kind].join(', ')})`)
  const num = (k: string, ok: (n: number) => boolean, what: string): void => {
    if (o[k] !== undefined && (typeof o[k] !== 'number' || !ok(o[k] as number)))
      throw new InputError(`scenario "${k}" must be ${what}, not ${JSON.stringify(o[k])}`)
  }
  const count = (n: number): boolean => Number.isInteger(n) && n >= 1
  const share = (n: number): boolean => n >= 0 && n <= 1
  if (o.kind === 'chain') {
    if (o.gpu !== undefined && !(typeof o.gpu === 'string' && o.gpu in GPUS))
      throw new InputError(`scenario "gpu" must be one of ${Object.keys(GPUS).join(', ')}`)
    num('nodes', (n) => count(n) && n <= LLAMA2_70B_INT4.layers, `a whole number of nodes from 1 to ${LLAMA2_70B_INT4.layers}`)
    num('rttMs', (n) => n >= 0, 'a round trip in ms, 0 or more')
    num('uplinkMbps', (n) => n > 0, 'an uplink in Mbit/s, more than 0')
    num('promptTokens', count, 'a whole number of tokens, 1 or more')
    num('tokens', (n) => count(n) && n >= 2, 'a whole number of tokens, 2 or more')
    num('sessions', count, 'a whole number of sessions, 1 or more')
    num('batchRows', count, 'a whole number of rows a batch, 1 (no batching) or more')
    if (o.tensorParallel !== undefined) {
      const t = o.tensorParallel as Record<string, unknown>
      if (typeof t !== 'object' || t === null || typeof t.gpus !== 'number' || !count(t.gpus) || !(typeof t.link === 'string' && t.link in GROUP_LINKS))
        throw new InputError(`scenario "tensorParallel" must be { "gpus": GPUs a node, 1 or more, "link": one of ${Object.keys(GROUP_LINKS).join(', ')} }`)
    }
    return o as unknown as ChainFile
  }
  num('peers', (n) => count(n) && n >= 3, 'a whole number of peers, 3 or more')
  num('minutes', (n) => n > 0, 'a duration in minutes, more than 0')
  num('sessions', count, 'a whole number of sessions, 1 or more')
  num('tokens', (n) => count(n) && n >= 2, 'a whole number of tokens, 2 or more')
  num('faultyShare', share, 'a share from 0 to 1')
  num('tabStayMinutes', (n) => n > 0, 'minutes, more than 0')
  num('nativeStayHours', (n) => n > 0, 'hours, more than 0')
  num('seed', Number.isInteger, 'an integer')
  if (o.verification !== undefined && !['none', 'redundant', 'spot'].includes(o.verification as string))
    throw new InputError('scenario "verification" must be "none", "redundant" (k = 2) or "spot" (p = 0.2)')
  if (o.outage !== undefined) {
    const g = o.outage as Record<string, unknown>
    if (typeof g !== 'object' || g === null || typeof g.atMinute !== 'number' || g.atMinute < 0 || typeof g.share !== 'number' || !share(g.share))
      throw new InputError('scenario "outage" must be { "atMinute": minutes from the start, "share": the share of peers gone, 0 to 1 }')
  }
  return o as unknown as SwarmFile
}

export type ScenarioResult = { kind: 'chain'; scenario: ChainScenario; result: ChainResult } | { kind: 'swarm'; scenario: SwarmScenario; result: SwarmResult }

const VERIFICATION: Record<string, VerificationOptions> = { none: { mode: 'none' }, redundant: { mode: 'redundant', k: 2 }, spot: { mode: 'spot', p: 0.2 } }

export async function runScenario(f: ScenarioFile): Promise<ScenarioResult> {
  if (f.kind === 'chain') {
    const scenario: ChainScenario = {
      model: LLAMA2_70B_INT4,
      gpu: GPUS[f.gpu ?? 'rtx3090'],
      nodes: f.nodes ?? 3,
      rttMs: f.rttMs ?? 100,
      uplinkMbps: f.uplinkMbps ?? 100,
      vocab: 32000,
      promptTokens: f.promptTokens ?? 16,
      tokens: f.tokens ?? 32,
      ...(f.sessions !== undefined ? { sessions: f.sessions } : {}),
      ...(f.batchRows !== undefined ? { batchRows: f.batchRows } : {}),
      ...(f.tensorParallel !== undefined ? { tensorParallel: { gpus: f.tensorParallel.gpus, link: GROUP_LINKS[f.tensorParallel.link] } } : {})
    }
    return { kind: 'chain', scenario, result: await simulateChain(scenario) }
  }
  const d = swarmDefaults(f.peers ?? 100)
  const scenario: SwarmScenario = {
    ...d,
    durationMs: (f.minutes ?? 10) * 60_000,
    sessions: f.sessions ?? d.sessions,
    tokens: f.tokens ?? d.tokens,
    verification: VERIFICATION[f.verification ?? 'none'],
    faultyShare: f.faultyShare ?? 0,
    tabStayMs: (f.tabStayMinutes ?? d.tabStayMs / 60_000) * 60_000,
    nativeStayMs: (f.nativeStayHours ?? d.nativeStayMs / 3_600_000) * 3_600_000,
    seed: f.seed ?? d.seed,
    ...(f.outage !== undefined ? { outage: { atMs: f.outage.atMinute * 60_000, share: f.outage.share } } : {})
  }
  return { kind: 'swarm', scenario, result: await simulateSwarm(scenario) }
}

/** The result in a few lines for the terminal. */
export function describeResult(r: ScenarioResult): string[] {
  if (r.kind === 'chain') {
    const { scenario: s, result: x } = r
    const tp = s.tensorParallel
    const sessions = s.sessions ?? 1
    return [
      `${s.model.name} on ${s.nodes} × ${tp === undefined ? s.gpu.name : `(${tp.gpus} × ${s.gpu.name} over ${tp.link.name})`}, ${s.rttMs} ms round trips, ${s.uplinkMbps} Mbit/s`,
      `  ${x.tokensPerSecond.toFixed(2)} tokens/s${sessions > 1 ? ' a session (median)' : ''}, ${x.msPerToken.toFixed(1)} ms a token (first token ${x.firstTokenMs} ms)`,
      ...(sessions > 1 ? [`  ${sessions} sessions at once: ${x.completed} completed, ${x.aggregateTokensPerSecond.toFixed(1)} tokens/s in all`] : []),
      `  by the links and hardware: ${x.expected.totalMs.toFixed(1)} ms = round trips ${x.expected.rttMs.toFixed(0)} + compute ${x.expected.computeMs.toFixed(1)} + wire ${x.expected.wireMs.toFixed(1)}`,
      `  ${(x.virtualMs / 1000).toFixed(1)} virtual s in ${(x.realMs / 1000).toFixed(1)} s`
    ]
  }
  const { scenario: s, result: x } = r
  const f = (n: number | null): string => (n === null || !Number.isFinite(n) ? '–' : n.toFixed(0))
  return [
    `${s.natives + s.tabs} peers (${s.natives} native, ${s.tabs} tabs), ${s.sessions} sessions, ${s.verification.mode}, ${(s.durationMs / 60_000).toFixed(1)} minutes`,
    `  ${x.completed}/${x.generations} generations completed${
      Object.keys(x.failed).length > 0
        ? ` (failed: ${Object.entries(x.failed)
            .map(([k, v]) => `${k} ${v}`)
            .join(', ')})`
        : ''
    }`,
    `  tokens/s a session p50 ${x.tokensPerSecond.p50.toFixed(1)} (p5 ${x.tokensPerSecond.p5.toFixed(1)}, p95 ${x.tokensPerSecond.p95.toFixed(1)}); all sessions ${x.aggregateTokensPerSecond.toFixed(1)}`,
    `  first token p50 ${f(x.firstTokenMs.p50)} ms, p95 ${f(x.firstTokenMs.p95)} ms; failed over ${x.failovers.generations} (held up p50 ${f(x.failovers.p50Ms)} ms)`,
    `  least-covered layer ≥ ${x.coverage.min} peers; a route over ${x.routeMs.peers} records ${x.routeMs.p50.toFixed(2)} ms (real time)`,
    `  wrong tokens ${x.wrongTokens}, honest peers accused ${x.honestAccused}; ${x.joined} joined, ${x.left} left`,
    `  ${(x.virtualMs / 60_000).toFixed(1)} virtual minutes in ${(x.realMs / 1000).toFixed(1)} s`
  ]
}
