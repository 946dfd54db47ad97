/**
 * The ledger on an EVM chain (relay/contracts/TesseraStake.sol), behind the same Ledger interface as
 * the SQLite one and with the same semantics. The chain is the only store: standings and the
 * hash-chained audit log are rebuilt from the contract's events, in (block, log index) order,
 * through the pure rules of shared/ledger/rules.ts, so every reader of the chain computes the
 * same reputations, the same entries and the same hashes. Refused evidence is kept on chain too,
 * as an arbiter-only `Rejected` event that changes no state, so nothing lives only locally.
 *
 * Units: one ledger unit (the Ledger interface's numbers, e.g. a join stake of 100) is
 * WEI_PER_UNIT = 1e15 wei; amounts are rounded down to whole wei. `at` of an entry is its
 * block's timestamp in ms. Withdrawals (not part of the Ledger interface) appear in the log as
 * 'stake' entries: a request with `data.withdrawRequested`, a payout with a negative amount.
 * Blacklisting by slash count is on chain; by reputation (an EMA of Observed events) it is
 * computed off-chain, like the reputation itself.
 *
 * 'proof' evidence whose detail carries a counter-proof (`detail.counterProof = { proof,
 * publicSignals }`, an honest prover's Groth16 proof for the accused's input) is slashed through
 * `slashByProof`: the contract verifies it with the model's registered verifier, so the fault is
 * proven on chain; a counter-proof the contract refuses leaves a 'reject' entry. Other evidence
 * goes through `slash`, on the arbiter's word after the checker's re-check.
 */
import { concat, keccak256, pad, parseEventLogs, toHex, type Abi, type Address, type Hex, type TransactionReceipt } from 'viem'
import { InputError, TesseraError } from '../shared/errors.js'
import { applyObservation, emaReputation, evidenceHash, initialStanding, makeEntry, shouldBlacklist, verifyChain } from '../shared/ledger/rules.js'
import { DEFAULT_RULES, type Evidence, type EvidenceChecker, type Ledger, type LedgerEntry, type LedgerRules, type PeerStanding } from '../shared/ledger/types.js'
import type { Groth16Proof } from '../shared/zk/types.js'
import { connect, peerKey, revertName, write, zkModelId, type Clients } from './chain/clients.js'
import { stakeArtifact } from './chain/compile.js'

/** Wei per ledger unit: a join stake of 100 units is 0.1 ETH. */
export const WEI_PER_UNIT = 10n ** 15n
const UNIT_DECIMALS = 15

export function toWei (units: number): bigint {
  if (!Number.isFinite(units) || units <= 0) throw new InputError(`a stake must be a positive finite amount, not ${units}`)
  const [whole, frac = ''] = units.toFixed(UNIT_DECIMALS).split('.')
  const wei = BigInt(whole) * WEI_PER_UNIT + BigInt(frac.padEnd(UNIT_DECIMALS, '0').slice(0, UNIT_DECIMALS))
  if (wei === 0n) throw new InputError(`${units} units is less than one wei`)
  return wei
}
export const toUnits = (wei: bigint): number => Number(wei / WEI_PER_UNIT) + Number(wei % WEI_PER_UNIT) / 1e15

/** The kinds in the order of their uint8 on chain. */
export const EVIDENCE_KINDS = ['redundant', 'spot', 'optimistic', 'dispute', 'signature', 'proof'] as const

export interface EvmLedgerConfig {
  rpcUrl: string
  chainId: number
  stakeAddress: Address
  /** Hex key or the name of an environment variable holding it. The arbiter's, for slash/observe. */
  privateKey: string
  /** Where the contract's history starts (its deploy block); default 0. */
  fromBlock?: number
  /** Blocks a write waits for, and how far behind the head the log is read; default 1. */
  confirmations?: number
  pollingIntervalMs?: number
}

/** What slashByProof needs beyond the evidence: all attested by the arbiter from the accused's signed reply. */
export interface ProofSlash {
  accused: string
  evidenceId: Hex
  model: string
  /** The accused's claimed output and the input, as field elements (the circuit's public signals). */
  claimedOutput: bigint[]
  claimedInput: bigint[]
  proof: Groth16Proof
  publicSignals: string[]
  reporter: string
}

export interface EvmLedger extends Ledger {
  readonly address: Address
  readonly account: Address
  /** Gas of the last transaction this ledger sent (0 before any). */
  readonly lastGas: number
  /** Every transaction's gas, by contract function. */
  gas (): Array<{ op: string, gas: number }>
  /** The on-chain ZK slash, with everything given explicitly; `slash()` calls it for counter-proof evidence. */
  slashByProof (p: ProofSlash): Promise<{ slashed: boolean, amount: number, reason: string, gas: number }>
  /** The owner (this ledger's account, for the peers it staked) asks to withdraw; paid after the contract's delay. */
  requestWithdraw (peer: string, amount: number): Promise<PeerStanding>
  withdraw (peer: string): Promise<PeerStanding>
  /** Reads new events up to the head (less confirmations); reads and writes call it themselves. */
  sync (): Promise<void>
}

/** The Groth16 proof as the Solidity verifier takes it (G2 coordinates swapped, as snarkjs's calldata export does). */
export function proofCallArgs (p: Groth16Proof): { a: [bigint, bigint], b: [[bigint, bigint], [bigint, bigint]], c: [bigint, bigint] } {
  const n = (s: string): bigint => BigInt(s)
  return { a: [n(p.pi_a[0]), n(p.pi_a[1])], b: [[n(p.pi_b[0][1]), n(p.pi_b[0][0])], [n(p.pi_b[1][1]), n(p.pi_b[1][0])]], c: [n(p.pi_c[0]), n(p.pi_c[1])] }
}

/** keccak256 of field elements as 32-byte words: what the contract hashes signals with. */
export const signalsHash = (xs: bigint[]): Hex => keccak256(xs.length === 0 ? '0x' : concat(xs.map((x) => pad(toHex(x), { size: 32 }))))

interface Decoded { eventName: string, args: Record<string, unknown>, blockNumber: bigint, logIndex: number, transactionHash: Hex, blockTimestamp?: bigint | Hex | null }

export async function openEvmLedger (config: EvmLedgerConfig, checker: EvidenceChecker, rules: LedgerRules = DEFAULT_RULES): Promise<EvmLedger> {
  const c: Clients = await connect(config)
  const address = config.stakeAddress
  const abi: Abi = (await stakeArtifact()).abi
  if (await c.public.getCode({ address }).catch(() => undefined) === undefined) throw new InputError(`there is no contract at ${address} on chain ${config.chainId}: deploy one (tessera chain deploy) or fix the address`)
  const read = async <T>(functionName: string, args: unknown[] = []): Promise<T> => await c.public.readContract({ address, abi, functionName, args }) as T
  const [slashBps, rewardBps, afterSlashes] = await Promise.all([read<number>('slashBps'), read<number>('rewardBps'), read<number>('blacklistAfterSlashes')])
  if (slashBps !== Math.round(rules.slashFraction * 1e4) || rewardBps !== Math.round(rules.rewardFraction * 1e4) || afterSlashes !== rules.blacklistAfterSlashes) {
    throw new InputError(`the contract at ${address} slashes ${slashBps / 100}%, rewards ${rewardBps / 100}% and blacklists after ${afterSlashes} slashes; these ledger rules say ${rules.slashFraction * 100}%, ${rules.rewardFraction * 100}% and ${rules.blacklistAfterSlashes}`)
  }

  // The replayed state: everything below comes from events only.
  const labels = new Map<Hex, string>()
  const wei = new Map<Hex, bigint>()
  const standings = new Map<Hex, PeerStanding>()
  const entries: LedgerEntry[] = []
  const times = new Map<bigint, number>()
  let cursor = BigInt(config.fromBlock ?? 0) - 1n
  let gasUsed: Array<{ op: string, gas: number }> = []
  let closed = false

  const name = (k: Hex): string => labels.get(k) ?? k
  const get = (k: Hex): PeerStanding => standings.get(k) ?? initialStanding(name(k), rules)
  const kindOf = (n: number): string => EVIDENCE_KINDS[n] ?? `kind-${n}`
  const append = (at: number, e: Pick<LedgerEntry, 'kind' | 'peer' | 'amount' | 'data'>): void => { entries.push(makeEntry(entries.at(-1) ?? null, { ...e, at })) }

  function apply (log: Decoded, at: number, flipped: Hex[]): void {
    const a = log.args
    const set = (k: Hex, s: PeerStanding): void => {
      if (s.blacklisted && !get(k).blacklisted) flipped.push(k)
      standings.set(k, s)
    }
    const stakeOf = (k: Hex, total: bigint): PeerStanding => { wei.set(k, total); return { ...get(k), peer: name(k), stake: toUnits(total) } }
    switch (log.eventName) {
      case 'Labeled': labels.set(a.peer as Hex, a.id as string); break
      case 'Staked': {
        const s = stakeOf(a.peer as Hex, a.total as bigint)
        set(a.peer as Hex, s)
        append(at, { kind: 'stake', peer: s.peer, amount: toUnits(a.amount as bigint), data: { stake: s.stake } })
        break
      }
      case 'WithdrawRequested':
        append(at, { kind: 'stake', peer: name(a.peer as Hex), data: { withdrawRequested: toUnits(a.amount as bigint), availableAt: Number(a.availableAt) * 1000, stake: get(a.peer as Hex).stake } })
        break
      case 'Withdrawn': {
        const s = stakeOf(a.peer as Hex, a.total as bigint)
        set(a.peer as Hex, s)
        append(at, { kind: 'stake', peer: s.peer, amount: -toUnits(a.amount as bigint), data: { withdrawn: toUnits(a.amount as bigint), stake: s.stake } })
        break
      }
      case 'Slashed': {
        const k = a.peer as Hex
        const before = get(k)
        const next = { ...before, stake: toUnits((wei.get(k) ?? 0n) - (a.amount as bigint)), slashed: before.slashed + 1, reputation: emaReputation(before.reputation, false, rules.reputationAlpha) }
        wei.set(k, (wei.get(k) ?? 0n) - (a.amount as bigint))
        const s = { ...next, blacklisted: shouldBlacklist(next, rules) }
        set(k, s)
        append(at, { kind: 'slash', peer: s.peer, amount: toUnits(a.amount as bigint), data: { evidence: (a.evidenceId as Hex).slice(2), kind: kindOf(a.kind as number), reporter: name(a.reporter as Hex), reason: a.reason, stake: s.stake, reputation: s.reputation, slashed: s.slashed } })
        break
      }
      case 'Rewarded': {
        const s = stakeOf(a.peer as Hex, a.total as bigint)
        set(a.peer as Hex, s)
        append(at, { kind: 'reward', peer: s.peer, amount: toUnits(a.amount as bigint), data: { evidence: (a.evidenceId as Hex).slice(2), accused: name(a.accused as Hex), stake: s.stake } })
        break
      }
      case 'Blacklisted': set(a.peer as Hex, { ...get(a.peer as Hex), blacklisted: true }); break
      case 'Observed': {
        const s = applyObservation(get(a.peer as Hex), a.ok as boolean, rules)
        set(a.peer as Hex, s)
        append(at, { kind: 'reputation', peer: s.peer, data: { ok: a.ok, reputation: s.reputation } })
        break
      }
      case 'Rejected':
        append(at, { kind: 'reject', peer: name(a.peer as Hex), data: { evidence: (a.evidenceId as Hex).slice(2), kind: kindOf(a.kind as number), reporter: name(a.reporter as Hex), reason: a.reason } })
        break
      default: // ZkModelRegistered: no standing changes
    }
  }

  const blockTime = async (log: Decoded): Promise<number> => {
    if (log.blockTimestamp != null) return Number(BigInt(log.blockTimestamp)) * 1000
    let t = times.get(log.blockNumber)
    if (t === undefined) {
      t = Number((await c.public.getBlock({ blockNumber: log.blockNumber })).timestamp) * 1000
      times.set(log.blockNumber, t)
    }
    return t
  }

  let syncing: Promise<void> | undefined
  const doSync = async (): Promise<void> => {
    const head = (await c.public.getBlockNumber({ cacheTime: 0 })) - BigInt(c.confirmations - 1)
    if (head <= cursor) return
    const logs = await c.public.getContractEvents({ address, abi, fromBlock: cursor + 1n, toBlock: head }) as unknown as Decoded[]
    logs.sort((x, y) => x.blockNumber === y.blockNumber ? x.logIndex - y.logIndex : x.blockNumber < y.blockNumber ? -1 : 1)
    for (let i = 0; i < logs.length;) {
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
  const sync = async (): Promise<void> => {
    if (closed) throw new TesseraError('LEDGER_CLOSED', 'this ledger is closed')
    while (syncing !== undefined) await syncing
    syncing = doSync().finally(() => { syncing = undefined })
    await syncing
  }

  // One write at a time: nonces stay in order, and a check under the lock sees every earlier write.
  let queue: Promise<unknown> = Promise.resolve()
  const locked = async <T>(fn: () => Promise<T>): Promise<T> => {
    const run = queue.then(fn, fn)
    queue = run.catch(() => {})
    return await run
  }
  let lastGas = 0
  const send = async (functionName: string, args: unknown[], value?: bigint): Promise<TransactionReceipt> => {
    const r = await write(c, { address, abi, functionName, args, value })
    lastGas = Number(r.gasUsed)
    gasUsed.push({ op: functionName, gas: lastGas })
    await sync()
    return r
  }
  /** Publishes the peer id string once, so the log rebuilt from the chain names peers, not hashes. */
  const labeled = async (...peers: string[]): Promise<void> => {
    await sync()
    for (const p of new Set(peers)) if (!labels.has(peerKey(p))) await send('label', [p])
  }
  const standingOf = async (peer: string): Promise<PeerStanding> => { await sync(); return { ...get(peerKey(peer)), peer } }
  const evidenceId = (e: Evidence): Hex => `0x${evidenceHash(e)}`
  const reject = async (e: Evidence, reporter: string, reason: string): Promise<{ slashed: false, amount: 0, reason: string }> => {
    await labeled(e.accused, reporter)
    await send('reject', [peerKey(e.accused), evidenceId(e), EVIDENCE_KINDS.indexOf(e.kind), peerKey(reporter), reason])
    return { slashed: false, amount: 0, reason }
  }
  const slashedAmount = (r: TransactionReceipt): number => {
    const [log] = parseEventLogs({ abi, logs: r.logs, eventName: 'Slashed' }) as unknown as Array<{ args: { amount: bigint } }>
    return log === undefined ? 0 : toUnits(log.args.amount)
  }
  const used = async (id: Hex): Promise<boolean> => await read<boolean>('evidenceUsed', [id])

  async function proofSlash (p: ProofSlash, reason: string, e?: Evidence): Promise<{ slashed: boolean, amount: number, reason: string, gas: number }> {
    const { a, b, c: cc } = proofCallArgs(p.proof)
    await labeled(p.accused, p.reporter)
    try {
      const r = await send('slashByProof', [peerKey(p.accused), p.evidenceId, zkModelId(p.model), signalsHash(p.claimedOutput), signalsHash(p.claimedInput), a, b, cc, p.publicSignals.map((s) => BigInt(s)), peerKey(p.reporter)])
      return { slashed: true, amount: slashedAmount(r), reason, gas: Number(r.gasUsed) }
    } catch (err) {
      const why = revertName((err as { cause?: unknown }).cause)
      if (why === undefined) throw err
      const text = why === 'EvidenceUsed' ? 'evidence already used' : `counter-proof refused on chain: ${why}`
      if (e !== undefined) await reject(e, p.reporter, text)
      else await send('reject', [peerKey(p.accused), p.evidenceId, EVIDENCE_KINDS.indexOf('proof'), peerKey(p.reporter), text])
      return { slashed: false, amount: 0, reason: text, gas: lastGas }
    }
  }

  await sync()

  const ledger: EvmLedger = {
    address,
    account: c.account.address,
    get lastGas () { return lastGas },
    gas: () => [...gasUsed],

    async stake (peer, amount) {
      const value = toWei(amount)
      return await locked(async () => {
        await labeled(peer)
        await send('stake', [peerKey(peer)], value)
        return await standingOf(peer)
      })
    },

    async slash (e, reporter) {
      if (!(EVIDENCE_KINDS as readonly string[]).includes(e?.kind) || typeof e.accused !== 'string' || !Array.isArray(e.receipts) || !e.receipts.every((r) => r instanceof Uint8Array) || typeof e.detail !== 'object' || e.detail === null) {
        throw new InputError('evidence needs a known kind, an accused peer id, receipts as bytes and a detail object')
      }
      const id = evidenceId(e)
      if (reporter === e.accused) return await locked(async () => await reject(e, reporter, 'a peer cannot report itself'))
      if (await used(id)) return await locked(async () => await reject(e, reporter, 'evidence already used'))
      let verdict: { valid: boolean, reason: string }
      try { verdict = await checker.check(e) } catch (err) { return await locked(async () => await reject(e, reporter, `checker failed: ${(err as Error).message}`)) }
      if (!verdict.valid) return await locked(async () => await reject(e, reporter, `invalid evidence: ${verdict.reason}`))
      const counter = e.kind === 'proof' ? e.detail.counterProof as { proof: Groth16Proof, publicSignals: string[] } | undefined : undefined
      let claim: Awaited<ReturnType<typeof proofClaim>> | undefined
      try { claim = counter !== undefined ? await proofClaim(e) : undefined } catch (err) { return await locked(async () => await reject(e, reporter, `invalid counter-proof evidence: ${(err as Error).message}`)) }
      return await locked(async () => {
        // Checked again under the lock: the same evidence may have been slashed while we awaited the checker.
        if (await used(id)) return await reject(e, reporter, 'evidence already used')
        if (counter !== undefined && claim !== undefined) {
          const r = await proofSlash({ accused: e.accused, evidenceId: id, ...claim, proof: counter.proof, publicSignals: counter.publicSignals, reporter }, `${verdict.reason}; counter-proof verified on chain`, e)
          return { slashed: r.slashed, amount: r.amount, reason: r.reason }
        }
        await labeled(e.accused, reporter)
        try {
          const r = await send('slash', [peerKey(e.accused), id, EVIDENCE_KINDS.indexOf(e.kind), peerKey(reporter), verdict.reason])
          return { slashed: true, amount: slashedAmount(r), reason: verdict.reason }
        } catch (err) {
          if (revertName((err as { cause?: unknown }).cause) === 'EvidenceUsed') return await reject(e, reporter, 'evidence already used')
          throw err
        }
      })
    },

    async slashByProof (p) { return await locked(async () => await proofSlash(p, 'counter-proof verified on chain')) },

    async observe (peer, ok) {
      return await locked(async () => {
        await labeled(peer)
        await send('observe', [peerKey(peer), ok])
        return await standingOf(peer)
      })
    },

    async requestWithdraw (peer, amount) {
      const value = toWei(amount)
      return await locked(async () => { await send('requestWithdraw', [peerKey(peer), value]); return await standingOf(peer) })
    },

    async withdraw (peer) {
      return await locked(async () => { await send('withdraw', [peerKey(peer)]); return await standingOf(peer) })
    },

    standing: standingOf,
    async standings () {
      await sync()
      return [...standings.values()].sort((x, y) => x.peer < y.peer ? -1 : x.peer > y.peer ? 1 : 0)
    },
    async isBlacklisted (peer) { return (await standingOf(peer)).blacklisted },
    async audit (fromSeq = 1) { await sync(); return entries.filter((e) => e.seq >= fromSeq) },

    async verifyAudit () {
      await sync()
      const chain = verifyChain(entries)
      if (!chain.ok) return chain
      // The replay must also agree with the contract's storage: the events are complete and applied right.
      for (const [k, s] of standings) {
        const [stake, , , , slashed, blacklisted] = await read<[bigint, bigint, Address, bigint, number, boolean]>('peers', [k])
        if (stake !== (wei.get(k) ?? 0n) || slashed !== s.slashed || (blacklisted && !s.blacklisted)) {
          return { ok: false, badSeq: entries.findLast((e) => e.peer === s.peer)?.seq ?? entries.length }
        }
      }
      return { ok: true, badSeq: null }
    },

    sync,
    async close () { await queue; closed = true; gasUsed = [] }
  }
  return ledger
}

/** The accused's claim from its signed reply: model, output and input as field elements. */
async function proofClaim (e: Evidence): Promise<Pick<ProofSlash, 'model' | 'claimedOutput' | 'claimedInput'>> {
  const { openZkReply, int8Of, int32Of } = await import('../shared/protocol/zk.js')
  const { toField } = await import('../shared/zk/field.js')
  const reply = await openZkReply(e.receipts[0])
  const counter = e.detail.counterProof as { proof?: Partial<Groth16Proof>, publicSignals?: unknown }
  const p = counter.proof
  if (!Array.isArray(p?.pi_a) || !Array.isArray(p.pi_b) || !Array.isArray(p.pi_c) || !Array.isArray(p.pi_b[0]) || !Array.isArray(p.pi_b[1])) throw new InputError('detail.counterProof needs a Groth16 proof (pi_a, pi_b, pi_c)')
  const input = int8Of(reply.input)
  const output = Array.from(int32Of(reply.output), (v) => toField(v))
  if (!Array.isArray(counter.publicSignals)) throw new InputError('detail.counterProof needs publicSignals')
  // Public input mode carries the int8 input itself; committed mode one Poseidon hash of it.
  const inputSignals = counter.publicSignals.length - output.length - 1
  const claimedInput = inputSignals === input.length
    ? Array.from(input, (v) => toField(v))
    : [(await import('../shared/zk/commit.js')).inputCommitment(input)]
  return { model: reply.model, claimedOutput: output, claimedInput }
}
