/**
 * One sequence routed through remote peers, surviving their failures (Petals' inference
 * session). Each hop keeps every input it was sent; when a hop fails, its peer is banned, the
 * hop's layers are routed again among the others, and the kept inputs are replayed in one
 * prefill to rebuild the KV cache on the replacement before the step goes on.
 */
import type { Capability } from '../protocol/capability.js'
import type { HopInput, HopOutput } from '../runner.js'
import { HopError, InputError, NoRouteError, TesseraError } from '../errors.js'
import { logger } from '../log.js'
import { BanList } from './bans.js'
import { openRemoteHop, type Dialer, type HopTimeouts, type RemoteHop } from './remote-hop.js'
import { findRoute, type RouteCosts } from './route.js'
import type { HopTrace, RouteSwitch } from './types.js'

const log = logger('tessera:client:session')

export interface SessionDeps {
  dialer: Dialer
  /** Live capability records of the model's peers. */
  peers: () => Promise<Capability[]>
  bans: BanList
  root: string
  nLayers: number
  timeouts: HopTimeouts
  costs: RouteCosts
  /** Failovers allowed per step before giving up. */
  maxRetries: number
}

interface LiveHop { hop: RemoteHop, history: HopInput[] }

let sessionCounter = 0

/** Error codes that blame the request, not the peer: no failover, the caller hears of it. */
const CALLER_FAULTS = new Set(['MALFORMED', 'TOO_LARGE', 'BAD_STEP'])

export class RoutedSession {
  private hops: LiveHop[] = []
  private length = 0
  readonly switches: RouteSwitch[] = []
  private readonly id = `s${Date.now().toString(36)}-${(sessionCounter++).toString(36)}`
  private steps = 0

  constructor (private readonly d: SessionDeps) {}

  /** Opens hops over the whole model. */
  async start (): Promise<void> {
    this.hops = await this.openSpan(0, this.d.nLayers)
  }

  /** Feeds tokens through every hop; returns the logits and who computed what. */
  async step (tokens: number[]): Promise<{ out: HopOutput, trace: HopTrace[] }> {
    let input: HopInput = { tokens }
    const trace: HopTrace[] = []
    for (let i = 0; i < this.hops.length; i++) {
      const { out, hops } = await this.forwardHop(i, input)
      trace.push(...hops)
      // a replacement may have split hop i into several: skip past them
      i += hops.length - 1
      input = { hidden: out.data, seq: out.seq }
      if (i === this.hops.length - 1) {
        if (out.kind !== 'logits') throw new TesseraError('BAD_ROUTE', 'the route ended without logits')
        this.length += tokens.length
        this.steps++
        return { out, trace }
      }
    }
    throw new TesseraError('BAD_ROUTE', 'empty route')
  }

  close (): void { for (const h of this.hops) h.hop.close() }

  /** Runs hop i, replacing it (and replaying its history) as often as it fails. */
  private async forwardHop (i: number, input: HopInput): Promise<{ out: HopOutput, hops: HopTrace[] }> {
    for (let attempt = 0; ; attempt++) {
      const live = this.hops[i]
      try {
        const out = await live.hop.forward(input, this.length)
        live.history.push(input)
        return { out, hops: [{ peer: live.hop.peer.peer, device: live.hop.device, layers: live.hop.layers, ms: out.ms, nodeMs: out.nodeMs }] }
      } catch (err) {
        // The peer says our input is wrong: another peer would say the same.
        if (err instanceof HopError && CALLER_FAULTS.has(err.code)) throw new InputError(err.message)
        if (!(err instanceof HopError) || attempt >= this.d.maxRetries) throw err
        log.info(`hop [${live.hop.layers.join(',')}) on ${err.peer.slice(-8)} failed (${err.message}); re-routing`)
        this.d.bans.ban(err.peer)
        live.hop.close()
        const replaced = await this.replace(i, input, err)
        if (replaced !== undefined) return replaced
      }
    }
  }

  /**
   * Routes hop i's layers again and replays its history plus the current input through the new
   * hops in one prefill each. Returns the current step's output, or undefined if a replacement
   * failed too (the caller tries again).
   */
  private async replace (i: number, input: HopInput, cause: HopError): Promise<{ out: HopOutput, hops: HopTrace[] } | undefined> {
    const old = this.hops[i]
    const [a, b] = old.hop.layers
    let fresh: LiveHop[]
    try {
      fresh = await this.openSpan(a, b, cause.peer)
    } catch (err) {
      if (err instanceof HopError) { this.d.bans.ban(err.peer); return undefined }
      throw err
    }
    const history = [...old.history, input]
    let replay = concatInputs(history)
    const traces: HopTrace[] = []
    let out: HopOutput | undefined
    try {
      for (const h of fresh) {
        const r = await h.hop.forward(replay, 0)
        h.history.push(replay)
        traces.push({ peer: h.hop.peer.peer, device: h.hop.device, layers: h.hop.layers, ms: r.ms, nodeMs: r.nodeMs })
        out = r
        replay = { hidden: r.data, seq: r.seq }
      }
    } catch (err) {
      for (const h of fresh) h.hop.close()
      if (err instanceof HopError) { this.d.bans.ban(err.peer); return undefined }
      throw err
    }
    this.hops.splice(i, 1, ...fresh)
    this.switches.push({ step: this.steps, failed: cause.peer, layers: [a, b], reason: cause.message, replacement: traces })
    // Only the current input's rows are the step's output; the rest rebuilt the cache.
    const seq = 'tokens' in input ? input.tokens.length : input.seq
    const o = out!
    return { out: { ...o, data: o.data.subarray((o.seq - seq) * o.width), seq }, hops: traces }
  }

  /**
   * Opens hops over [from, to). Banned peers are avoided; if that leaves no route, banned peers
   * other than `failed` are tried after all (a ban after a time-out may have hit an honest but
   * busy peer, and a slow route beats none).
   */
  private async openSpan (from: number, to: number, failed?: string): Promise<LiveHop[]> {
    const all = (await this.d.peers()).filter((p) => p.root === this.d.root && p.peer !== failed)
    let route
    try {
      route = findRoute(all.filter((p) => !this.d.bans.isBanned(p.peer)), from, to, this.d.costs)
    } catch (err) {
      if (!(err instanceof NoRouteError)) throw err
      route = findRoute(all, from, to, this.d.costs)
    }
    const opened: LiveHop[] = []
    try {
      for (const r of route) opened.push({ hop: await openRemoteHop(this.d.dialer, r.peer, r.layers, this.d.root, this.id, this.d.timeouts), history: [] })
    } catch (err) {
      for (const h of opened) h.hop.close()
      throw err
    }
    return opened
  }
}

function concatInputs (inputs: HopInput[]): HopInput {
  if (inputs.length === 1) return inputs[0]
  if ('tokens' in inputs[0]) return { tokens: inputs.flatMap((x) => Array.from((x as { tokens: ArrayLike<number> }).tokens)) }
  const hidden = inputs as Array<{ hidden: Float32Array, seq: number }>
  const data = new Float32Array(hidden.reduce((n, x) => n + x.hidden.length, 0))
  let at = 0
  for (const x of hidden) { data.set(x.hidden, at); at += x.hidden.length }
  return { hidden: data, seq: hidden.reduce((n, x) => n + x.seq, 0) }
}

export { NoRouteError }
