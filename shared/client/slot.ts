/**
 * A slot of a route: one layer range, the peers running it in step (its lanes), and every input it
 * was sent (its history), so that a replacement can be fed the history in one prefill and
 * rebuild the KV cache before the step goes on.
 */
import { seqOf, type HopInput, type HopOutput } from '../runner.js'
import type { Fingerprint } from '../verify/fingerprint.js'
import { tailFingerprint } from '../verify/fingerprint.js'
import type { HopTrace } from './types.js'
import type { RemoteHop } from './remote-hop.js'
import type { Answer } from './verifiers/verifier.js'

export interface Slot {
  layers: [number, number]
  /** Peers running this range in step; all have been fed the whole history. */
  lanes: RemoteHop[]
  history: HopInput[]
  /** spot: the peer that re-ran this step (drawn afresh for each sampled step). */
  checker?: { hop: RemoteHop }
  /**
   * Per step, the peers whose word the output that went on rests on (the one unchecked peer, or
   * everyone who agreed): once all of them are convicted, every token since that step is tainted.
   */
  vouched: Array<{ step: number; peers: string[] }>
}

export const newSlot = (layers: [number, number], lanes: RemoteHop[] = []): Slot => ({ layers, lanes, history: [], vouched: [] })

/** Several inputs as one (a replay is one prefill). */
export function concatInputs(inputs: HopInput[]): HopInput {
  if (inputs.length === 1) return inputs[0]
  if ('tokens' in inputs[0]) return { tokens: inputs.flatMap((x) => Array.from((x as { tokens: ArrayLike<number> }).tokens)) }
  const hidden = inputs as Array<{ hidden: Float32Array; seq: number }>
  const data = new Float32Array(hidden.reduce((n, x) => n + x.hidden.length, 0))
  let at = 0
  for (const x of hidden) {
    data.set(x.hidden, at)
    at += x.hidden.length
  }
  return { hidden: data, seq: hidden.reduce((n, x) => n + x.seq, 0) }
}

/** The last `seq` rows of an output (a replay's output ends with the current step's rows). */
export function tailRows<O extends HopOutput>(out: O, seq: number): O {
  return out.seq === seq ? out : { ...out, data: out.data.subarray((out.seq - seq) * out.width), seq }
}

type Forwarded = Awaited<ReturnType<RemoteHop['forward']>>

/** A hop's result for a step's `seq` rows, as the verifiers see it. */
export function answerOf(hop: RemoteHop, out: Forwarded, seq: number, weight: number): Answer {
  // The fingerprint was computed to check the receipt; it is per position, so its tail is this step's.
  const fp: Fingerprint = tailFingerprint(out.fp, seq)
  return { hop, out: tailRows(out, seq), receipt: out.receipt, fp, peer: hop.peer.peer, weight }
}

export const traceOf = (hop: RemoteHop, out: { ms: number; nodeMs: number }): HopTrace => ({
  peer: hop.peer.peer,
  device: hop.device,
  layers: hop.layers,
  ms: out.ms,
  nodeMs: out.nodeMs
})

/** After a decision: losers' hops close; a winning checker or referee takes a free lane (up to `lanes`), else a referee closes. */
export function rearrange(slot: Slot, { lanes, losers, spares }: { lanes: number; losers: Answer[]; spares: Array<Answer | undefined> }): void {
  const lost = new Set(losers.map((a) => a.hop))
  for (const h of lost) h.close()
  slot.lanes = slot.lanes.filter((h) => !lost.has(h))
  if (slot.checker !== undefined && lost.has(slot.checker.hop)) slot.checker = undefined
  for (const spare of spares) {
    if (spare === undefined || lost.has(spare.hop)) continue
    if (slot.lanes.length < lanes) {
      slot.lanes.push(spare.hop)
      if (slot.checker?.hop === spare.hop) slot.checker = undefined
    } else if (spare.hop !== slot.checker?.hop) {
      spare.hop.close()
    }
  }
}

/** The first `n` rows of a history: what a speculative session keeps when it drops rejected drafts. */
export function headRows(history: HopInput[], n: number): HopInput[] {
  const out: HopInput[] = []
  let left = n
  for (const x of history) {
    if (left <= 0) break
    const rows = seqOf(x)
    if (rows <= left) out.push(x)
    else
      out.push('tokens' in x ? { tokens: Array.from(x.tokens).slice(0, left) } : { hidden: x.hidden.subarray(0, (x.hidden.length / x.seq) * left), seq: left })
    left -= Math.min(rows, left)
  }
  return out
}
