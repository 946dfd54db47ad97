/** The real client over an in-process network (memory-net.ts), with time-outs and bans sized for tests. */
import { createClient, type Client, type ClientConfig } from '../../shared/client/client.js'
import type { GenerationRequest, GenerationResult, Generator } from '../../shared/client/types.js'
import { mulberry32 } from '../../shared/rng.js'
import type { MemoryNet } from './memory-net.js'

/**
 * Nothing here is slow, so a time-out means a bug; a ban outlasts any test, so a failed peer
 * is never tried twice by one client; the randomness is seeded, so lane draws repeat.
 */
export const TEST_TIMEOUTS = { openMs: 5_000, stepMs: 20_000, minStepMs: 5_000, minFirstStepMs: 5_000, lateMs: 5_000, slack: 20 }

export function memoryClient(net: MemoryNet, cfg: Partial<ClientConfig> = {}): Client {
  return createClient({ dialer: net.dialer, directory: net.directory, timeouts: TEST_TIMEOUTS, banMs: 600_000, random: mulberry32(1), ...cfg })
}

/** Runs a generation to its end; returns its result and the ids as they were yielded. */
export async function generateAll(g: Generator, req: GenerationRequest): Promise<GenerationResult & { yielded: number[] }> {
  const gen = g.generate(req)
  const yielded: number[] = []
  for (;;) {
    const r = await gen.next()
    if (r.done === true) return { ...r.value, yielded }
    yielded.push(r.value.id)
  }
}
