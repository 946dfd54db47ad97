/**
 * The client facade: pick a model the network covers, open a routed session, prefill, then
 * decode token by token, sampling locally. What web apps, the CLI and the relay's API call.
 */
import { createSampler } from '../sampler.js'
import { lastRow } from '../pipeline.js'
import { InputError, NoRouteError, VerificationError } from '../errors.js'
import type { Capability } from '../protocol/capability.js'
import { BanList } from './bans.js'
import { CircuitBreaker, DEFAULT_BREAKER, type BreakerOptions } from './breaker.js'
import { NO_LEDGER, type LedgerLink } from './ledger-link.js'
import type { Dialer, HopTimeouts } from './remote-hop.js'
import { coverage, DEFAULT_COSTS, findRoute, type RouteCosts } from '../route/route.js'
import { RoutedSession } from './session.js'
import type { PeerDirectory } from '../route/directory.js'
import type { GenerationRequest, GenerationResult, Generator, NetworkView, Settlement, TokenEvent, VerificationOptions, VerificationMode } from './types.js'
import type { Claim, ClaimSink } from '../optimistic/board.js'
import type { SamplingProof, SamplingProver } from '../zk/argmax.js'

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
  /** Verification for requests that do not choose (default none). */
  verification?: VerificationOptions
  /** Reputations, blacklist and where evidence goes (default: no ledger). */
  ledger?: LedgerLink
  /** The verification circuit breaker's settings. */
  breaker?: Partial<BreakerOptions>
  /** Randomness for spot sampling and drawing peers (default Math.random). */
  random?: () => number
  /** Where optimistic claims go to be audited (the relay's board, or its HTTP API); without one, optimistic is refused. */
  board?: ClaimSink
  /** Sampling provers by vocabulary size (native: they read a proving key); without one, proveSampling is refused. */
  sampling?: (vocab: number) => SamplingProver | undefined
}

export const DEFAULT_K = 2
export const DEFAULT_SPOT_P = 0.2
export const DEFAULT_WINDOW_MS = 30_000
const MODES: VerificationMode[] = ['none', 'redundant', 'spot', 'optimistic']

/** Fills in k, p and the window, and refuses what cannot be run. */
export function normalizeVerification (v: VerificationOptions | undefined): { mode: VerificationMode, k: number, p: number, window: number } {
  const mode = v?.mode ?? 'none'
  if (!MODES.includes(mode)) throw new InputError(`verification mode must be one of ${MODES.join(', ')}, not ${JSON.stringify(mode)}`)
  const k = v?.k ?? DEFAULT_K
  const p = v?.p ?? DEFAULT_SPOT_P
  const window = v?.window ?? DEFAULT_WINDOW_MS
  if (!Number.isInteger(k) || k < 2 || k > 5) throw new InputError(`verification k must be an integer from 2 to 5, not ${k}`)
  if (!(p > 0 && p <= 1)) throw new InputError(`verification p must be in (0, 1], not ${p}`)
  if (!Number.isInteger(window) || window < 100 || window > 3_600_000) throw new InputError(`verification window must be whole ms from 100 to 3600000 (an hour), not ${window}`)
  return { mode, k, p, window }
}

// minStepMs stays well above what a loaded 2-core machine can take for one small step: a
// time-out bans the peer, and a ban of an honest peer can leave layers without a route.
export const DEFAULT_TIMEOUTS: HopTimeouts = { openMs: 10_000, stepMs: 60_000, minStepMs: 15_000, slack: 20 }

export interface Client extends Generator {
  network (): Promise<NetworkView>
  /** The verification circuit breaker's state. */
  readonly breaker: CircuitBreaker
}

export function createClient (cfg: ClientConfig): Client {
  const bans = new BanList(cfg.banMs ?? 15_000)
  const timeouts = { ...DEFAULT_TIMEOUTS, ...cfg.timeouts }
  const ledger = cfg.ledger ?? NO_LEDGER
  const breaker = new CircuitBreaker({ ...DEFAULT_BREAKER, ...cfg.breaker })

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

  async function * generate (req: GenerationRequest, signal?: AbortSignal, exclude?: ReadonlySet<string>): AsyncGenerator<TokenEvent, GenerationResult> {
    if (req.prompt.length === 0) throw new InputError('the prompt is empty: give at least one token (BOS)')
    if (!(req.maxTokens >= 1)) throw new InputError('maxTokens must be at least 1')
    const verification = normalizeVerification(req.verification ?? cfg.verification)
    if (verification.mode === 'optimistic' && cfg.board === undefined) throw new InputError('optimistic verification needs a claim board to post to: ask the relay\'s API, or give the client a board')
    const proving = req.proveSampling === true
    if (proving && (req.temperature ?? 0) !== 0) throw new InputError('a sampling proof covers greedy decoding only: use temperature 0')
    if (proving && cfg.sampling === undefined) throw new InputError('this client cannot prove sampling: ask the relay\'s API of a relay started with --prove-sampling')
    // Health: the model is still covered by peers that are not blacklisted, k deep where redundant asks for it.
    await breaker.admit(async () => {
      try {
        const m = await pickModel(req.model)
        findRoute(m.peers.filter((p) => !ledger.excluded(p.peer)), 0, m.layers, DEFAULT_COSTS, verification.mode === 'redundant' ? verification.k : 1)
        return { ok: true, reason: '' }
      } catch (err) {
        return { ok: false, reason: (err as Error).message }
      }
    })
    const model = await pickModel(req.model)
    const session = new RoutedSession({
      dialer: cfg.dialer,
      peers: async () => (await cfg.directory.list()).filter((p) => p.root === model.root),
      bans,
      root: model.root,
      nLayers: model.layers,
      timeouts,
      costs: { ...DEFAULT_COSTS, tokensNeeded: req.prompt.length + req.maxTokens, ...cfg.costs },
      maxRetries: cfg.maxRetries ?? 3,
      verification,
      ledger,
      random: cfg.random ?? Math.random,
      exclude,
      commitLogits: proving
    })
    const sample = createSampler(req)
    const started = performance.now()
    let firstTokenMs = 0
    const tokens: number[] = []
    let finishReason: 'length' | 'stop' = 'length'
    let hops: TokenEvent['hops'] = []
    let unverifiable = false
    // Poseidon and the argmax rules load only when a proof is asked for (most pages never do).
    const zk = proving ? await import('../zk/argmax.js') : undefined
    const proofs: Array<Promise<SamplingProof>> = []
    try {
      await session.start()
      let next: number[] = req.prompt
      while (tokens.length < req.maxTokens) {
        if (signal?.aborted === true) throw signal.reason
        const { out, trace, receipt } = await session.step(next)
        hops = trace
        let id: number
        if (zk === undefined) {
          id = sample(lastRow(out))
        } else {
          // Greedy over the quantized logits the last hop committed to; proved beside the generation, awaited at the end.
          const q = zk.quantizeLogits(lastRow(out))
          id = zk.provedArgmax(q)
          const prover = cfg.sampling!(q.length)
          if (prover === undefined) throw new InputError(`this client has no sampling circuit for a vocabulary of ${q.length}`)
          const [index, token, peer] = [tokens.length, id, trace[trace.length - 1].peer]
          const p = prover.prove(q, id).then((r) => ({ index, token, vocab: q.length, peer, receipt, proof: r.proof, publicSignals: r.publicSignals }))
          p.catch(() => {}) // awaited below; a generation that fails first must not leave it unhandled
          proofs.push(p)
        }
        if (tokens.length === 0) firstTokenMs = performance.now() - started
        tokens.push(id)
        yield { id, index: tokens.length - 1, hops, ...(verification.mode === 'optimistic' ? { status: 'pending' as const } : {}) }
        if (req.stopIds?.includes(id) === true) { finishReason = 'stop'; break }
        next = [id]
      }
    } catch (err) {
      unverifiable = err instanceof VerificationError
      throw err
    } finally {
      session.close()
      if (unverifiable || session.checks > 0) breaker.record(!unverifiable)
    }
    const sampling = proving ? await Promise.all(proofs) : undefined
    // Peers whose work was checked and held up all along earn reputation.
    const accused = new Set(session.faults.map((f) => f.accused))
    for (const p of session.vouched) if (!accused.has(p)) ledger.observe(p, true)
    let settlement: Promise<Settlement> | undefined
    let claim: string | undefined
    if (verification.mode === 'optimistic') {
      const c = session.claim(verification.window)
      claim = c.id
      settlement = settle(cfg.board!, c, req)
      settlement.catch(() => {}) // a caller that never looks must not crash the process
    }
    return {
      model: model.name, root: model.root, prompt: req.prompt, tokens, finishReason,
      route: { hops, switches: session.switches },
      verification: {
        mode: verification.mode,
        ...(verification.mode === 'redundant' ? { k: verification.k } : verification.mode === 'spot' ? { p: verification.p } : {}),
        checks: session.checks,
        mismatches: session.failures,
        closest: { ...session.closest },
        hops: session.hopSummaries(),
        faults: session.faults,
        ...(claim !== undefined ? { claim, window: verification.window, status: 'pending' as const } : {})
      },
      timings: { firstTokenMs, totalMs: performance.now() - started },
      ...(settlement !== undefined ? { settlement } : {}),
      ...(sampling !== undefined ? { sampling } : {})
    }
  }

  /** Posts the claim; if it is overturned, generates again around whoever was caught, for the corrected tokens. */
  async function settle (board: ClaimSink, claim: Claim, req: GenerationRequest): Promise<Settlement> {
    return await board.submit(claim, async (challenges) => {
      const caught = new Set(challenges.filter((c) => c.outcome === 'overturned').map((c) => c.accused))
      const again = generate({ ...req, proveSampling: false, verification: { mode: 'none' } }, undefined, caught)
      let r = await again.next()
      while (r.done !== true) r = await again.next()
      return r.value.tokens
    })
  }

  return { generate, network, breaker }
}
