/**
 * The EVM ledger's state, rebuilt from TesseraStake's events only: read in (block, log index)
 * order and applied through the pure rules of shared/ledger/rules.ts, so every reader of the chain
 * computes the same standings, the same audit entries and the same hashes. `at` of an entry is
 * its block's timestamp in ms. Withdrawals appear as 'stake' entries (a request with
 * `data.withdrawRequested`, a payout with a negative amount). A slash whose reward share the
 * contract burned (the reporter was unbound or had no standing) says `data.rewardBurned`, as in SQLite.
 */
import type { Abi, Address, Hex } from 'viem'
import { TesseraError } from '../shared/errors.js'
import { applyObservation, emaReputation, initialStanding, makeEntry, shouldBlacklist } from '../shared/ledger/rules.js'
import type { LedgerEntry, LedgerRules, PeerStanding } from '../shared/ledger/types.js'
import type { Clients } from './chain/clients.js'
import { EVIDENCE_KINDS, toUnits } from './ledger-evm-args.js'

interface Decoded {
  eventName: string
  args: Record<string, unknown>
  blockNumber: bigint
  logIndex: number
  transactionHash: Hex
  blockTimestamp?: bigint | Hex | null
}

export interface ReplayOptions {
  client: Clients['public']
  address: Address
  abi: Abi
  rules: LedgerRules
  /** Where the contract's history starts (its deploy block). */
  fromBlock: number
  /** How far behind the head events are read. */
  confirmations: number
}

export interface Replay {
  /** Peer id strings by contract key, as the `Labeled` events published them. */
  readonly labels: ReadonlyMap<Hex, string>
  /** The address each peer's key bound itself to (`Bound` events): the only reporters rewards are paid to. */
  readonly bound: ReadonlyMap<Hex, Address>
  /** Stake in wei by contract key: exact, where standings hold units. */
  readonly wei: ReadonlyMap<Hex, bigint>
  readonly standings: ReadonlyMap<Hex, PeerStanding>
  readonly entries: readonly LedgerEntry[]
  /** Evidence published on chain for the arbiters to re-check (`EvidencePublished`), in chain order, by evidence id. */
  readonly published: ReadonlyMap<Hex, { arbiter: Address; evidence: Hex }>
  /** The arbiters that approved a slash on each evidence (`Approved`), and the evidence already slashed on. */
  readonly approvals: ReadonlyMap<Hex, ReadonlySet<Address>>
  readonly slashedOn: ReadonlySet<Hex>
  /** The standing of a contract key (the initial one for a key never seen). */
  get(k: Hex): PeerStanding
  /** Reads and applies new events up to the head, less confirmations; one sync at a time. */
  sync(): Promise<void>
  /** Later syncs throw LEDGER_CLOSED. */
  close(): void
}

export function eventReplay(o: ReplayOptions): Replay {
  const { rules } = o
  const labels = new Map<Hex, string>()
  const bound = new Map<Hex, Address>()
  const wei = new Map<Hex, bigint>()
  const standings = new Map<Hex, PeerStanding>()
  const entries: LedgerEntry[] = []
  const published = new Map<Hex, { arbiter: Address; evidence: Hex }>()
  const approvals = new Map<Hex, Set<Address>>()
  const slashedOn = new Set<Hex>()
  const times = new Map<bigint, number>()
  let cursor = BigInt(o.fromBlock) - 1n
  let closed = false

  const name = (k: Hex): string => labels.get(k) ?? k
  const get = (k: Hex): PeerStanding => standings.get(k) ?? initialStanding(name(k), rules)
  const kindOf = (n: number): string => EVIDENCE_KINDS[n] ?? `kind-${n}`
  const append = (at: number, e: Pick<LedgerEntry, 'kind' | 'peer' | 'amount' | 'data'>): void => {
    entries.push(makeEntry(entries.at(-1) ?? null, { ...e, at }))
  }

  function apply(log: Decoded, at: number, flipped: Hex[]): void {
    const a = log.args
    const peer = a.peer as Hex
    const set = (k: Hex, s: PeerStanding): void => {
      if (s.blacklisted && !get(k).blacklisted) flipped.push(k)
      standings.set(k, s)
    }
    const stakeOf = (k: Hex, total: bigint): PeerStanding => {
      wei.set(k, total)
      return { ...get(k), peer: name(k), stake: toUnits(total) }
    }
    const amount = (): number => toUnits(a.amount as bigint)
    const evidence = (): string => (a.evidenceId as Hex).slice(2)
    switch (log.eventName) {
      case 'Labeled':
        labels.set(peer, a.id as string)
        break
      case 'Bound':
        bound.set(peer, a.owner as Address)
        break
      case 'Staked': {
        const s = stakeOf(peer, a.total as bigint)
        set(peer, s)
        append(at, { kind: 'stake', peer: s.peer, amount: amount(), data: { stake: s.stake } })
        break
      }
      case 'WithdrawRequested':
        append(at, {
          kind: 'stake',
          peer: name(peer),
          data: { withdrawRequested: amount(), availableAt: Number(a.availableAt) * 1000, stake: get(peer).stake }
        })
        break
      case 'Withdrawn': {
        const s = stakeOf(peer, a.total as bigint)
        set(peer, s)
        append(at, { kind: 'stake', peer: s.peer, amount: -amount(), data: { withdrawn: amount(), stake: s.stake } })
        break
      }
      case 'Slashed': {
        slashedOn.add(a.evidenceId as Hex)
        const before = get(peer)
        const left = (wei.get(peer) ?? 0n) - (a.amount as bigint)
        const reputation = emaReputation(before.reputation, false, rules.reputationAlpha)
        const next = { ...before, stake: toUnits(left), slashed: before.slashed + 1, reputation }
        wei.set(peer, left)
        const s = { ...next, blacklisted: shouldBlacklist(next, rules) }
        set(peer, s)
        // The contract pays 0 to a reporter it refuses (reporter 0 is the arbiter's own refusal).
        const burnedReward = (a.reward as bigint) === 0n && amount() * rules.rewardFraction > 0
        const reporter = a.reporter as Hex
        const data = {
          evidence: evidence(),
          kind: kindOf(a.kind as number),
          reporter: BigInt(reporter) === 0n ? null : name(reporter),
          reason: a.reason,
          stake: s.stake,
          reputation: s.reputation,
          slashed: s.slashed,
          ...(burnedReward ? { rewardBurned: true } : {})
        }
        append(at, { kind: 'slash', peer: s.peer, amount: amount(), data })
        break
      }
      case 'Rewarded': {
        const s = stakeOf(peer, a.total as bigint)
        set(peer, s)
        append(at, { kind: 'reward', peer: s.peer, amount: amount(), data: { evidence: evidence(), accused: name(a.accused as Hex), stake: s.stake } })
        break
      }
      case 'Blacklisted':
        set(peer, { ...get(peer), blacklisted: true })
        break
      case 'Observed': {
        const s = applyObservation(get(peer), a.ok as boolean, rules)
        set(peer, s)
        append(at, { kind: 'reputation', peer: s.peer, data: { ok: a.ok, reputation: s.reputation } })
        break
      }
      case 'Rejected': {
        const data = { evidence: evidence(), kind: kindOf(a.kind as number), reporter: name(a.reporter as Hex), reason: a.reason }
        append(at, { kind: 'reject', peer: name(peer), data })
        break
      }
      // A federation's steps towards a slash: no standing changes until the Slashed event.
      case 'EvidencePublished':
        if (!published.has(a.evidenceId as Hex)) published.set(a.evidenceId as Hex, { arbiter: a.arbiter as Address, evidence: a.evidence as Hex })
        break
      case 'Approved': {
        const by = approvals.get(a.evidenceId as Hex) ?? new Set<Address>()
        by.add(a.arbiter as Address)
        approvals.set(a.evidenceId as Hex, by)
        break
      }
      default: // ZkModelRegistered, ArbiterAdmitted: no standing changes
    }
  }

  const blockTime = async (log: Decoded): Promise<number> => {
    if (log.blockTimestamp != null) return Number(BigInt(log.blockTimestamp)) * 1000
    let t = times.get(log.blockNumber)
    if (t === undefined) {
      t = Number((await o.client.getBlock({ blockNumber: log.blockNumber })).timestamp) * 1000
      times.set(log.blockNumber, t)
    }
    return t
  }

  const readNew = async (): Promise<void> => {
    const head = (await o.client.getBlockNumber({ cacheTime: 0 })) - BigInt(o.confirmations - 1)
    if (head <= cursor) return
    const logs = (await o.client.getContractEvents({ address: o.address, abi: o.abi, fromBlock: cursor + 1n, toBlock: head })) as unknown as Decoded[]
    logs.sort((x, y) => (x.blockNumber === y.blockNumber ? x.logIndex - y.logIndex : x.blockNumber < y.blockNumber ? -1 : 1))
    for (let i = 0; i < logs.length; ) {
      // One transaction at a time: a peer newly blacklisted by it gets its entry after the tx's own entries, as in SQLite.
      const tx = logs[i].transactionHash
      const flipped: Hex[] = []
      const at = await blockTime(logs[i])
      for (; i < logs.length && logs[i].transactionHash === tx; i++) apply(logs[i], at, flipped)
      for (const k of new Set(flipped)) {
        const s = get(k)
        append(at, { kind: 'blacklist', peer: s.peer, data: { reputation: s.reputation, slashed: s.slashed } })
      }
    }
    cursor = head
  }

  let syncing: Promise<void> | undefined
  return {
    labels,
    bound,
    wei,
    standings,
    entries,
    published,
    approvals,
    slashedOn,
    get,
    async sync() {
      if (closed) throw new TesseraError('LEDGER_CLOSED', 'this ledger is closed')
      while (syncing !== undefined) await syncing
      syncing = readNew().finally(() => {
        syncing = undefined
      })
      await syncing
    },
    close() {
      closed = true
    }
  }
}
