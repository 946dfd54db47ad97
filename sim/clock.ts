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
const realClearImmediate = globalThis.clearImmediate
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
      // What runs "now" needs no virtual timer: a 0 ms timeout and setImmediate run as real
      // immediates, counted, and the loop below drains them before time moves (so one yield to the
      // process per event is enough when none is pending).
      const fakeTimeout = globalThis.setTimeout
      const fakeClear = globalThis.clearTimeout
      const immediate = globalThis.setImmediate
      const clearImmediate = globalThis.clearImmediate
      const now = new Set<NodeJS.Immediate>()
      const soon = (fn: (...a: unknown[]) => void, args: unknown[]): NodeJS.Immediate => {
        const h = realImmediate(() => {
          now.delete(h)
          fn(...args)
        })
        now.add(h)
        return h
      }
      globalThis.setTimeout = ((fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) =>
        ms === undefined || ms <= 0 ? soon(fn, args) : fakeTimeout(fn, ms, ...args)) as typeof setTimeout
      globalThis.clearTimeout = ((h: unknown) => {
        if (now.delete(h as NodeJS.Immediate)) realClearImmediate(h as NodeJS.Immediate)
        else fakeClear(h as Parameters<typeof clearTimeout>[0])
      }) as typeof clearTimeout
      globalThis.setImmediate = ((fn: (...a: unknown[]) => void, ...args: unknown[]) => soon(fn, args)) as typeof setImmediate
      globalThis.clearImmediate = ((h: NodeJS.Immediate) => {
        now.delete(h)
        realClearImmediate(h)
      }) as typeof clearImmediate
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
          // Until nothing is left to run now (an immediate scheduled after a microtask chain included), then time moves.
          do await yieldToProcess()
          while (now.size > 0)
          if (settled !== undefined) break
          if (clock.countTimers() === 0) throw new Error(`the simulation stalled at ${clock.now - start} ms: it waits, and no timer is left to fire`)
          if (clock.now - start > limitMs) throw new Error(`the simulation ran past its limit of ${limitMs} virtual ms`)
          clock.next()
          events++
        }
      } finally {
        AbortSignal.timeout = timeout
        for (const h of now) realClearImmediate(h)
        globalThis.setTimeout = fakeTimeout
        globalThis.clearTimeout = fakeClear
        globalThis.setImmediate = immediate
        globalThis.clearImmediate = clearImmediate
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
