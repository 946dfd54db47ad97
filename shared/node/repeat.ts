/** A repeating background task (announcing, rebalancing) with a clean stop. */

/**
 * Runs `task` every `ms` until the returned function is called. The next run is timed from the
 * end of the last, so a slow run (a relay that takes 10 s to answer) never overlaps the next.
 * `task` must not throw: report failures inside it.
 */
export function repeat(ms: number, task: () => Promise<void>): () => void {
  let stopped = false
  let timer: ReturnType<typeof setTimeout> | undefined
  const schedule = (): void => {
    timer = setTimeout(() => {
      void task().finally(() => {
        if (!stopped) schedule()
      })
    }, ms)
  }
  schedule()
  return () => {
    stopped = true
    clearTimeout(timer)
  }
}
