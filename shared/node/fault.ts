/**
 * Faults a node can be told to commit, for tests and chaos drills (`tessera node --fault KIND`).
 * Each is a way a real cheater or a broken machine gets answers wrong; verification must catch
 * every one. Weight faults change what the shard computes (native-node/fault.ts tampers a copy
 * of its weights); output and receipt faults change what the node sends back (here, used by
 * serve.ts).
 *
 *   wrong-weights[=SEED]  other weights of the same shape and scale (a model from another seed)
 *   perturb=EPS           noise of EPS × each tensor's RMS on the first served layer's weights
 *   skip-layer=N          layer N does nothing (its output projections are zero: x passes through)
 *   random-output         noise shaped like an honest output instead of computing
 *   replay                the previous output of the same shape (a lazy node's cache)
 *   copy-receipt          an honest output, but the receipt another identity signed for it
 *   slow=MS               an honest output, sent MS ms late (a stalling peer)
 *   two-faced             forwarded: an honest output to the client, noise handed to the next hop (framing it)
 *   withhold              forwarded: an honest output to the client, nothing handed on, though it says it did
 *   bad-chunk             honest answers, but one byte changed in the middle chunk of every shard file it serves to a downloading peer
 *
 * `+mute` after any kind (e.g. `skip-layer=1+mute`) also makes the node ignore dispute requests.
 */
import { InputError } from '../errors.js'
import { fillNormal, mulberry32 } from '../rng.js'
import type { HopOutput } from '../runner.js'
import type { Signer } from '../verify/receipt.js'

export type Fault = (
  | { kind: 'wrong-weights'; seed: number }
  | { kind: 'perturb'; eps: number }
  | { kind: 'skip-layer'; layer: number }
  | { kind: 'random-output' }
  | { kind: 'replay' }
  | { kind: 'copy-receipt' }
  | { kind: 'slow'; ms: number }
  | { kind: 'two-faced' }
  | { kind: 'withhold' }
  | { kind: 'bad-chunk' }
) & { mute?: boolean }

export const FAULT_KINDS = [
  'wrong-weights',
  'perturb',
  'skip-layer',
  'random-output',
  'replay',
  'copy-receipt',
  'slow',
  'two-faced',
  'withhold',
  'bad-chunk'
] as const

export function parseFault(spec: string): Fault {
  if (spec.endsWith('+mute')) return { ...parseFault(spec.slice(0, -'+mute'.length)), mute: true }
  const [kind, arg] = spec.split('=', 2)
  const num = (what: string, ok: (n: number) => boolean): number => {
    const n = Number(arg)
    const example = kind === 'perturb' ? '0.05' : kind === 'slow' ? '8000' : '1'
    if (arg === undefined || arg === '' || !ok(n)) throw new InputError(`--fault ${kind} needs ${what}, e.g. ${kind}=${example}`)
    return n
  }
  switch (kind) {
    case 'wrong-weights':
      return { kind, seed: arg === undefined ? 1 : num('an integer seed', Number.isSafeInteger) }
    case 'perturb':
      return { kind, eps: num('a positive noise scale', (n) => n > 0 && Number.isFinite(n)) }
    case 'skip-layer':
      return { kind, layer: num('a layer number', (n) => Number.isSafeInteger(n) && n >= 0) }
    case 'slow':
      return { kind, ms: num('a delay in ms', (n) => Number.isSafeInteger(n) && n > 0) }
    case 'random-output':
    case 'replay':
    case 'copy-receipt':
    case 'two-faced':
    case 'withhold':
    case 'bad-chunk':
      if (arg !== undefined) throw new InputError(`--fault ${kind} takes no value`)
      return { kind }
    default:
      throw new InputError(`unknown fault "${spec}"; one of: ${FAULT_KINDS.join(', ')}`)
  }
}

export const isWeightFault = (f: Fault): f is Extract<Fault, { kind: 'wrong-weights' | 'perturb' | 'skip-layer' }> =>
  f.kind === 'wrong-weights' || f.kind === 'perturb' || f.kind === 'skip-layer'

/** What serve.ts applies to each step: a changed output, and/or a receipt in another peer's name. */
export interface StepFault {
  output?: (layers: [number, number], out: HopOutput) => HopOutput
  receiptBy?: { peer: string; sign: Signer }
  /** Never answers a dispute's reveal requests. */
  mute?: boolean
  /** Holds each result this long before sending it. */
  delayMs?: number
  /** What a forwarded step hands the next hop instead of its output; undefined: nothing (while saying it did). */
  handoff?: (out: HopOutput) => HopOutput | undefined
}

/** The serve-time part of a fault; `other` (another identity) is needed for copy-receipt. */
export function stepFault(f: Fault, other?: { peer: string; sign: Signer }): StepFault | undefined {
  const s = baseFault(f, other)
  return f.mute === true ? { ...s, mute: true } : s
}

function baseFault(f: Fault, other?: { peer: string; sign: Signer }): StepFault | undefined {
  switch (f.kind) {
    case 'random-output':
      return { output: (_layers, out) => noise(out) }
    case 'two-faced':
      return { handoff: noise }
    case 'withhold':
      return { handoff: () => undefined }
    case 'replay': {
      const seen = new Map<string, Float32Array>()
      return {
        output: (layers, out) => {
          const key = `${layers.join('-')}:${out.seq}`
          const earlier = seen.get(key)
          seen.set(key, out.data.slice())
          return earlier === undefined ? out : { ...out, data: earlier }
        }
      }
    }
    case 'slow':
      return { delayMs: f.ms }
    case 'copy-receipt':
      if (other === undefined) throw new InputError('copy-receipt needs another identity to sign with')
      return { receiptBy: other }
    default:
      return undefined
  }
}

const rand = mulberry32(0x5eed)
/** Noise shaped like an honest output: the same size and RMS. */
function noise(out: HopOutput): HopOutput {
  let ss = 0
  for (const x of out.data) ss += x * x
  return { ...out, data: fillNormal(new Float32Array(out.data.length), rand, Math.sqrt(ss / out.data.length)) }
}
