/**
 * The client's knobs, each with why it has its value (in the spirit of Petals' client/config.py).
 * `resolveClientConfig` fills in what a caller left out, once, when the client is made.
 */
import type { HopTimeouts } from './remote-hop.js'
import { DEFAULT_COSTS, type RouteCosts } from '../route/route.js'
import type { BreakerOptions } from './breaker.js'

export interface ClientDefaults {
  timeouts: HopTimeouts
  banMs: number
  maxBanMs: number
  maxRetries: number
  costs: RouteCosts
  breaker: BreakerOptions
  k: number
  p: number
  audit: number
  windowMs: number
  directoryCacheMs: number
  directoryTimeoutMs: number
  prefillChunk: number
}

export const CLIENT_DEFAULTS: Readonly<ClientDefaults> = {
  /**
   * Dial + open, and a step's reply. A step's own deadline is `slack` × what the peer's measured
   * speed predicts; the floors stay well above what a loaded 2-core machine takes for one small
   * step (a time-out bans the peer, and a ban of an honest peer can leave layers without a route),
   * the first step's higher, for the prefill and the peer's warm-up. A peer whose decode steps
   * stall past 4 s, or twice in a row past 1 s where its speed predicts less, is failed over.
   */
  timeouts: { openMs: 10_000, stepMs: 60_000, minFirstStepMs: 15_000, minStepMs: 4_000, lateMs: 1_000, slack: 20 },
  /** First ban of a failed peer; it doubles on each repeat, up to maxBanMs (Petals: 15 s, doubling). */
  banMs: 15_000,
  maxBanMs: 300_000,
  /** Failovers allowed per job (a lane's step, a checker's, a referee's) before it gives up. */
  maxRetries: 3,
  /** Round trip assumed for a peer never measured, and the penalty that keeps sessions off full peers. */
  costs: DEFAULT_COSTS,
  /**
   * The verification circuit breaker: 3 unverifiable generations making up half of those in the
   * last minute pause requests for 15 s, then a health check lets one probe through.
   */
  breaker: { windowMs: 60_000, minFailures: 3, maxFailureRate: 0.5, cooldownMs: 15_000 },
  /** redundant: two peers per hop is the cheapest setting that can catch a fault; a referee breaks ties. */
  k: 2,
  /** spot: a step of a hop is re-run elsewhere with probability p; a cheater on every step of n escapes with (1 − p)ⁿ. */
  p: 0.2,
  /**
   * redundant: the chance a peer outside the k lanes also runs a step. 0 by default (k-fold cost is
   * already paid); k lanes that all collude escape a generation of n steps with (1 − audit)ⁿ.
   */
  audit: 0,
  /** optimistic: how long a claim may be challenged (ms). */
  windowMs: 30_000,
  /** How long a peer directory read over the network is reused (ms): routing asks for it every step. */
  directoryCacheMs: 1000,
  /** How long one read of the relay's registry may take (ms). */
  directoryTimeoutMs: 10_000,
  /**
   * Most prompt tokens one prefill step carries. The last hop answers logits for every row of a
   * step: 64 rows of Llama 3's 128,256-entry vocabulary are 33 MB, inside one message (64 MiB).
   */
  prefillChunk: 64
}
