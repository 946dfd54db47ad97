/**
 * Virtual time for the simulator: the shipped code's own timers (setTimeout, setInterval,
 * AbortSignal.timeout), Date and performance.now run on a clock that jumps from one timer to the
 * next whenever the process has nothing else to do. An hour of a network passes in however long
 * its events take to compute. Only one virtual clock may run in a process at a time.
 */
import { install, type Clock } from '@sinonjs/fake-timers'

export interface VirtualClock {
  /** Virtual ms since the clock started. */
  readonly elapsed: number
  /** Timers fired so far (the events the simulation computed). */
  readonly events: number
  /**
   * Runs `main` to its end in virtual time, then puts the real timers back. Throws when nothing
   * is left to happen while `main` still waits (a stalled simulation), or past `limitMs`.
   */
  run<T>(main: () => Promise<T>, limitMs?: number): Promise<T>
}

/** Real, unfaked: the driver yields to the process through it (libp2p's in-memory streams deliver on microtasks and immediates). */
const realImmediate = globalThis.setImmediate
/** Whether a virtual clock holds the process's timers now: two at once would fake over each other. */
let installed = false

export function virtualClock(start = Date.UTC(2026, 0, 1)): VirtualClock {
  let clock: Clock | undefined
  let ended = 0 // virtual ms at the end of the last run
  let events = 0
  const yieldToProcess = async (): Promise<void> => {
    await new Promise((r) => realImmediate(r))
  }
  return {
    get elapsed() {
      return clock === undefined ? ended : clock.now - start
    },
    get events() {
      return events
    },
    async run<T>(main: () => Promise<T>, limitMs = Number.POSITIVE_INFINITY): Promise<T> {
      if (installed) throw new Error('a virtual clock is already running in this process: one simulation at a time')
      installed = true
      clock = install({ now: start, toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date', 'performance'] })
      // Node's AbortSignal.timeout keeps its own (real) timer: one on the virtual clock instead.
      const timeout = AbortSignal.timeout
      const timedOut = new DOMException('The operation was aborted due to timeout', 'TimeoutError') // one for all: most deadlines pass unused
      AbortSignal.timeout = (ms: number): AbortSignal => {
        const c = new AbortController()
        setTimeout(() => c.abort(timedOut), ms)
        return c.signal
      }
      let settled: { ok: true; value: T } | { ok: false; error: unknown } | undefined
      main().then(
        (value) => {
          settled = { ok: true, value }
        },
        (error: unknown) => {
          settled = { ok: false, error }
        }
      )
      try {
        for (;;) {
          // Twice: work that one turn schedules for the next (an immediate after a microtask chain) runs before time moves.
          await yieldToProcess()
          await yieldToProcess()
          if (settled !== undefined) break
          if (clock.countTimers() === 0) throw new Error(`the simulation stalled at ${clock.now - start} ms: it waits, and no timer is left to fire`)
          if (clock.now - start > limitMs) throw new Error(`the simulation ran past its limit of ${limitMs} virtual ms`)
          clock.next()
          events++
        }
      } finally {
        AbortSignal.timeout = timeout
        ended = clock.now - start
        clock.uninstall()
        clock = undefined
        installed = false
      }
      if (!settled.ok) throw settled.error
      return settled.value
    }
  }
}
