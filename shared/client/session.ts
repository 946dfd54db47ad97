/**
 * One sequence routed through remote peers, surviving their failures (Petals' inference session)
 * and checking their work (the verification modes).
 *
 * The route is a list of slots, one per layer range. A slot keeps every input it was sent (its
 * history) and one or more lanes: peers running that range in step. When a lane's peer fails,
 * it is banned and another peer is fed the history in one prefill to rebuild the KV cache
 * before the step goes on. With `redundant`, every slot has k lanes and their outputs are
 * compared each step; with `spot`, a checker is brought up to date and compared now and then.
 * On a mismatch a referee replays the history too, the majority wins, and the minority's
 * receipts go to the ledger as evidence.
 */
import type { Capability } from '../protocol/capability.js'
import { seqOf, type HopInput, type HopOutput } from '../runner.js'
import { HopError, InputError, NoRouteError, TesseraError, VerificationError } from '../errors.js'
import { logger } from '../log.js'
import { compareFingerprints, tailFingerprint, type Fingerprint } from '../verify/fingerprint.js'
import { mismatchEvidence, MIN_WITNESSES } from '../verify/evidence.js'
import { tally } from '../verify/vote.js'
import { BanList } from './bans.js'
import type { LedgerLink } from './ledger-link.js'
import type { Claim, HopClaim } from '../optimistic/board.js'
import { openRemoteHop, type Dialer, type HopTimeouts, type RemoteHop } from './remote-hop.js'
import { findRoute, hopCost, serversOf, type RouteCosts } from '../route/route.js'
import type { FaultReport, HopSummary, HopTrace, RouteSwitch, Verdict, VerificationMode } from './types.js'

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
  verification: { mode: VerificationMode, k: number, p: number }
  ledger: LedgerLink
  /** For spot sampling and for drawing lanes (tests may seed it). */
  random: () => number
  /** Peers this session must not use at all (an optimistic re-run avoids whoever was caught). */
  exclude?: ReadonlySet<string>
  /** Ask the last hop to sign a commitment to each step's logits (a sampling proof, zk/argmax.ts). */
  commitLogits?: boolean
}

interface Slot {
  layers: [number, number]
  /** Peers running this range in step; all have been fed the whole history. */
  lanes: RemoteHop[]
  history: HopInput[]
  /** spot: a peer kept for re-runs, fed `fed` entries of the history so far. */
  checker?: { hop: RemoteHop, fed: number }
  /** optimistic: each step's receipt and the row it ends at, for the claim. */
  receipts: HopClaim['entries']
}

/** One peer's answer for one slot and step (its rows for this step only). */
interface Answer {
  hop: RemoteHop
  out: HopOutput & { ms: number, nodeMs: number }
  receipt: Uint8Array
  fp: Fingerprint
  peer: string
  weight: number
}

let sessionCounter = 0

/** Error codes that blame the request, not the peer: no failover, the caller hears of it. */
const CALLER_FAULTS = new Set(['MALFORMED', 'TOO_LARGE', 'BAD_STEP'])

export class RoutedSession {
  private slots: Slot[] = []
  private length = 0
  private steps = 0
  readonly switches: RouteSwitch[] = []
  readonly faults: FaultReport[] = []
  /** Hop-steps compared with someone else's, and how many of those disagreed or came with bad receipts. */
  checks = 0
  failures = 0
  /** Peers whose output was checked and held up; the caller raises their reputation. */
  readonly vouched = new Set<string>()
  /** The closest call among agreeing peers: the honest margin to the fingerprint thresholds. */
  readonly closest = { minOverlap: 1, maxRelErr: 0 }
  private readonly summary = new Map<string, HopSummary>()
  private readonly id = `s${Date.now().toString(36)}-${(sessionCounter++).toString(36)}`

  constructor (private readonly d: SessionDeps) {}

  private get k (): number { return this.d.verification.mode === 'redundant' ? this.d.verification.k : 1 }

  /** Opens lanes over the whole model. */
  async start (): Promise<void> {
    const { ok, fallback } = await this.candidates()
    let route
    try { route = findRoute(ok, 0, this.d.nLayers, this.d.costs, this.k) } catch (err) {
      if (!(err instanceof NoRouteError)) throw err
      route = findRoute(fallback, 0, this.d.nLayers, this.d.costs, this.k) // banned after a time-out is not blacklisted
    }
    for (const r of route) {
      const slot: Slot = { layers: r.layers, lanes: [], history: [], receipts: [] }
      this.slots.push(slot)
      await this.fillLanes(slot)
    }
  }

  /**
   * Feeds tokens through every slot; returns the logits, who computed (and checked) what, and the
   * last hop's signed receipt for the logits used.
   */
  async step (tokens: number[]): Promise<{ out: HopOutput, trace: HopTrace[], receipt: Uint8Array }> {
    let input: HopInput = { tokens }
    const trace: HopTrace[] = []
    for (let i = 0; i < this.slots.length; i++) {
      const { out, hops }: { out: HopOutput, hops: HopTrace[] } = this.d.verification.mode === 'none' ? await this.forwardHop(i, input) : await this.runChecked(this.slots[i], input)
      trace.push(...hops)
      // a replacement may have split slot i into several: skip past them
      i += hops.length - 1
      input = { hidden: out.data, seq: out.seq }
      if (i === this.slots.length - 1) {
        if (out.kind !== 'logits') throw new TesseraError('BAD_ROUTE', 'the route ended without logits')
        this.length += tokens.length
        this.steps++
        for (const h of trace) this.summarize(h)
        // Every path hands on the remote hop's output object itself (or rows of it), receipt included.
        return { out, trace, receipt: (out as HopOutput & { receipt: Uint8Array }).receipt }
      }
    }
    throw new TesseraError('BAD_ROUTE', 'empty route')
  }

  /** Per layer range: who ran it, who checked it, and how the checks went. */
  hopSummaries (): HopSummary[] { return [...this.summary.values()] }

  /** optimistic: what watchers need to audit this generation (receipts and every input row, per hop). */
  claim (window: number): Claim {
    return { id: this.id, root: this.d.root, window, hops: this.slots.map((s) => ({ layers: s.layers, entries: s.receipts, inputs: concatInputs(s.history) })) }
  }

  close (): void {
    for (const s of this.slots) {
      for (const h of s.lanes) h.close()
      s.checker?.hop.close()
    }
  }

  // ---- mode none: one lane, failover may split the slot -------------------------------------

  /** Runs slot i, replacing its peer (and replaying its history) as often as it fails. */
  private async forwardHop (i: number, input: HopInput): Promise<{ out: HopOutput, hops: HopTrace[] }> {
    for (let attempt = 0; ; attempt++) {
      const slot = this.slots[i]
      const hop = slot.lanes[0]
      try {
        const out = await hop.forward(input, this.length)
        slot.history.push(input)
        return { out, hops: [{ ...traceOf(hop, out), checkedBy: [], verdict: 'unchecked' }] }
      } catch (err) {
        this.onHopError(err, slot.layers, attempt)
        hop.close()
        const replaced = await this.replace(i, input, err as HopError)
        if (replaced !== undefined) return replaced
      }
    }
  }

  /**
   * Routes slot i's layers again (possibly over several peers) and replays its history plus the
   * current input through the new slots. Returns the current step's output, or undefined if a
   * replacement failed too (the caller tries again).
   */
  private async replace (i: number, input: HopInput, cause: HopError): Promise<{ out: HopOutput, hops: HopTrace[] } | undefined> {
    const old = this.slots[i]
    const [a, b] = old.layers
    const fresh: Slot[] = []
    try {
      const { ok, fallback } = await this.candidates(cause.peer)
      let route
      try { route = findRoute(ok, a, b, this.d.costs) } catch (err) {
        if (!(err instanceof NoRouteError)) throw err
        // A ban after a time-out may have hit an honest but busy peer: a slow route beats none.
        route = findRoute(fallback, a, b, this.d.costs)
      }
      for (const r of route) fresh.push({ layers: r.layers, lanes: [await this.open(r.peer, r.layers)], history: [], receipts: [] })
    } catch (err) {
      for (const s of fresh) s.lanes[0].close()
      if (err instanceof HopError) { this.d.bans.ban(err.peer); return undefined }
      throw err
    }
    let replay = concatInputs([...old.history, input])
    const traces: HopTrace[] = []
    let out: HopOutput | undefined
    try {
      for (const s of fresh) {
        const r = await s.lanes[0].forward(replay, 0)
        s.history.push(replay)
        traces.push({ ...traceOf(s.lanes[0], r), checkedBy: [], verdict: 'unchecked' })
        out = r
        replay = { hidden: r.data, seq: r.seq }
      }
    } catch (err) {
      for (const s of fresh) s.lanes[0].close()
      if (err instanceof HopError) { this.d.bans.ban(err.peer); return undefined }
      throw err
    }
    this.slots.splice(i, 1, ...fresh)
    this.switches.push({ step: this.steps, failed: cause.peer, layers: [a, b], reason: cause.message, replacement: traces })
    // Only the current input's rows are the step's output; the rest rebuilt the cache.
    const o = out!
    const seq = seqOf(input)
    return { out: { ...o, data: o.data.subarray((o.seq - seq) * o.width), seq }, hops: traces }
  }

  // ---- verified modes: lanes at fixed layers, compared ----------------------------------------

  private async runChecked (slot: Slot, input: HopInput): Promise<{ out: HopOutput, hops: HopTrace[] }> {
    await this.fillLanes(slot)
    // A sampled spot check runs beside the lanes, not after them: it costs compute, not latency.
    const sampled = this.d.verification.mode === 'spot' && this.d.random() < this.d.verification.p
    const [answers, checker] = await Promise.all([
      Promise.all(slot.lanes.map(async (_, j) => await this.runLane(slot, j, input))),
      sampled ? this.runChecker(slot, input) : undefined
    ])
    const pool = checker === undefined ? answers : [...answers, checker]
    const primary = answers[0]
    if (pool.length < 2) {
      slot.history.push(input)
      const optimistic = this.d.verification.mode === 'optimistic'
      if (optimistic) slot.receipts.push({ peer: primary.peer, receipt: primary.receipt, end: this.length + seqOf(input) })
      return { out: primary.out, hops: [{ ...traceOf(primary.hop, primary.out), checkedBy: [], verdict: optimistic ? 'pending' : 'unchecked' }] }
    }
    this.checks++
    let verdict: Verdict = 'agreed'
    let t = tally(pool)
    let referee: Answer | undefined
    if (!t.unanimous) {
      this.failures++
      verdict = 'overruled'
      referee = await this.runReferee(slot, input, pool.map((a) => a.peer))
      if (referee !== undefined) t = tally([...pool, referee])
      // Only a majority of at least two peers settles a dispute (and makes it provable to the ledger).
      if (t.winner.length < MIN_WITNESSES) {
        for (const a of pool) this.d.bans.ban(a.peer)
        const summary = pool.map((a) => a.peer.slice(-8)).join(', ')
        throw new VerificationError(`peers ${summary} disagree on layers [${slot.layers.join(',')}) at step ${this.steps}, and ${referee === undefined ? 'no referee is available' : 'no majority formed'}: no result is returned`)
      }
      await this.convict(slot, t.winner, t.losers)
    }
    for (const a of t.winner) {
      this.vouched.add(a.peer)
      const c = compareFingerprints(t.winner[0].fp, a.fp)
      this.closest.minOverlap = Math.min(this.closest.minOverlap, c.minOverlap)
      this.closest.maxRelErr = Math.max(this.closest.maxRelErr, c.maxRelErr)
    }
    this.rearrange(slot, t.losers, checker, referee)
    slot.history.push(input)
    const used = t.winner.find((a) => a.hop === slot.lanes[0]) ?? t.winner[0]
    return {
      out: used.out,
      hops: [{
        ...traceOf(used.hop, used.out),
        checkedBy: [...pool, ...(referee === undefined ? [] : [referee])].map((a) => a.peer).filter((p) => p !== used.peer),
        verdict,
        ...(t.losers.length > 0 ? { accused: t.losers.map((a) => a.peer) } : {})
      }]
    }
  }

  /** Sends each loser's receipt, with the winners' as witnesses, to the ledger; bans the losers. */
  private async convict (slot: Slot, winners: Answer[], losers: Answer[]): Promise<void> {
    const witnesses = winners.map((w) => w.peer)
    for (const loser of losers) {
      this.d.bans.ban(loser.peer)
      const evidence = mismatchEvidence(this.d.verification.mode === 'spot' ? 'spot' : 'redundant', loser, winners, { layers: slot.layers, step: this.steps, session: this.id, witnesses })
      const report: FaultReport = { step: this.steps, layers: slot.layers, accused: loser.peer, witnesses, reason: '', slashed: false, amount: 0 }
      try {
        Object.assign(report, await this.d.ledger.report(evidence))
      } catch (err) {
        report.reason = `could not report: ${(err as Error).message}`
      }
      log.info(`layers [${slot.layers.join(',')}) step ${this.steps}: ${loser.peer.slice(-8)} disagrees with ${witnesses.map((w) => w.slice(-8)).join(', ')}: ${report.slashed ? `slashed ${report.amount}` : report.reason}`)
      this.faults.push(report)
    }
  }

  /** After a vote: losers' hops close; a winning checker or referee takes a free lane, else the checker stays a checker. */
  private rearrange (slot: Slot, losers: Answer[], checker?: Answer, referee?: Answer): void {
    const lost = new Set(losers.map((a) => a.hop))
    for (const h of lost) h.close()
    slot.lanes = slot.lanes.filter((h) => !lost.has(h))
    if (slot.checker !== undefined && lost.has(slot.checker.hop)) slot.checker = undefined
    for (const spare of [checker, referee]) {
      if (spare === undefined || lost.has(spare.hop)) continue
      if (slot.lanes.length < this.k) {
        slot.lanes.push(spare.hop)
        if (slot.checker?.hop === spare.hop) slot.checker = undefined
      } else if (spare === referee) {
        spare.hop.close()
      }
    }
  }

  /** Runs lane j; a failed peer is replaced by another serving exactly these layers, fed the history. */
  private async runLane (slot: Slot, j: number, input: HopInput): Promise<Answer> {
    for (let attempt = 0; ; attempt++) {
      const hop = slot.lanes[j]
      try {
        return this.answer(hop, await hop.forward(input, this.length), seqOf(input))
      } catch (err) {
        this.onHopError(err, slot.layers, attempt)
        hop.close()
        const failed = (err as HopError).peer
        try {
          const fresh = await this.openExact(slot, [failed])
          const out = await this.feed(fresh, [...slot.history, input], 0)
          slot.lanes[j] = fresh
          this.switches.push({ step: this.steps, failed, layers: slot.layers, reason: (err as Error).message, replacement: [traceOf(fresh, out.out)] })
          return out
        } catch (e2) {
          if (!(e2 instanceof HopError)) throw e2
          this.d.bans.ban(e2.peer)
        }
      }
    }
  }

  /** spot: brings the checker up to date (everything it has not seen, in one prefill) and returns its answer; undefined if none could. */
  private async runChecker (slot: Slot, input: HopInput): Promise<Answer | undefined> {
    try {
      if (slot.checker === undefined) slot.checker = { hop: await this.openExact(slot, []), fed: 0 }
      const c = slot.checker
      const answer = await this.feed(c.hop, [...slot.history.slice(c.fed), input], positionOf(slot.history, c.fed))
      c.fed = slot.history.length + 1
      return answer
    } catch (err) {
      if (err instanceof NoRouteError) return undefined // nobody else serves these layers now: unchecked
      if (!(err instanceof HopError)) throw err
      this.onHopError(err, slot.layers, 0, false)
      slot.checker?.hop.close()
      slot.checker = undefined
      return undefined
    }
  }

  /**
   * A peer outside the dispute replays the slot's history and this input; undefined if none can.
   * A referee that fails once may be busy, not gone: it is asked again before it is passed over.
   */
  private async runReferee (slot: Slot, input: HopInput, involved: string[]): Promise<Answer | undefined> {
    const failed = new Set<string>()
    for (let attempt = 0; attempt <= this.d.maxRetries; attempt++) {
      let hop: RemoteHop | undefined
      try {
        hop = await this.openExact(slot, involved)
        return await this.feed(hop, [...slot.history, input], 0)
      } catch (err) {
        hop?.close()
        if (err instanceof NoRouteError) return undefined
        if (!(err instanceof HopError)) throw err
        this.onHopError(err, slot.layers, 0, false)
        if (failed.has(err.peer)) involved = [...involved, err.peer]
        failed.add(err.peer)
      }
    }
    return undefined
  }

  /** Tops a slot up to k lanes, feeding each newcomer the history. */
  private async fillLanes (slot: Slot): Promise<void> {
    for (let tries = 0; slot.lanes.length < this.k; tries++) {
      try {
        const hop = await this.openExact(slot, [])
        if (slot.history.length > 0) await this.feed(hop, slot.history, 0)
        slot.lanes.push(hop)
      } catch (err) {
        if (!(err instanceof HopError) || tries >= this.d.maxRetries) throw err
        this.d.bans.ban(err.peer)
      }
    }
  }

  /** Sends `inputs` as one step starting at `start` and returns the answer for the last input's rows. */
  private async feed (hop: RemoteHop, inputs: HopInput[], start: number): Promise<Answer> {
    const out = await hop.forward(concatInputs(inputs), start)
    return this.answer(hop, out, seqOf(inputs[inputs.length - 1]))
  }

  private answer (hop: RemoteHop, out: HopOutput & { ms: number, nodeMs: number, receipt: Uint8Array, fp: Fingerprint }, seq: number): Answer {
    const rows = out.seq === seq ? out : { ...out, data: out.data.subarray((out.seq - seq) * out.width), seq }
    // The fingerprint was computed to check the receipt; it is per position, so its tail is this step's.
    return { hop, out: rows, receipt: out.receipt, fp: tailFingerprint(out.fp, seq), peer: hop.peer.peer, weight: this.d.ledger.weight(hop.peer.peer) }
  }

  // ---- peers ----------------------------------------------------------------------------------

  /** Bans the failed peer and rethrows anything that is not a peer's fault (or past the retries). */
  private onHopError (err: unknown, layers: [number, number], attempt: number, rethrowAfterRetries = true): void {
    // The peer says our input is wrong: another peer would say the same.
    if (err instanceof HopError && CALLER_FAULTS.has(err.code)) throw new InputError(err.message)
    if (!(err instanceof HopError) || (rethrowAfterRetries && attempt >= this.d.maxRetries)) throw err
    log.info(`peer ${err.peer.slice(-8)} failed (${err.message}); re-routing`)
    this.d.bans.ban(err.peer)
    if (err.code === 'BAD_RECEIPT') {
      // A receipt that does not hold up is a verification failure, though not one others can check.
      this.failures++
      this.d.ledger.observe(err.peer, false)
      this.faults.push({ step: this.steps, layers, accused: err.peer, witnesses: [], reason: err.message, slashed: false, amount: 0 })
    }
  }

  /** Live peers of the model not blacklisted: `ok` also skips banned ones, `fallback` does not. */
  private async candidates (failed?: string): Promise<{ ok: Capability[], fallback: Capability[] }> {
    const fallback = (await this.d.peers()).filter((p) => p.root === this.d.root && p.peer !== failed && !this.d.ledger.excluded(p.peer) && this.d.exclude?.has(p.peer) !== true)
    return { ok: fallback.filter((p) => !this.d.bans.isBanned(p.peer)), fallback }
  }

  /**
   * Opens a hop on a peer that serves exactly the slot's layers and is not already in it (nor in
   * `exclude`). Drawn at random among the cheaper half, so a cheater cannot tell who checks it.
   */
  private async openExact (slot: Slot, exclude: string[]): Promise<RemoteHop> {
    const busy = new Set([...exclude, ...slot.lanes.map((h) => h.peer.peer), ...(slot.checker === undefined ? [] : [slot.checker.hop.peer.peer])])
    const { ok, fallback } = await this.candidates()
    let servers = serversOf(ok.filter((p) => !busy.has(p.peer)), slot.layers, this.d.costs)
    if (servers.length === 0) servers = serversOf(fallback.filter((p) => !busy.has(p.peer)), slot.layers, this.d.costs)
    if (servers.length === 0) throw new NoRouteError(`no other live peer serves exactly layers [${slot.layers.join(',')}) (${busy.size} already in use or excluded)`)
    // Self-measured speeds are noisy on a loaded machine: "near" is generous, so draws stay unpredictable.
    const best = hopCost(servers[0], slot.layers, this.d.costs)
    const limit = Math.max(2 * best, best + 50)
    const near = servers.filter((p) => hopCost(p, slot.layers, this.d.costs) <= limit)
    return await this.open(near[Math.floor(this.d.random() * near.length)], slot.layers)
  }

  private async open (peer: Capability, layers: [number, number]): Promise<RemoteHop> {
    return await openRemoteHop(this.d.dialer, peer, layers, this.d.root, this.id, this.d.timeouts, { commit: this.d.commitLogits })
  }

  private summarize (h: HopTrace): void {
    const key = h.layers.join('-')
    let s = this.summary.get(key)
    if (s === undefined) this.summary.set(key, s = { layers: h.layers, ranBy: [], checkedBy: [], verdicts: { unchecked: 0, agreed: 0, overruled: 0, pending: 0 } })
    if (!s.ranBy.includes(h.peer)) s.ranBy.push(h.peer)
    for (const p of h.checkedBy ?? []) if (!s.checkedBy.includes(p)) s.checkedBy.push(p)
    s.verdicts[h.verdict ?? 'unchecked']++
  }
}

const traceOf = (hop: RemoteHop, out: { ms: number, nodeMs: number }): HopTrace =>
  ({ peer: hop.peer.peer, device: hop.device, layers: hop.layers, ms: out.ms, nodeMs: out.nodeMs })


const positionOf = (history: HopInput[], n: number): number => history.slice(0, n).reduce((s, x) => s + seqOf(x), 0)

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
