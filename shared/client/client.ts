/**
 * The client facade: pick a model the network covers, open a routed session, prefill, then
 * decode token by token, sampling locally. What web apps, the CLI and the relay's API call.
 */
import { createSampler } from '../sampler.js'
import { lastRow } from '../pipeline.js'
import { InputError, NoRouteError } from '../errors.js'
import type { Capability } from '../protocol/capability.js'
import { BanList } from './bans.js'
import type { Dialer, HopTimeouts } from './remote-hop.js'
import { coverage, DEFAULT_COSTS, type RouteCosts } from './route.js'
import { RoutedSession } from './session.js'
import type { PeerDirectory } from './dialer.js'
import type { GenerationRequest, GenerationResult, Generator, NetworkView, TokenEvent } from './types.js'

export interface ClientConfig {
  dialer: Dialer
  directory: PeerDirectory
  /** Dial + open, and a step's reply (see HopTimeouts: scaled to the peer's speed). */
  timeouts?: Partial<HopTimeouts>
  /** First ban of a failed peer in ms; doubles on each repeat (Petals: 15 s). */
  banMs?: number
  /** Failovers per step before the generation fails. */
  maxRetries?: number
  /** Routing costs (default RTT for unknown peers, penalty for full peers). */
  costs?: Partial<RouteCosts>
}

// minStepMs stays well above what a loaded 2-core machine can take for one small step: a
// time-out bans the peer, and a ban of an honest peer can leave layers without a route.
export const DEFAULT_TIMEOUTS: HopTimeouts = { openMs: 10_000, stepMs: 60_000, minStepMs: 15_000, slack: 20 }

export interface Client extends Generator {
  network (): Promise<NetworkView>
}

export function createClient (cfg: ClientConfig): Client {
  const bans = new BanList(cfg.banMs ?? 15_000)
  const timeouts = { ...DEFAULT_TIMEOUTS, ...cfg.timeouts }

  async function pickModel (want?: string): Promise<{ name: string, root: string, layers: number, peers: Capability[] }> {
    const models = (await network()).models
    const full = models.filter((m) => m.coverage.every((c) => c > 0))
    const chosen = want === undefined
      ? full[0]
      : models.find((m) => m.name === want || m.root === want)
    if (chosen === undefined) {
      const known = models.map((m) => `${m.name} (${m.root.slice(0, 12)}…)`).join(', ') || 'none'
      throw want === undefined
        ? new NoRouteError(`no model is fully served by the network; models seen: ${known}`)
        : new InputError(`unknown model "${want}"; models on the network: ${known}`)
    }
    return { ...chosen, peers: (await cfg.directory.list()).filter((p) => p.root === chosen.root) }
  }

  async function network (): Promise<NetworkView> {
    const peers = await cfg.directory.list()
    const byRoot = new Map<string, Capability[]>()
    for (const p of peers) byRoot.set(p.root, [...(byRoot.get(p.root) ?? []), p])
    return {
      models: [...byRoot.entries()].map(([root, ps]) => ({ name: ps[0].model, root, layers: ps[0].modelLayers, coverage: coverage(ps, ps[0].modelLayers) })),
      peers: peers.map((p) => ({ peer: p.peer, device: p.device, model: p.model, root: p.root, layers: p.layers, msPerLayer: p.msPerLayer, memory: p.memory, kvRoom: p.kvRoom, sessions: p.sessions, addrs: p.addrs, expires: p.expires }))
    }
  }

  async function * generate (req: GenerationRequest, signal?: AbortSignal): AsyncGenerator<TokenEvent, GenerationResult> {
    if (req.prompt.length === 0) throw new InputError('the prompt is empty: give at least one token (BOS)')
    if (!(req.maxTokens >= 1)) throw new InputError('maxTokens must be at least 1')
    const model = await pickModel(req.model)
    const session = new RoutedSession({
      dialer: cfg.dialer,
      peers: async () => (await cfg.directory.list()).filter((p) => p.root === model.root),
      bans,
      root: model.root,
      nLayers: model.layers,
      timeouts,
      costs: { ...DEFAULT_COSTS, tokensNeeded: req.prompt.length + req.maxTokens, ...cfg.costs },
      maxRetries: cfg.maxRetries ?? 3
    })
    const sample = createSampler(req)
    const started = performance.now()
    let firstTokenMs = 0
    const tokens: number[] = []
    let finishReason: 'length' | 'stop' = 'length'
    let hops: TokenEvent['hops'] = []
    try {
      await session.start()
      let next: number[] = req.prompt
      while (tokens.length < req.maxTokens) {
        if (signal?.aborted === true) throw signal.reason
        const { out, trace } = await session.step(next)
        hops = trace
        const id = sample(lastRow(out))
        if (tokens.length === 0) firstTokenMs = performance.now() - started
        tokens.push(id)
        yield { id, index: tokens.length - 1, hops }
        if (req.stopIds?.includes(id) === true) { finishReason = 'stop'; break }
        next = [id]
      }
    } finally {
      session.close()
    }
    return {
      model: model.name, root: model.root, prompt: req.prompt, tokens, finishReason,
      route: { hops, switches: session.switches },
      timings: { firstTokenMs, totalMs: performance.now() - started }
    }
  }

  return { generate, network }
}
