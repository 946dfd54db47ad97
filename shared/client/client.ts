/**
 * The client facade: pick a model the network covers, open a routed session (session.ts) with
 * the request's verifier (verifiers/), prefill, then decode token by token, sampling locally.
 * What web apps, the CLI and the relay's API call.
 */
import { createSampler, drawFrom, logprobsOf, samplingDistribution } from '../sampler.js'
import { mulberry32 } from '../rng.js'
import { lastRow } from '../pipeline.js'
import { InputError, VerificationError } from '../errors.js'
import type { Capability } from '../protocol/capability.js'
import { MAX_STEP_TOKENS } from '../protocol/limits.js'
import type { PeerDirectory } from '../route/directory.js'
import { chooseModel } from '../route/model.js'
import { acceptDrafts, acceptSampled, checkSpeculation, chooseGamma, type Draft } from './draft.js'
import { coverage, findRoute, type RouteCosts } from '../route/route.js'
import type { ClaimSink } from '../optimistic/claim.js'
import type { SamplingProof, SamplingProver } from '../zk/argmax.js'
import { BanList } from './bans.js'
import { CircuitBreaker, type BreakerOptions } from './breaker.js'
import { CLIENT_DEFAULTS } from './config.js'
import { NO_LEDGER, type LedgerLink } from './ledger-link.js'
import type { Dialer, HopTimeouts } from './remote-hop.js'
import { RoutedSession, type SessionEnv } from './session.js'
import { normalizeVerification, verifierFor, type OptimisticVerifier, type Verification } from './verifiers/index.js'
import type { GenerationRequest, GenerationResult, Generator, NetworkView, Settlement, TokenEvent } from './types.js'

export { normalizeVerification } from './verifiers/index.js'
/** The hop time-outs a client uses unless told otherwise (config.ts says why). */
export const DEFAULT_TIMEOUTS: HopTimeouts = CLIENT_DEFAULTS.timeouts

export interface ClientConfig {
  dialer: Dialer
  directory: PeerDirectory
  /** Dial + open, and a step's reply (see HopTimeouts: scaled to the peer's speed). */
  timeouts?: Partial<HopTimeouts>
  /** First ban of a failed peer in ms; doubles on each repeat (Petals: 15 s). */
  banMs?: number
  /** Failovers per job before the generation (or the check) gives up. */
  maxRetries?: number
  /** Routing costs (default RTT for unknown peers, penalty for full peers). */
  costs?: Partial<RouteCosts>
  /** Verification for requests that do not choose (default none). */
  verification?: GenerationRequest['verification']
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
  /** A draft model beside the sampler, for requests that ask to speculate (client/draft.ts). */
  draft?: Draft
  /** Forward node to node for requests that do not choose (GenerationRequest.forward; default off). */
  forward?: boolean
}

export interface Client extends Generator {
  network(): Promise<NetworkView>
  /** The verification circuit breaker's state. */
  readonly breaker: CircuitBreaker
}

export function createClient(cfg: ClientConfig): Client {
  const costs = { ...CLIENT_DEFAULTS.costs, ...cfg.costs }
  const maxRetries = cfg.maxRetries ?? CLIENT_DEFAULTS.maxRetries
  const bans = new BanList(cfg.banMs ?? CLIENT_DEFAULTS.banMs)
  const timeouts = { ...CLIENT_DEFAULTS.timeouts, ...cfg.timeouts }
  const ledger = cfg.ledger ?? NO_LEDGER
  const breaker = new CircuitBreaker({ ...CLIENT_DEFAULTS.breaker, ...cfg.breaker })
  const random = cfg.random ?? Math.random
  const unreachable = cfg.directory.unreachable?.bind(cfg.directory)
  const env: SessionEnv = { dialer: cfg.dialer, bans, ledger, timeouts, maxRetries, random, ...(unreachable !== undefined ? { unreachable } : {}) }

  /** The models the records serve, each with its peers (the directory is listed once per call). */
  function byModel(peers: Capability[]): Array<NetworkView['models'][number] & { peers: Capability[] }> {
    const byRoot = new Map<string, Capability[]>()
    for (const p of peers) {
      const ps = byRoot.get(p.root)
      if (ps === undefined) byRoot.set(p.root, [p])
      else ps.push(p)
    }
    return [...byRoot.entries()].map(([root, ps]) => ({
      name: ps[0].model,
      root,
      layers: ps[0].modelLayers,
      coverage: coverage(ps, ps[0].modelLayers),
      peers: ps
    }))
  }

  async function network(): Promise<NetworkView> {
    const peers = await cfg.directory.list()
    return {
      models: byModel(peers).map(({ peers: _, ...m }) => m),
      peers: peers.map((p) => ({
        peer: p.peer,
        device: p.device,
        model: p.model,
        root: p.root,
        layers: p.layers,
        msPerLayer: p.msPerLayer,
        memory: p.memory,
        kvRoom: p.kvRoom,
        sessions: p.sessions,
        addrs: p.addrs,
        expires: p.expires
      }))
    }
  }

  async function pickModel(want?: string): Promise<{ name: string; root: string; layers: number; peers: Capability[] }> {
    const { coverage: _, ...m } = chooseModel(byModel(await cfg.directory.list()), want)
    return m
  }

  /** Refuses what cannot be run before anything is dialled. */
  function check(req: GenerationRequest): Verification {
    if (req.prompt.length === 0) throw new InputError('the prompt is empty: give at least one token (BOS)')
    // First, before any per-token work: the prefill is one step, and a node refuses a step longer than this.
    if (req.prompt.length > MAX_STEP_TOKENS) {
      throw new InputError(`the prompt is ${req.prompt.length} tokens, and a step may carry at most ${MAX_STEP_TOKENS}: send a shorter prompt`)
    }
    // Ids travel packed in an Int32Array: a larger one would wrap into another token, not fail.
    const bad = req.prompt.findIndex((id) => !(Number.isInteger(id) && id >= 0 && id <= 2 ** 31 - 1))
    if (bad >= 0) throw new InputError(`prompt[${bad}] is ${req.prompt[bad]}: token ids are integers from 0 to ${2 ** 31 - 1}`)
    // The upper bound is the model's context, which the nodes enforce (they know it); here only a count.
    if (!Number.isSafeInteger(req.maxTokens) || req.maxTokens < 1) throw new InputError(`maxTokens must be an integer of at least 1, not ${req.maxTokens}`)
    if (req.logprobs !== undefined && !(Number.isInteger(req.logprobs) && req.logprobs >= 0 && req.logprobs <= 20)) {
      throw new InputError(`logprobs must be an integer from 0 to 20, not ${req.logprobs}`)
    }
    const v = normalizeVerification(req.verification ?? cfg.verification)
    if (v.mode === 'optimistic' && cfg.board === undefined)
      throw new InputError("optimistic verification needs a claim board to post to: ask the relay's API, or give the client a board")
    if (req.proveSampling === true && (req.temperature ?? 0) !== 0) throw new InputError('a sampling proof covers greedy decoding only: use temperature 0')
    if (req.proveSampling === true && cfg.sampling === undefined)
      throw new InputError("this client cannot prove sampling: ask the relay's API of a relay started with --prove-sampling")
    if (req.speculate !== undefined)
      checkSpeculation(req.speculate, {
        draft: cfg.draft,
        optimistic: v.mode === 'optimistic',
        proveSampling: req.proveSampling === true
      })
    return v
  }

  async function* generate(req: GenerationRequest, signal?: AbortSignal): AsyncGenerator<TokenEvent, GenerationResult> {
    const verification = check(req)
    // Health: the model is still covered by peers that are not blacklisted, k deep where redundant asks for it.
    await breaker.admit(async () => {
      try {
        const m = await pickModel(req.model)
        findRoute(
          m.peers.filter((p) => !ledger.excluded(p.peer)),
          0,
          m.layers,
          costs,
          verification.mode === 'redundant' ? verification.k : 1
        )
        return { ok: true, reason: '' }
      } catch (err) {
        return { ok: false, reason: (err as Error).message }
      }
    })
    const model = await pickModel(req.model)
    const verifier = verifierFor(verification, random)
    const session = new RoutedSession(env, {
      root: model.root,
      nLayers: model.layers,
      peers: async () => (await cfg.directory.list()).filter((p) => p.root === model.root),
      verifier,
      costs: { ...costs, tokensNeeded: req.prompt.length + req.maxTokens },
      ...(req.avoid !== undefined ? { avoid: new Set(req.avoid) } : {}),
      commitLogits: req.proveSampling === true,
      fallback: req.verification?.fallback === true,
      forward: req.forward ?? cfg.forward ?? false
    })
    const sample = createSampler(req)
    const gamma = req.speculate?.gamma ?? 0
    const speculated = { passes: 0, drafted: 0, kept: 0 }
    const spec = speculator(req)
    const started = performance.now()
    let firstTokenMs = 0
    const tokens: number[] = []
    let finishReason: 'length' | 'stop' = 'length'
    let hops: TokenEvent['hops'] = []
    let unverifiable = false
    // Poseidon and the argmax rules load only when a proof is asked for (most pages never do).
    const prover = req.proveSampling === true ? await samplingProver(cfg.sampling!) : undefined
    try {
      await session.start()
      // A long prompt goes in chunks, so that no hop's reply outgrows a message; only the last chunk's logits are sampled.
      let next: number[] = req.prompt
      while (next.length > CLIENT_DEFAULTS.prefillChunk) {
        if (signal?.aborted === true) throw signal.reason
        await session.step(next.slice(0, CLIENT_DEFAULTS.prefillChunk))
        next = next.slice(CLIENT_DEFAULTS.prefillChunk)
      }
      decode: while (tokens.length < req.maxTokens) {
        if (signal?.aborted === true) throw signal.reason
        // Speculating, the draft guesses ahead (no further than the tokens left after the target's own) and one pass checks them all.
        const drafts =
          gamma > 0 ? await spec.propose(cfg.draft!, [...req.prompt, ...tokens], Math.min(spec.gamma(gamma), req.maxTokens - tokens.length - 1)) : []
        const at = session.position
        const passStarted = performance.now()
        const { out, trace, receipt } = await session.step([...next, ...drafts])
        const passMs = performance.now() - passStarted
        hops = trace
        // Row j of the pass's last drafts.length + 1 rows: the target's logits after next and drafts[0..j).
        const rows = drafts.length + 1
        const rowAt = (j: number): Float32Array => out.data.subarray((out.seq - rows + j) * out.width, (out.seq - rows + j + 1) * out.width)
        let ids: number[]
        if (drafts.length === 0) {
          const logits = lastRow(out)
          ids = [prover === undefined ? sample(logits) : prover.next(logits, { index: tokens.length, peer: trace[trace.length - 1].peer, receipt })]
        } else {
          const verdict = spec.accept(drafts, rowAt, sample, passMs)
          // The rejected drafts leave every hop's cache at the next step (it starts where the kept rows end).
          if (verdict.kept < drafts.length) session.rewind(at + next.length + verdict.kept)
          speculated.passes++
          speculated.drafted += drafts.length
          speculated.kept += verdict.kept
          ids = verdict.tokens
        }
        for (const [j, id] of ids.entries()) {
          if (tokens.length === 0) firstTokenMs = performance.now() - started
          tokens.push(id)
          const status = session.unverified ? ('unverified' as const) : verification.mode === 'optimistic' ? ('pending' as const) : undefined
          const lp = req.logprobs !== undefined ? logprobsOf(rowAt(j), id, req.logprobs) : undefined
          yield { id, index: tokens.length - 1, hops, ...(lp !== undefined ? lp : {}), ...(status !== undefined ? { status } : {}) }
          if (req.stopIds?.includes(id) === true || req.until?.() === true) {
            finishReason = 'stop'
            break decode
          }
        }
        next = [ids[ids.length - 1]]
      }
    } catch (err) {
      unverifiable = err instanceof VerificationError
      throw err
    } finally {
      session.close()
      if (unverifiable || session.seen.checks > 0) breaker.record(!unverifiable)
    }
    const sampling = prover === undefined ? undefined : await prover.proofs()
    const seen = session.seen
    // Peers whose work was checked and held up all along earn reputation: not one caught, nor one failed over (a staller).
    const failed = new Set([...seen.faults.map((f) => f.accused), ...seen.switches.map((s) => s.failed)])
    for (const p of seen.vouched) if (!failed.has(p)) ledger.observe(p, true)
    let settlement: Promise<Settlement> | undefined
    let claim: string | undefined
    if (verification.mode === 'optimistic') {
      const posted = (verifier as OptimisticVerifier).claim({ id: session.id, root: model.root, window: verification.window, slots: session.fed() })
      claim = posted.id
      // Overturned: the corrected tokens come from a generation that avoids whoever was caught, itself
      // checked (redundant), or another colluder could serve the correction; none when it cannot run.
      settlement = cfg.board!.submit(posted, async (challenges) => {
        const caught = challenges.filter((ch) => ch.outcome === 'overturned').map((ch) => ch.accused)
        return await tokensOf(
          generate({
            ...req,
            until: undefined,
            logprobs: undefined,
            proveSampling: false,
            verification: { mode: 'redundant', k: 2 },
            avoid: [...(req.avoid ?? []), ...caught]
          })
        )
      })
      settlement.catch(() => {}) // a caller that never looks must not crash the process
    }
    return {
      model: model.name,
      root: model.root,
      prompt: req.prompt,
      tokens,
      finishReason,
      route: { hops, switches: seen.switches },
      verification: {
        mode: verification.mode,
        ...(verification.mode === 'redundant' ? { k: verification.k } : verification.mode === 'spot' ? { p: verification.p } : {}),
        ...seen.verification(),
        ...(claim !== undefined ? { claim, window: verification.window, status: 'pending' as const } : {}),
        ...(session.unverified ? { status: 'unverified' as const } : {})
      },
      timings: { firstTokenMs, totalMs: performance.now() - started },
      ...(gamma > 0 ? { speculation: { gamma, ...speculated } } : {}),
      ...(seen.forwarded.steps > 0 ? { forwarded: { ...seen.forwarded } } : {}),
      ...(settlement !== undefined ? { settlement } : {}),
      ...(sampling !== undefined ? { sampling } : {})
    }
  }

  return { generate, network, breaker }
}

/** Greedy over the quantized logits the last hop committed to; each token proved beside the generation, awaited at the end. */
async function samplingProver(provers: (vocab: number) => SamplingProver | undefined): Promise<{
  next: (logits: Float32Array, at: { index: number; peer: string; receipt: Uint8Array }) => number
  proofs: () => Promise<SamplingProof[]>
}> {
  const zk = await import('../zk/argmax.js')
  const pending: Array<Promise<SamplingProof>> = []
  return {
    next(logits, { index, peer, receipt }) {
      const q = zk.quantizeLogits(logits)
      const token = zk.provedArgmax(q)
      const prover = provers(q.length)
      if (prover === undefined) throw new InputError(`this client has no sampling circuit for a vocabulary of ${q.length}`)
      const p = prover.prove(q, token).then((r) => ({ index, token, vocab: q.length, peer, receipt, proof: r.proof, publicSignals: r.publicSignals }))
      p.catch(() => {}) // awaited in proofs(); a generation that fails first must not leave it unhandled
      pending.push(p)
      return token
    },
    proofs: async () => await Promise.all(pending)
  }
}

async function tokensOf(gen: AsyncGenerator<TokenEvent, GenerationResult>): Promise<number[]> {
  let r = await gen.next()
  while (r.done !== true) r = await gen.next()
  return r.value.tokens
}

/**
 * One generation's speculation: the draft's picks (sampling, each token drawn from the draft's
 * distribution, which is kept for the acceptance rule), the target's verdict (greedy: the agreeing
 * prefix; sampling: speculative sampling, exact in distribution), and γ chosen each pass from the
 * acceptance rate and timings seen (unless `adapt: false`).
 */
function speculator(req: GenerationRequest): {
  gamma: (max: number) => number
  propose: (draft: Draft, context: number[], n: number) => Promise<number[]>
  accept: (drafts: number[], rowAt: (j: number) => Float32Array, sample: (logits: Float32Array) => number, passMs: number) => { kept: number; tokens: number[] }
} {
  const sampling = (req.temperature ?? 0) > 0
  // Its own stream: the draft's draws and the acceptance draws must not shift the plain sampler's.
  const rand = mulberry32(((req.seed ?? 0) ^ 0x5bd1e995) >>> 0)
  const dist = (logits: Float32Array): Float64Array => samplingDistribution(logits, req)
  const seen = { kept: 0, rejections: 0 }
  let q: Float64Array[] = []
  let passMs: number | undefined
  let draftMs: number | undefined
  const ema = (prev: number | undefined, x: number): number => (prev === undefined ? x : 0.7 * prev + 0.3 * x)
  return {
    gamma: (max) => (req.speculate?.adapt === false || passMs === undefined || draftMs === undefined ? max : chooseGamma(seen, passMs, draftMs, max)),
    async propose(draft, context, n) {
      q = []
      const started = performance.now()
      const pick = sampling
        ? (logits: Float32Array): number => {
            const d = dist(logits)
            q.push(d)
            return drawFrom(d, rand())
          }
        : undefined
      const drafts = await draft.propose(context, n, pick)
      if (drafts.length > 0) draftMs = ema(draftMs, (performance.now() - started) / drafts.length)
      return drafts
    },
    accept(drafts, rowAt, sample, ms) {
      passMs = ema(passMs, ms)
      const verdict = sampling
        ? acceptSampled(
            drafts,
            drafts.map((_, j) => (q.length === drafts.length ? q[j] : undefined)),
            Array.from({ length: drafts.length + 1 }, (_, j) => dist(rowAt(j))),
            rand
          )
        : acceptDrafts(
            drafts,
            Array.from({ length: drafts.length + 1 }, (_, j) => sample(rowAt(j)))
          )
      seen.kept += verdict.kept
      if (verdict.kept < drafts.length) seen.rejections++
      return verdict
    }
  }
}
