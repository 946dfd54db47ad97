/** The verifier a request's mode asks for, its options checked. */
import { InputError } from '../../errors.js'
import { CLIENT_DEFAULTS } from '../config.js'
import type { VerificationMode, VerificationOptions } from '../types.js'
import { noneVerifier } from './none.js'
import { optimisticVerifier } from './optimistic.js'
import { redundantVerifier } from './redundant.js'
import { spotVerifier } from './spot.js'
import type { Verifier } from './verifier.js'

export type { Answer, Decision, StepContext, Verifier } from './verifier.js'
export type { OptimisticVerifier } from './optimistic.js'

const MODES: VerificationMode[] = ['none', 'redundant', 'spot', 'optimistic']

export interface Verification {
  mode: VerificationMode
  k: number
  p: number
  /** redundant: the chance a peer outside the lanes also runs a step. */
  audit: number
  window: number
}

/** Fills in k, p and the window, and refuses what cannot be run. */
export function normalizeVerification(v: VerificationOptions | undefined): Verification {
  const mode = v?.mode ?? 'none'
  if (!MODES.includes(mode)) throw new InputError(`verification mode must be one of ${MODES.join(', ')}, not ${JSON.stringify(mode)}`)
  const k = v?.k ?? CLIENT_DEFAULTS.k
  const p = v?.p ?? CLIENT_DEFAULTS.p
  const window = v?.window ?? CLIENT_DEFAULTS.windowMs
  const audit = v?.audit ?? CLIENT_DEFAULTS.audit
  if (!(typeof audit === 'number' && audit >= 0 && audit <= 1))
    throw new InputError(`verification audit must be a number in [0, 1], not ${JSON.stringify(audit)}`)
  if (!Number.isInteger(k) || k < 2 || k > 5) throw new InputError(`verification k must be an integer from 2 to 5, not ${k}`)
  if (!(p > 0 && p <= 1)) throw new InputError(`verification p must be in (0, 1], not ${p}`)
  if (!Number.isInteger(window) || window < 100 || window > 3_600_000)
    throw new InputError(`verification window must be whole ms from 100 to 3600000 (an hour), not ${window}`)
  return { mode, k, p, audit, window }
}

export function verifierFor(v: Verification, random: () => number): Verifier {
  switch (v.mode) {
    case 'redundant':
      return redundantVerifier(v.k, v.audit, random)
    case 'spot':
      return spotVerifier(v.p, random)
    case 'optimistic':
      return optimisticVerifier()
    default:
      return noneVerifier()
  }
}
