/**
 * The one retry rule, for every job of a session (a lane's step, a new lane, a checker, a
 * referee): a peer that fails is banned and not drawn again for that job while another serves the
 * layers; it is asked once more only when nobody else can (busy is not gone); after maxRetries
 * failovers (4× as many for peers that could not be dialled at all) the job gives up and its
 * error goes up. A peer that blames the request (MALFORMED,
 * TOO_LARGE, BAD_STEP) is not failed over: another would say the same.
 *
 * The policy's one fallback, `recut`: where nothing compares or audits a slot's past (verification
 * `none`) and no peer serves exactly its layers any more, the layers are routed again.
 */
import { CALLER_FAULTS, HopError, InputError, NoRouteError } from '../errors.js'
import { logger } from '../log.js'
import type { BanList } from './bans.js'
import type { LedgerLink } from './ledger-link.js'
import type { PeerPicker } from './picker.js'
import type { RemoteHop } from './remote-hop.js'
import type { SessionReport } from './report.js'
import { seqOf, type HopInput } from '../runner.js'
import { answerOf, concatInputs, newSlot, traceOf, type Slot } from './slot.js'
import type { HopTrace } from './types.js'
import type { Answer } from './verifiers/verifier.js'

const log = logger('tessera:client:session')

export interface FailoverDeps {
  pick: PeerPicker
  bans: BanList
  ledger: LedgerLink
  report: SessionReport
  maxRetries: number
  /** The session's step now, for fault reports. */
  step: () => number
  unreachable?: (peer: string) => void
}

/** A job's start: the hop it runs on first (none: draw one), peers never to draw, who hears of each failure. */
export interface Attempt {
  hop?: RemoteHop
  skip?: string[]
  onFail?: (err: HopError) => void
}

export class Failover {
  constructor(private readonly o: FailoverDeps) {}

  /**
   * Runs `job` on `hop`, or once that failed on a replacement (`fresh`: it has seen nothing of
   * this session yet); `onFail` hears of each failure. `skip`: peers never to draw.
   */
  async run<T>(slot: Slot, o: Attempt, job: (hop: RemoteHop, fresh: boolean) => Promise<T>): Promise<{ hop: RemoteHop; value: T }> {
    const failures = new Map<string, number>()
    const skip = o.skip ?? []
    // A lane's own hop stays in slot.lanes until the job is done: its replacement must not count it as busy.
    const replacing = o.hop
    let hop = o.hop
    let retries = 0
    let dials = 0
    let last: HopError | undefined
    for (;;) {
      const fresh = hop === undefined
      try {
        hop ??= await this.draw(slot, skip, failures, replacing)
        return { hop, value: await job(hop, fresh) }
      } catch (err) {
        // Everyone left has failed this job: say what the last one did, beside "no route".
        if (err instanceof NoRouteError && last !== undefined) throw new NoRouteError(`${err.message}; the last peer tried failed: ${last.message}`)
        if (!(err instanceof HopError)) throw err
        last = err
        hop?.close()
        this.failed(err, slot.layers)
        o.onFail?.(err)
        failures.set(err.peer, (failures.get(err.peer) ?? 0) + 1)
        // A peer that cannot even be dialled costs a moment, not a step: a flood of dead or fake
        // records must not use up the retries, so those get a budget of their own (4× as many).
        if (err.code === 'UNREACHABLE' ? ++dials > 4 * this.o.maxRetries : ++retries > this.o.maxRetries) throw err
        hop = undefined
      }
    }
  }

  /** A replacement: not a peer that failed this job while someone else serves the layers, never one that failed it twice. */
  private async draw(slot: Slot, skip: string[], failures: Map<string, number>, replacing?: RemoteHop): Promise<RemoteHop> {
    try {
      return await this.o.pick.exact(slot, [...skip, ...failures.keys()], replacing)
    } catch (err) {
      if (!(err instanceof NoRouteError) || failures.size === 0) throw err
      return await this.o.pick.exact(slot, [...skip, ...[...failures].filter(([, n]) => n >= 2).map(([p]) => p)], replacing)
    }
  }

  /** A failed peer: banned, and a bad receipt counted against it. A caller's fault goes up as the caller's. */
  failed(err: HopError, layers: [number, number]): void {
    // The peer says our input is wrong: another peer would say the same.
    if (CALLER_FAULTS.has(err.code)) throw new InputError(err.message)
    log.info(`peer ${err.peer.slice(-8)} failed (${err.message}); re-routing`)
    this.o.bans.ban(err.peer)
    // A peer too slow for its deadline loses reputation, or stalling would cost it nothing.
    if (err.code === 'TIMEOUT') this.o.ledger.observe(err.peer, false)
    if (err.code === 'UNREACHABLE') this.o.unreachable?.(err.peer)
    if (err.code !== 'BAD_RECEIPT') return
    // A receipt that does not hold up is a verification failure, though not one others can check.
    this.o.report.mismatches++
    this.o.ledger.observe(err.peer, false)
    this.o.report.faults.push({ step: this.o.step(), layers, accused: err.peer, witnesses: [], reason: err.message, slashed: false, amount: 0 })
  }

  /** `none`: no peer serves exactly the slot's layers any more; route them again (maybe over several peers) and replay. */
  async recut(slot: Slot, input: HopInput, cause: HopError): Promise<{ used: Answer; hops: HopTrace[]; slots: Slot[] }> {
    const failed = new Set([cause.peer])
    let lastFailure = cause
    for (let attempt = 0; ; attempt++) {
      const fresh: Slot[] = []
      try {
        for (const r of await this.o.pick.route(slot.layers[0], slot.layers[1], { skip: failed }))
          fresh.push(newSlot(r.layers, [await this.o.pick.open(r.peer, r.layers)]))
        let replay = concatInputs([...slot.history, input])
        const hops: HopTrace[] = []
        let out: Awaited<ReturnType<RemoteHop['forward']>> | undefined
        for (const s of fresh) {
          out = await s.lanes[0].forward(replay, 0)
          s.history.push(replay)
          hops.push({ ...traceOf(s.lanes[0], out), checkedBy: [], verdict: 'unchecked' })
          replay = { hidden: out.data, seq: out.seq }
        }
        this.o.report.switches.push({ step: this.o.step(), failed: cause.peer, layers: slot.layers, reason: cause.message, replacement: hops })
        // Only the current input's rows are the step's output; the rest rebuilt the cache.
        const last = fresh[fresh.length - 1].lanes[0]
        return { used: answerOf(last, out!, seqOf(input), this.o.ledger.weight(last.peer.peer)), hops, slots: fresh }
      } catch (err) {
        for (const s of fresh) s.lanes[0].close()
        // Nobody is left once the failed peers are set aside: say what the last of them did, beside "no route".
        if (err instanceof NoRouteError) throw new NoRouteError(`${err.message}; the last peer tried failed: ${lastFailure.message}`)
        if (!(err instanceof HopError)) throw err
        lastFailure = err
        this.failed(err, slot.layers)
        failed.add(err.peer)
        if (attempt >= this.o.maxRetries) throw err
      }
    }
  }
}
