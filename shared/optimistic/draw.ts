/**
 * Who watches and who referees: independent draws by the board's own randomness, weighted by
 * each peer's standing with the ledger, never from the peers the draw is about. Neither the
 * client (who names the claim) nor a party (who signs a receipt) can steer them, and a fresh
 * identity weighs little, so a colluding pair is drawn no more often than its standing earns.
 */
import type { Capability } from '../protocol/capability.js'
import type { BoardContext } from './context.js'

/** A peer with no history still weighs a little, as in the vote (verify/vote.ts). */
const MIN_WEIGHT = 0.05

/**
 * Up to `n` of `pool`, without replacement, each drawn with chance proportional to its reputation;
 * peers with standing (staked, not blacklisted) first, since a fresh key costs nothing.
 */
export function weightedDraw(ctx: Pick<BoardContext, 'ledger' | 'random'>, pool: Capability[], n: number): Capability[] {
  const standing = (p: Capability): boolean => ctx.ledger.standing?.(p.peer) ?? true
  const out = drawFrom(ctx, pool.filter(standing), n)
  return [
    ...out,
    ...drawFrom(
      ctx,
      pool.filter((p) => !standing(p)),
      n - out.length
    )
  ]
}

function drawFrom(ctx: Pick<BoardContext, 'ledger' | 'random'>, pool: Capability[], n: number): Capability[] {
  const left = [...pool]
  const out: Capability[] = []
  while (out.length < n && left.length > 0) {
    const w = left.map((p) => Math.max(MIN_WEIGHT, ctx.ledger.weight(p.peer)))
    let r = ctx.random() * w.reduce((s, x) => s + x, 0)
    let i = 0
    while (i < left.length - 1 && r >= w[i]) r -= w[i++]
    out.push(...left.splice(i, 1))
  }
  return out
}
