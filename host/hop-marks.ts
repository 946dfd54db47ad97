/**
 * Sinks for shared/hop-marks.ts's hop marks on Node, timed by the monotonic clock every process on a
 * machine shares, so marks from the client and from a node's process line up.
 */
import { useHopMarks, type HopMark } from '../shared/hop-marks.js'

export interface HopMarkRecord {
  mark: HopMark
  session: string
  hop: number
  step: number
  /** µs on the machine's monotonic clock. */
  us: number
}

/** µs on the monotonic clock the marks use. */
export const monotonicUs = (): number => Number(process.hrtime.bigint()) / 1000

/** Keeps this process's marks in `into` (the bench's client side). */
export function hopMarksInto(into: HopMarkRecord[]): void {
  useHopMarks((mark, session, hop, step) => into.push({ mark, session, hop, step, us: monotonicUs() }))
}

/** A line of stderr per mark, `hop-mark {json}`: set by TESSERA_HOP_MARKS=1 in a node's environment. */
export const HOP_MARK_PREFIX = 'hop-mark '

/** Writes this process's marks to stderr in batches, off the step's path (a node for the bench). */
export function hopMarksToStderr(): void {
  let lines: string[] = []
  const flush = (): void => {
    if (lines.length > 0) process.stderr.write(lines.join(''))
    lines = []
  }
  setInterval(flush, 100).unref()
  process.once('exit', flush)
  useHopMarks((mark, session, hop, step) => {
    lines.push(`${HOP_MARK_PREFIX}${JSON.stringify({ mark, session, hop, step, us: monotonicUs() })}\n`)
  })
}
