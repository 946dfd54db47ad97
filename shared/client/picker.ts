/**
 * Which peers a session may use and how it opens hops on them: live peers of the model that are
 * not blacklisted nor to be avoided; banned ones only when nobody else serves the layers (a ban
 * after a time-out may have hit an honest but busy peer: a slow route beats none).
 */
import { NoRouteError } from '../errors.js'
import type { Capability } from '../protocol/capability.js'
import { findRoute, hopCost, serversOf, type RouteCosts, type RouteHop } from '../route/route.js'
import type { BanList } from './bans.js'
import type { LedgerLink } from './ledger-link.js'
import { openRemoteHop, type Dialer, type HopTimeouts, type RemoteHop } from './remote-hop.js'
import type { Slot } from './slot.js'
import { bytesToHex } from '../hash.js'
import { randomBytes } from '@noble/hashes/utils.js'

/**
 * Every hop gets its own random session id (a client's lanes, the board's audits and referees
 * alike): receipts name it, and lanes that shared one could tell when the other lane is a
 * partner (and cheat only then); an audit could be told from a client.
 */
export const hopSession = (): string => `h${bytesToHex(randomBytes(12))}`

export interface PickerDeps {
  dialer: Dialer
  /** Live capability records of the model's peers. */
  peers: () => Promise<Capability[]>
  bans: BanList
  ledger: LedgerLink
  root: string
  /** Checked modes: peers with standing (stake, not blacklisted) first; a fresh key costs nothing, so it only serves where nobody staked can. */
  standing: boolean
  timeouts: HopTimeouts
  costs: RouteCosts
  random: () => number
  /** Peers this session must not use at all (a corrected re-run avoids whoever was caught). */
  avoid?: ReadonlySet<string>
  /** Ask the last hop to sign a commitment to each step's logits (a sampling proof, zk/argmax.ts). */
  commitLogits?: boolean
  /** Open every hop to take handoffs (a forwarded session). */
  inbox?: boolean
}

export class PeerPicker {
  constructor(private readonly d: PickerDeps) {}

  /** `ok` skips banned peers, `fallback` does not; neither holds blacklisted, avoided or `skip` peers. */
  async candidates(skip: ReadonlySet<string> = new Set()): Promise<{ ok: Capability[]; fallback: Capability[] }> {
    const fallback = (await this.d.peers()).filter(
      (p) => p.root === this.d.root && !skip.has(p.peer) && !this.d.ledger.excluded(p.peer) && this.d.avoid?.has(p.peer) !== true
    )
    const standing = this.d.ledger.standing
    const ok = fallback.filter((p) => !this.d.bans.isBanned(p.peer) && (!this.d.standing || standing === undefined || standing(p.peer)))
    return { ok, fallback }
  }

  /** The cheapest route over [from, to), k deep; banned peers only if there is no route without them. */
  async route(from: number, to: number, o: { k?: number; skip?: ReadonlySet<string> } = {}): Promise<RouteHop[]> {
    const { ok, fallback } = await this.candidates(o.skip)
    try {
      return findRoute(ok, from, to, this.d.costs, o.k)
    } catch (err) {
      if (!(err instanceof NoRouteError)) throw err
      return findRoute(fallback, from, to, this.d.costs, o.k)
    }
  }

  /** Whether a peer outside the slot serves exactly its layers (a spot checker could be drawn). */
  async hasOther(slot: Slot): Promise<boolean> {
    const busy = new Set(slot.lanes.map((h) => h.peer.peer))
    return serversOf((await this.candidates(busy)).fallback, slot.layers, this.d.costs).length > 0
  }

  /**
   * A hop on a peer that serves exactly the slot's layers and is not in it already (nor in
   * `skip`). Drawn at random among the cheaper ones, so a cheater cannot tell who checks it.
   * `replacing`: the lane this hop replaces, which does not keep its peer busy (a failed lane's
   * peer is kept out through `skip`, and asked again, fresh, where nobody else serves the layers).
   */
  async exact(slot: Slot, skip: Iterable<string> = [], replacing?: RemoteHop): Promise<RemoteHop> {
    const lanes = slot.lanes.filter((h) => h !== replacing)
    const busy = new Set([...skip, ...lanes.map((h) => h.peer.peer), ...(slot.checker === undefined ? [] : [slot.checker.hop.peer.peer])])
    const { ok, fallback } = await this.candidates(busy)
    let servers = serversOf(ok, slot.layers, this.d.costs)
    if (servers.length === 0) servers = serversOf(fallback, slot.layers, this.d.costs)
    if (servers.length === 0)
      throw new NoRouteError(`no other live peer serves exactly layers [${slot.layers.join(',')}) (${busy.size} already in use or excluded)`)
    // Self-measured speeds are noisy on a loaded machine: "near" is generous, so draws stay unpredictable.
    const best = hopCost(servers[0], slot.layers, this.d.costs)
    const limit = Math.max(2 * best, best + 50)
    const near = servers.filter((p) => hopCost(p, slot.layers, this.d.costs) <= limit)
    // Weighted by reputation: a fresh identity is drawn, but rarely beside peers with a history.
    const w = near.map((p) => Math.max(0.05, this.d.ledger.weight(p.peer)))
    let r = this.d.random() * w.reduce((a, b) => a + b, 0)
    let i = 0
    while (i < near.length - 1 && r >= w[i]) r -= w[i++]
    return await this.open(near[i], slot.layers)
  }

  async open(peer: Capability, layers: [number, number]): Promise<RemoteHop> {
    return await openRemoteHop(this.d.dialer, peer, layers, this.d.root, hopSession(), this.d.timeouts, { commit: this.d.commitLogits, inbox: this.d.inbox })
  }
}
