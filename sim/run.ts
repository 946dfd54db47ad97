/**
 * One simulation: `main` on a fresh virtual clock (sim/clock.ts) with simulated signatures
 * (sim/crypto.ts), then everything put back. What it cost: virtual ms, real ms, timer events.
 */
import { virtualClock } from './clock.js'
import { useSimSignatures } from './crypto.js'

export interface Simulated<T> {
  value: T
  virtualMs: number
  realMs: number
  events: number
}

/** Default limit: a day of virtual time, far past any scenario, so a simulation that never ends fails. */
export async function simulate<T>(main: () => Promise<T>, limitMs = 24 * 3_600_000): Promise<Simulated<T>> {
  const started = performance.now()
  const clock = virtualClock()
  const restore = useSimSignatures()
  // libp2p's in-memory streams make an AbortError per message delivered; its stack is most of a hop-step's cost.
  const stackTraceLimit = Error.stackTraceLimit
  Error.stackTraceLimit = 0
  try {
    const value = await clock.run(main, limitMs)
    return { value, virtualMs: clock.elapsed, realMs: performance.now() - started, events: clock.events }
  } finally {
    Error.stackTraceLimit = stackTraceLimit
    restore()
  }
}
