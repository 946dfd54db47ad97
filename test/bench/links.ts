/**
 * Slow links, for real (issue 20): a relay, the client and three native nodes as processes on
 * loopback, every process's connections slowed in user space (host/slow-link.ts) to a chosen
 * round trip, `small` fp32 cut in three hops. Tokens/s at each round trip, plain (beside what the
 * client-mediated pipeline must pay: the 0 ms token plus a round trip per hop), forwarded node to
 * node (beside its bound: the 0 ms token plus (hops + 1) / 2 round trips), speculative and both,
 * the draft an int4 copy of the same weights run in the client's process.
 */
import { join } from 'node:path'
import { writeFile } from 'node:fs/promises'
import { linePlot } from './plot.js'
import { startRelay } from '../../relay/relay.js'
import { spawnTessera, waitFor, type Proc } from '../helpers/network.js'
import { tempDir } from '../helpers/paths.js'
import { ensureModel } from './spine.js'
import { loadModel } from '../../native-node/store.js'
import { modelDraft, type Draft } from '../../shared/client/draft.js'
import { createClient } from '../../shared/client/client.js'
import { libp2pDialer } from '../../shared/route/directory.js'

const PROMPT = Array.from({ length: 16 }, (_, i) => 1 + i * 3)
const TOKENS = 48
const GROUPS = ['0-3', '3-6', '6-8']
export const RTTS = [0, 20, 50, 100]
const GAMMA = 4

interface SpeculativeRow {
  tokensPerSecond: number
  msPerToken: number
  gamma: number
  acceptance: number
  tokensPerPass: number
  sameTokens: boolean
}

export interface LinkRow {
  rttMs: number
  tokensPerSecond: number
  msPerToken: number
  /** The 0 ms row's token plus one round trip per hop. */
  expectedMsPerToken: number
  firstTokenMs: number
  speculative: SpeculativeRow
  /** Node to node: beside the 0 ms forwarded token plus (hops + 1) / 2 round trips. */
  forwarded?: { tokensPerSecond: number; msPerToken: number; expectedMsPerToken: number; sameTokens: boolean; dropped: number }
  both?: SpeculativeRow
  /** Forwarded + speculative with the closer draft (fp16 of the same weights): what a draft that agrees more buys. */
  bothClose?: SpeculativeRow
}

interface Run {
  msPerToken: number
  firstTokenMs: number
  tokens: number[]
  speculation?: { gamma: number; passes: number; drafted: number; kept: number }
  forwarded?: { steps: number; dropped: number }
}

interface Runs {
  plain: Run
  speculative: Run
  forwarded: Run
  both: Run
  bothClose?: Run
}

export async function atRoundTrip(dir: string, rttMs: number, draft: Draft, closer?: Draft): Promise<Runs> {
  // The relay and the client live in this process: slow them through the same variable the nodes get.
  process.env.TESSERA_LINK_RTT_MS = String(rttMs)
  const relay = await startRelay({ httpPort: 0, p2pPort: 0, models: [], ledger: join(tempDir('bench-ledger'), 'ledger.sqlite'), client: { draft } })
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
    // The closer draft drafts for a second client on the relay's node: the same routes, the same links.
    const second = closer === undefined ? undefined : createClient({ dialer: libp2pDialer(relay.libp2p), directory: relay.registry, draft: closer })
    const run = async (speculate?: { gamma: number }, forward = false, client = relay.client): Promise<Run> => {
      const start = performance.now()
      const at: number[] = []
      const gen = client.generate({ prompt: PROMPT, maxTokens: TOKENS, forward, ...(speculate !== undefined ? { speculate } : {}) })
      let r = await gen.next()
      for (; r.done !== true; r = await gen.next()) at.push(performance.now())
      // Speculating, tokens come in bursts: ms a token is the decode's time over its tokens.
      return {
        msPerToken: (at[at.length - 1] - at[0]) / (at.length - 1),
        firstTokenMs: at[0] - start,
        tokens: r.value.tokens,
        speculation: r.value.speculation,
        forwarded: r.value.forwarded
      }
    }
    await run() // warm: connections made, runtimes warm
    const plain = await run()
    await run({ gamma: GAMMA })
    const speculative = await run({ gamma: GAMMA })
    await run(undefined, true) // warm: the nodes' connections to each other made
    const forwarded = await run(undefined, true)
    await run({ gamma: GAMMA }, true)
    const both = await run({ gamma: GAMMA }, true)
    if (second === undefined) return { plain, speculative, forwarded, both }
    await run({ gamma: GAMMA }, true, second)
    const bothClose = await run({ gamma: GAMMA }, true, second)
    return { plain, speculative, forwarded, both, bothClose }
  } catch (err) {
    // A node that died says why on its stderr: the error alone names only the hop that went.
    await new Promise((r) => setTimeout(r, 500))
    for (const n of nodes)
      console.error(`node ${n.ready.peer.slice(-8)} (${n.proc.exitCode ?? n.proc.signalCode ?? 'running'}):\n${n.log.slice(-15).join('\n')}`)
    throw err
  } finally {
    for (const n of nodes) n.proc.kill('SIGTERM')
    await relay.stop()
    delete process.env.TESSERA_LINK_RTT_MS
  }
}

/** Tokens/s against the round trip, one line per way of running a session. */
export function linksPlot(rows: LinkRow[], hops: number): string {
  const line = (label: string, tps: (r: LinkRow) => number | undefined): { label: string; points: Array<[number, number]> } => ({
    label,
    points: rows.flatMap((r): Array<[number, number]> => {
      const v = tps(r)
      return v === undefined ? [] : [[r.rttMs, v]]
    })
  })
  return linePlot({
    title: `small fp32 through ${hops} native nodes on loopback, links slowed in user space: one session's tokens/s`,
    x: 'round trip per link (ms)',
    y: 'tokens/s',
    xTicks: rows.map((r) => r.rttMs),
    series: [
      line('forwarded + speculative, fp16 draft', (r) => r.bothClose?.tokensPerSecond),
      line('forwarded + speculative', (r) => r.both?.tokensPerSecond),
      line('speculative', (r) => r.speculative.tokensPerSecond),
      line('forwarded', (r) => r.forwarded?.tokensPerSecond),
      line('through the client', (r) => r.tokensPerSecond)
    ]
  })
}

export async function benchLinks(cacheDir: string, outDir: string): Promise<Record<string, unknown>> {
  const dir = await ensureModel(cacheDir, 'small', 'fp32', 8)
  // The draft: the same seeded weights in int4, whole, in this process (the client's).
  const { runners } = await loadModel(await ensureModel(cacheDir, 'small', 'int4', 1), { device: 'cpu' })
  const draft = modelDraft(runners)
  // A draft that agrees more: fp16 of the same weights (random weights' int4 copy flips their near-flat argmax often).
  const close = await loadModel(await ensureModel(cacheDir, 'small', 'fp16', 1), { device: 'cpu' })
  const closer = modelDraft(close.runners)
  const measured: Array<{ rttMs: number } & Runs> = []
  try {
    for (const rttMs of RTTS) {
      const r = await atRoundTrip(dir, rttMs, draft, closer)
      measured.push({ rttMs, ...r })
      const sp = r.speculative.speculation
      console.log(
        `links: ${rttMs} ms round trips, ${GROUPS.length} hops: ${(1000 / r.plain.msPerToken).toFixed(2)} tokens/s (${r.plain.msPerToken.toFixed(1)} ms a token), first token ${r.plain.firstTokenMs.toFixed(0)} ms;` +
          ` speculative γ ${GAMMA}: ${(1000 / r.speculative.msPerToken).toFixed(2)} tokens/s, ${sp?.kept}/${sp?.drafted} drafts kept over ${sp?.passes} passes, same tokens ${r.speculative.tokens.join() === r.plain.tokens.join()};` +
          ` forwarded: ${(1000 / r.forwarded.msPerToken).toFixed(2)} tokens/s (${r.forwarded.forwarded?.dropped ?? '?'} of ${r.forwarded.forwarded?.steps ?? '?'} steps through the client part of the way);` +
          ` both: ${(1000 / r.both.msPerToken).toFixed(2)} tokens/s, same tokens ${r.forwarded.tokens.join() === r.plain.tokens.join() && r.both.tokens.join() === r.plain.tokens.join()};` +
          ` both, fp16 draft: ${r.bothClose === undefined ? '–' : `${(1000 / r.bothClose.msPerToken).toFixed(2)} tokens/s, ${r.bothClose.speculation?.kept}/${r.bothClose.speculation?.drafted} drafts kept`}`
      )
    }
  } finally {
    draft.close()
    closer.close()
    for (const r of [...runners, ...close.runners]) await r.dispose()
  }
  const base = measured[0].plain.msPerToken
  const forwardedBase = measured[0].forwarded.msPerToken
  const speculativeRow = (run: Run, plain: Run): SpeculativeRow => {
    const sp = run.speculation ?? { gamma: GAMMA, passes: 0, drafted: 0, kept: 0 }
    return {
      tokensPerSecond: 1000 / run.msPerToken,
      msPerToken: run.msPerToken,
      gamma: sp.gamma,
      acceptance: sp.drafted > 0 ? sp.kept / sp.drafted : 0,
      tokensPerPass: sp.passes > 0 ? (sp.kept + sp.passes) / sp.passes : 1,
      sameTokens: run.tokens.join() === plain.tokens.join()
    }
  }
  const rows: LinkRow[] = measured.map((m) => ({
    rttMs: m.rttMs,
    tokensPerSecond: 1000 / m.plain.msPerToken,
    msPerToken: m.plain.msPerToken,
    expectedMsPerToken: base + GROUPS.length * m.rttMs,
    firstTokenMs: m.plain.firstTokenMs,
    speculative: speculativeRow(m.speculative, m.plain),
    forwarded: {
      tokensPerSecond: 1000 / m.forwarded.msPerToken,
      msPerToken: m.forwarded.msPerToken,
      expectedMsPerToken: forwardedBase + ((GROUPS.length + 1) / 2) * m.rttMs,
      sameTokens: m.forwarded.tokens.join() === m.plain.tokens.join(),
      dropped: m.forwarded.forwarded?.dropped ?? 0
    },
    both: speculativeRow(m.both, m.plain),
    ...(m.bothClose !== undefined ? { bothClose: speculativeRow(m.bothClose, m.plain) } : {})
  }))
  const plot = 'links.svg'
  await writeFile(join(outDir, plot), linksPlot(rows, GROUPS.length))
  console.log(`wrote ${join(outDir, plot)}`)
  return {
    preset: 'small',
    dtype: 'fp32',
    draft: 'small int4 (the same seeded weights)',
    closerDraft: 'small fp16 (the same seeded weights)',
    hops: GROUPS,
    tokens: TOKENS,
    rows,
    plots: [`bench-results/${plot}`]
  }
}
