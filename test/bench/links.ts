/**
 * Slow links, for real (issue 20's first part): a relay, the client and three native nodes as
 * processes on loopback, every process's connections slowed in user space (host/slow-link.ts) to a
 * chosen round trip, `small` fp32 cut in three hops. Tokens/s at each round trip, beside what
 * the client-mediated pipeline must pay: the 0 ms token plus a round trip per hop.
 */
import { join } from 'node:path'
import { startRelay } from '../../relay/relay.js'
import { spawnTessera, waitFor, type Proc } from '../helpers/network.js'
import { tempDir } from '../helpers/paths.js'
import { ensureModel } from './spine.js'

const PROMPT = Array.from({ length: 16 }, (_, i) => 1 + i * 3)
const TOKENS = 48
const GROUPS = ['0-3', '3-6', '6-8']
export const RTTS = [0, 20, 50, 100]

export interface LinkRow {
  rttMs: number
  tokensPerSecond: number
  msPerToken: number
  /** The 0 ms row's token plus one round trip per hop. */
  expectedMsPerToken: number
  firstTokenMs: number
}

async function atRoundTrip(dir: string, rttMs: number): Promise<{ msPerToken: number; firstTokenMs: number }> {
  // The relay and the client live in this process: slow them through the same variable the nodes get.
  process.env.TESSERA_LINK_RTT_MS = String(rttMs)
  const relay = await startRelay({ httpPort: 0, p2pPort: 0, models: [], ledger: join(tempDir('bench-ledger'), 'ledger.sqlite') })
  const nodes: Proc[] = []
  try {
    nodes.push(
      ...(await Promise.all(
        GROUPS.map(
          async (l) =>
            await spawnTessera(['node', '--relay', relay.nodeAddr, '--model', dir, '--layers', l, '--device', 'cpu'], 300_000, {
              TESSERA_LINK_RTT_MS: String(rttMs)
            })
        )
      ))
    )
    await waitFor(async () => (await relay.client.network()).peers.length === GROUPS.length, 60_000)
    const run = async (): Promise<{ at: number[]; start: number }> => {
      const start = performance.now()
      const at: number[] = []
      const gen = relay.client.generate({ prompt: PROMPT, maxTokens: TOKENS })
      for (let r = await gen.next(); r.done !== true; r = await gen.next()) at.push(performance.now())
      return { at, start }
    }
    await run() // warm: connections made, runtimes warm
    const { at, start } = await run()
    return { msPerToken: (at[at.length - 1] - at[0]) / (at.length - 1), firstTokenMs: at[0] - start }
  } finally {
    for (const n of nodes) n.proc.kill('SIGTERM')
    await relay.stop()
    delete process.env.TESSERA_LINK_RTT_MS
  }
}

export async function benchLinks(cacheDir: string): Promise<Record<string, unknown>> {
  const dir = await ensureModel(cacheDir, 'small', 'fp32', 8)
  const measured: Array<{ rttMs: number; msPerToken: number; firstTokenMs: number }> = []
  for (const rttMs of RTTS) {
    const r = await atRoundTrip(dir, rttMs)
    measured.push({ rttMs, ...r })
    console.log(
      `links: ${rttMs} ms round trips, ${GROUPS.length} hops: ${(1000 / r.msPerToken).toFixed(2)} tokens/s (${r.msPerToken.toFixed(1)} ms a token), first token ${r.firstTokenMs.toFixed(0)} ms`
    )
  }
  const base = measured[0].msPerToken
  const rows: LinkRow[] = measured.map((m) => ({
    rttMs: m.rttMs,
    tokensPerSecond: 1000 / m.msPerToken,
    msPerToken: m.msPerToken,
    expectedMsPerToken: base + GROUPS.length * m.rttMs,
    firstTokenMs: m.firstTokenMs
  }))
  return { preset: 'small', dtype: 'fp32', hops: GROUPS, tokens: TOKENS, rows }
}
