/**
 * What the board's audits and challenges need of the world: a dialer, the peers, a ledger link,
 * time-outs. One object, so that every step of the game takes it and a few facts of its own.
 */
import type { Capability } from '../protocol/capability.js'
import { HopError } from '../errors.js'
import type { HopInput, HopOutput } from '../runner.js'
import type { Fingerprint } from '../verify/fingerprint.js'
import type { LedgerLink } from '../client/ledger-link.js'
import { openRemoteHop, type Dialer, type HopTimeouts } from '../client/remote-hop.js'
import { DEFAULT_COSTS, serversOf } from '../route/route.js'

export interface BoardContext {
  dialer: Dialer
  peers: () => Promise<Capability[]>
  /** Finds a peer's record even when it is left out of `peers` (blacklisted meanwhile). */
  find: (peer: string) => Promise<Capability | undefined>
  ledger: LedgerLink
  timeouts: HopTimeouts
  /** How long a party has to answer each reveal of a dispute. */
  revealMs: number
  random: () => number
  /** Waits, but returns early when the board closes. */
  sleep: (ms: number) => Promise<void>
}

/** Peers holding exactly `layers`, not in `exclude` and not blacklisted, cheapest first. */
export async function holders(ctx: BoardContext, layers: [number, number], exclude: Set<string>): Promise<Capability[]> {
  const peers = (await ctx.peers()).filter((p) => !exclude.has(p.peer) && !ctx.ledger.excluded(p.peer))
  return serversOf(peers, layers, DEFAULT_COSTS)
}

export interface Prefilled {
  out: HopOutput
  receipt: Uint8Array
  fp: Fingerprint
}

/** One prefill of `input` on `peer` (`keep`: it keeps each block's output for a dispute): output, receipt (checked), fingerprint. */
export async function prefill(
  ctx: BoardContext,
  peer: Capability,
  run: { root: string; session: string; layers: [number, number]; input: HopInput; keep?: boolean }
): Promise<Prefilled> {
  const hop = await openRemoteHop(ctx.dialer, peer, run.layers, run.root, run.session, ctx.timeouts, { keep: run.keep === true })
  try {
    const out = await hop.forward(run.input, 0)
    return { out, receipt: out.receipt, fp: out.fp }
  } catch (err) {
    if (err instanceof HopError) ctx.ledger.observe(err.peer, false)
    throw err
  } finally {
    hop.close()
  }
}
