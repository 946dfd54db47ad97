/**
 * One sequence routed through remote peers, surviving their failures (Petals' inference session).
 *
 * The route is a list of slots, one per layer range (slot.ts). Each step runs every slot's lanes
 * and hands their answers to the request's verifier (verifiers/), which decides what goes on.
 *
 * Failover, one policy: a failed peer is banned and replaced by another serving exactly the
 * slot's layers, which is fed the slot's history in one prefill to rebuild the KV cache before the
 * step goes on. Only where the verifier allows it (nothing compares or audits the slot's past)
 * and no such peer is left are the layers routed again over several peers (the slot is re-cut).
 * Every job (a lane's step, a new lane, a checker, a referee) follows one retry rule (failover.ts).
 */
import { seqOf, type HopInput, type HopOutput } from '../runner.js'
import { HopError, InputError, NoRouteError, TesseraError, VerificationError } from '../errors.js'
import type { RouteCosts } from '../route/route.js'
import type { Capability } from '../protocol/capability.js'
import type { BanList } from './bans.js'
import type { LedgerLink } from './ledger-link.js'
import { Failover } from './failover.js'
import { PeerPicker } from './picker.js'
import type { Dialer, HopResult, HopTimeouts, RemoteHop } from './remote-hop.js'
import { SessionReport } from './report.js'
import { encodeInputs } from '../verify/reexec.js'
import { answerOf, concatInputs, headRows, newSlot, rearrange, traceOf, type Slot } from './slot.js'
import type { HopTrace } from './types.js'
import type { Answer, StepContext, Verifier } from './verifiers/verifier.js'
import { logger } from '../log.js'

const log = logger('tessera:client:session')

/** What every session of a client shares: how it reaches peers, whom it bans and trusts, how long it waits. */
export interface SessionEnv {
  dialer: Dialer
  bans: BanList
  ledger: LedgerLink
  timeouts: HopTimeouts
  /** Failovers allowed per job before it gives up. */
  maxRetries: number
  /** For drawing peers (tests may seed it). */
  random: () => number
  /** Tells the directory a peer could not be dialled (the relay drops a record several clients cannot reach). */
  unreachable?: (peer: string) => void
}

/** What this session is for: a model, its peers, the request's verifier and routing costs. */
export interface SessionPlan {
  root: string
  nLayers: number
  /** Live capability records of the model's peers. */
  peers: () => Promise<Capability[]>
  verifier: Verifier
  costs: RouteCosts
  /** Peers this session must not use at all. */
  avoid?: ReadonlySet<string>
  /** Ask the last hop to sign a commitment to each step's logits (a sampling proof). */
  commitLogits?: boolean
  /** Run unchecked where the verifier needs a second peer and none exists (every token then says unverified); else refuse. */
  fallback?: boolean
  /** Hops hand their output to the next hop themselves (node to node); the client still checks every hop. */
  forward?: boolean
}

type SessionDeps = SessionEnv & SessionPlan

/** A step's walk so far: the slots it went through (a re-cut may split one), their traces, the last answer. */
interface Walked {
  slots: Slot[]
  trace: HopTrace[]
  last?: Answer
}

export interface StepResult {
  out: HopOutput
  trace: HopTrace[]
  receipt: Uint8Array
}

let sessionCounter = 0

export class RoutedSession {
  readonly id = `s${Date.now().toString(36)}-${(sessionCounter++).toString(36)}`
  private slots: Slot[] = []
  /** Tokens every slot's caches hold. */
  private length = 0
  private steps = 0
  private readonly report = new SessionReport()
  private readonly pick: PeerPicker
  private readonly retry: Failover

  private readonly d: SessionDeps
  /** Some slot could not be checked as the mode asks, and the request allowed it (`fallback`). */
  unverified = false
  /** Peers convicted in this session. */
  private readonly convicted = new Set<string>()

  constructor(env: SessionEnv, plan: SessionPlan) {
    const d = { ...env, ...plan }
    this.d = d
    this.pick = new PeerPicker({ ...d, standing: d.verifier.mode !== 'none', inbox: d.forward === true })
    this.retry = new Failover({
      pick: this.pick,
      bans: d.bans,
      ledger: d.ledger,
      report: this.report,
      maxRetries: d.maxRetries,
      step: () => this.steps,
      ...(d.unreachable !== undefined ? { unreachable: d.unreachable } : {})
    })
  }

  /** Routes the whole model (k deep for redundant) and opens every slot's lanes. */
  async start(): Promise<void> {
    for (const r of await this.pick.route(0, this.d.nLayers, { k: this.d.verifier.lanes })) {
      const slot = newSlot(r.layers)
      this.slots.push(slot)
      await this.fill(slot)
      if (this.d.verifier.checker) await this.needChecker(slot)
    }
  }

  /** spot re-runs steps on a second peer: with none for a slot the mode cannot run, and saying so beats a silent `checks: 0`. */
  private async needChecker(slot: Slot): Promise<void> {
    if (await this.pick.hasOther(slot)) return
    if (this.d.fallback === true) {
      this.unverified = true
      return
    }
    const mode = this.d.verifier.mode
    throw new NoRouteError(
      `${mode} verification needs a second live peer serving layers [${slot.layers.join(',')}) and there is none: ` +
        'add one, choose another mode, or allow it to run unverified (verification.fallback)'
    )
  }

  /** Feeds tokens through every slot; returns the logits, who computed (and checked) what, and the last hop's receipt. */
  async step(tokens: number[]): Promise<StepResult> {
    for (const slot of this.slots) await this.fill(slot)
    const forwarding = this.d.forward === true && this.slots.length > 1 && this.slots.every((s) => s.lanes.every((h) => h.target !== undefined))
    const r = forwarding ? await this.forwarded(tokens) : await this.through(0, { tokens }, { slots: [], trace: [] })
    if (r.last === undefined) throw new TesseraError('BAD_ROUTE', 'empty route')
    if (r.last.out.kind !== 'logits') throw new TesseraError('BAD_ROUTE', 'the route ended without logits')
    this.slots = r.slots
    this.length += tokens.length
    this.steps++
    for (const h of r.trace) this.report.hop(h)
    return { out: r.last.out, trace: r.trace, receipt: r.last.receipt }
  }

  /** The step through the client, from slot `i` on: each slot's output comes back here and goes on to the next. */
  private async through(i: number, input: HopInput, done: Walked): Promise<Walked> {
    for (const slot of this.slots.slice(i)) {
      const r = await this.runSlot(slot, input)
      done.slots.push(...r.slots)
      done.trace.push(...r.hops)
      done.last = r.used
      input = { hidden: r.used.out.data, seq: r.used.out.seq }
    }
    return done
  }

  /**
   * The step node to node: every hop gets its message at once; lane 0 of each slot hands its output
   * to every lane of the next (all of a slot's lanes compute from the same rows, as when the client
   * sends them), and each hop's output and receipt still come back here. Slots are then decided in
   * order, as through the client. Where a slot cannot be (a hop failed, a handoff disagrees with what
   * the client got, the handing lane lost the vote), the step goes on through the client from there;
   * what the hops after it computed is dropped unjudged, since it may rest on rows nobody checked.
   */
  private async forwarded(tokens: number[]): Promise<Walked> {
    const slots = this.slots
    const start = this.length
    const handers = slots.map((s) => s.lanes[0].peer.peer) // who hands each slot's output on
    this.report.forwarded.steps++
    const flights: Array<Array<Promise<HopResult>>> = []
    slots.forEach((slot, i) => {
      const next = slots[i + 1]
      flights.push(
        slot.lanes.map((hop, j) => {
          const o = j === 0 && next !== undefined ? { to: next.lanes.map((h) => h.target!) } : {}
          if (i === 0) return hop.forward({ tokens }, start, o)
          const up = flights[i - 1][0]
          const rows = up.then((r) => ({ hidden: r.data, seq: r.seq, handedOff: !(r.unsent ?? []).includes(hop.target!.inbox) }))
          return hop.expect(handers[i - 1], tokens.length, rows, start, o)
        })
      )
    })
    for (const f of flights.flat()) f.catch(() => {}) // each is awaited below, or settled before the step goes on
    const done: Walked = { slots: [], trace: [] }
    let input: HopInput = { tokens }
    for (let i = 0; i < slots.length; i++) {
      const slot = slots[i]
      const v = this.d.verifier
      const sampled = v.sample()
      const checker = sampled ? this.runChecker(slot, input) : undefined // fed by the client, beside the lanes
      const settled = await Promise.allSettled(flights[i])
      if (settled.some((x) => x.status === 'rejected')) {
        await checker
        return await this.abandon(flights.slice(i), i, input, done)
      }
      const answers = settled.map((x, j) =>
        answerOf(slot.lanes[j], (x as PromiseFulfilledResult<HopResult>).value, tokens.length, this.d.ledger.weight(slot.lanes[j].peer.peer))
      )
      const handed = answers[0] // what the next slot computed from
      const lanes = [...slot.lanes]
      const r = await this.conclude(slot, input, answers, sampled, await checker)
      done.slots.push(...r.slots)
      done.trace.push(...r.hops.map((h) => (i > 0 ? { ...h, handedBy: handers[i - 1] } : h)))
      done.last = r.used
      if (i + 1 < slots.length && (r.losers.has(handed.peer) || slot.lanes[0] !== lanes[0])) {
        return await this.abandon(flights.slice(i + 1), i + 1, { hidden: r.used.out.data, seq: r.used.out.seq }, done)
      }
      input = { hidden: handed.out.data, seq: handed.out.seq }
    }
    return done
  }

  /** The rest of a forwarded step through the client: the hops' forwarded answers are awaited (their streams stay in step) and dropped. */
  private async abandon(rest: Array<Array<Promise<HopResult>>>, i: number, input: HopInput, done: Walked): Promise<Walked> {
    await Promise.allSettled(rest.flat())
    log.debug(`step ${this.steps}: forwarding stopped at slot ${i}; the rest goes through the client`)
    this.report.forwarded.dropped++
    return await this.through(i, input, done)
  }

  /** Tokens every slot's caches hold. */
  get position(): number {
    return this.length
  }

  /**
   * Drops every row from `n` on (the drafts a speculative check rejected): each slot's history
   * keeps its first `n` rows, and the next step starts at `n`, which tells every lane's node to
   * drop them too (shared/protocol/infer.ts). A replacement is fed the rows kept.
   */
  rewind(n: number): void {
    if (!Number.isInteger(n) || n < 0 || n > this.length) throw new InputError(`cannot rewind a session of ${this.length} tokens to ${n}`)
    for (const slot of this.slots) slot.history = headRows(slot.history, n)
    this.length = n
  }

  /** What the session saw: switches, faults, checks, vouched peers, per-hop summaries. */
  get seen(): SessionReport {
    return this.report
  }

  /** Each slot's layers and every row it was fed (what an optimistic claim audits). */
  fed(): Array<{ layers: [number, number]; inputs: HopInput }> {
    return this.slots.map((s) => ({ layers: s.layers, inputs: concatInputs(s.history) }))
  }

  close(): void {
    for (const s of this.slots) {
      for (const h of s.lanes) h.close()
      s.checker?.hop.close()
    }
  }

  /** One slot, one step: its lanes (and a sampled checker, beside them), the verifier's decision, the lanes rearranged. */
  private async runSlot(slot: Slot, input: HopInput): Promise<{ used: Answer; hops: HopTrace[]; slots: Slot[] }> {
    const v = this.d.verifier
    await this.fill(slot)
    // A sampled spot check runs beside the lanes, not after them: it costs compute, not latency.
    const sampled = v.sample()
    let cause: HopError | undefined
    let answers: Answer[]
    let checker: Answer | undefined
    try {
      ;[answers, checker] = await Promise.all([
        Promise.all(
          slot.lanes.map(
            async (_, j) =>
              await this.runLane(slot, j, input, (err) => {
                cause = err
              })
          )
        ),
        sampled ? this.runChecker(slot, input) : undefined
      ])
    } catch (err) {
      if (!(err instanceof NoRouteError) || !v.recut || cause === undefined) throw err
      return await this.retry.recut(slot, input, cause)
    }
    return await this.conclude(slot, input, answers, sampled, checker)
  }

  /** A slot-step's answers decided: convictions, taint, who vouched, the lanes rearranged, the input kept in the history. */
  private async conclude(
    slot: Slot,
    input: HopInput,
    answers: Answer[],
    sampled: boolean,
    checker: Answer | undefined
  ): Promise<{ used: Answer; hops: HopTrace[]; slots: Slot[]; losers: Set<string> }> {
    const v = this.d.verifier
    if (sampled && checker === undefined && v.checker === true) await this.needChecker(slot)
    const pool = checker === undefined ? answers : [...answers, checker]
    const d = await v.decide(pool, this.context(slot, input))
    // An earlier step whose output rests only on peers convicted by now tainted every token since: none of them may be returned.
    for (const a of d.losers) this.convicted.add(a.peer)
    // Only a conviction can taint a step: with none in this session (the usual case) there is nothing to scan.
    const tainted = this.convicted.size === 0 ? undefined : slot.vouched.find((r) => r.peers.every((p) => this.convicted.has(p)))
    if (tainted !== undefined) {
      throw new VerificationError(
        `${tainted.peers.length > 1 ? 'peers' : 'peer'} ${tainted.peers.map((p) => p.slice(-8)).join(', ')} ${tainted.peers.length > 1 ? 'were' : 'was'} caught on layers [${slot.layers.join(',')}) at step ${this.steps}, and tokens from step ` +
          `${tainted.step} on were computed through it: the generation is refused rather than return them`
      )
    }
    const losers = new Set(d.losers.map((a) => a.peer))
    slot.vouched.push({ step: this.steps, peers: [d.used.peer, ...d.checkedBy.filter((p) => !losers.has(p) && d.verdict !== 'unchecked')] })
    rearrange(slot, { lanes: v.lanes, losers: d.losers, spares: [checker, d.referee] })
    slot.history.push(input)
    const accused = d.losers.length > 0 ? { accused: d.losers.map((a) => a.peer) } : {}
    return {
      used: d.used,
      hops: [{ ...traceOf(d.used.hop, d.used.out), checkedBy: d.checkedBy, verdict: d.verdict, ...accused }],
      slots: [slot],
      losers
    }
  }

  private context(slot: Slot, input: HopInput): StepContext {
    return {
      layers: slot.layers,
      step: this.steps,
      session: this.id,
      position: this.length,
      referee: async (involved) => await this.runReferee(slot, input, involved),
      ban: (peer) => {
        this.d.bans.ban(peer)
      },
      inputs: () => encodeInputs(concatInputs([...slot.history, input])),
      ledger: this.d.ledger,
      report: this.report
    }
  }

  /** Lane j's answer for this step; a failed peer is replaced (and the replacement fed the history). */
  private async runLane(slot: Slot, j: number, input: HopInput, onFail: (err: HopError) => void): Promise<Answer> {
    let first: HopError | undefined
    const { hop, value } = await this.retry.run(
      slot,
      {
        hop: slot.lanes[j],
        onFail: (err) => {
          first ??= err
          onFail(err)
        }
      },
      async (hop, fresh) => {
        if (!fresh) return await this.feed(hop, [input], this.length)
        return await this.feed(hop, [...slot.history, input])
      }
    )
    if (first !== undefined) {
      slot.lanes[j] = hop
      this.report.switches.push({ step: this.steps, failed: first.peer, layers: slot.layers, reason: first.message, replacement: [traceOf(hop, value.out)] })
    }
    return value
  }

  /**
   * spot: a checker drawn afresh for each sampled step, fed the slot's history and this input in
   * one prefill; undefined if none can run. Keeping one checker would be cheaper, but a primary
   * whose partner was drawn as its checker would then escape every step of the generation.
   */
  private async runChecker(slot: Slot, input: HopInput): Promise<Answer | undefined> {
    slot.checker?.hop.close()
    slot.checker = undefined
    try {
      return (
        await this.retry.run(
          slot,
          {
            onFail: () => {
              slot.checker = undefined
            }
          },
          async (hop) => {
            slot.checker = { hop }
            return await this.feed(hop, [...slot.history, input])
          }
        )
      ).value
    } catch (err) {
      if (err instanceof HopError || err instanceof NoRouteError) {
        // Nobody else serves these layers now: the step goes unchecked, and the log says why.
        log.warn(`layers [${slot.layers.join(',')}) step ${this.steps}: a sampled check could not run: ${err.message}`)
        return undefined
      }
      throw err
    }
  }

  /** A peer outside the dispute replays the slot's history and this input; undefined if none can. */
  private async runReferee(slot: Slot, input: HopInput, involved: string[]): Promise<Answer | undefined> {
    try {
      return (await this.retry.run(slot, { skip: involved }, async (hop) => await this.feed(hop, [...slot.history, input]))).value
    } catch (err) {
      if (err instanceof HopError || err instanceof NoRouteError) return undefined
      throw err
    }
  }

  /** Tops a slot up to the verifier's number of lanes, feeding each newcomer the history. */
  private async fill(slot: Slot): Promise<void> {
    while (slot.lanes.length < this.d.verifier.lanes) {
      const { hop } = await this.retry.run(slot, {}, async (hop) => {
        if (slot.history.length > 0) await this.feed(hop, slot.history)
      })
      slot.lanes.push(hop)
    }
  }

  /** Sends `inputs` as one step starting at `start` (0: a replay); the answer covers the last input's rows. */
  private async feed(hop: RemoteHop, inputs: HopInput[], start = 0): Promise<Answer> {
    return answerOf(hop, await hop.forward(concatInputs(inputs), start), seqOf(inputs[inputs.length - 1]), this.d.ledger.weight(hop.peer.peer))
  }
}
