/**
 * The ledger on an EVM chain (relay/contracts/TesseraStake.sol), behind the same Ledger interface as
 * the SQLite one and with the same semantics. The chain is the only store: standings and the
 * hash-chained audit log are rebuilt from the contract's events (ledger-evm-replay.ts), so every
 * reader of the chain computes the same reputations, the same entries and the same hashes. Refused
 * evidence is kept on chain too, as an arbiter-only `Rejected` event that changes no state, so
 * nothing lives only locally. This file holds the writes: one at a time, each followed by a sync.
 *
 * Amounts are ledger units (ledger-evm-args.ts converts them to wei). Blacklisting by slash count
 * is on chain; by reputation (an EMA of Observed events) it is computed off-chain, like the
 * reputation itself.
 *
 * 'proof' evidence whose detail carries a counter-proof (`detail.counterProof = { proof,
 * publicSignals }`, an honest prover's Groth16 proof for the accused's input) is slashed through
 * `slashByProof`: the contract verifies it with the model's registered verifier, so the fault is
 * proven on chain; a counter-proof the contract refuses leaves a 'reject' entry. Other evidence
 * goes through `slash`, on the arbiter's word after the checker's re-check.
 *
 * Rewards: only a reporter whose libp2p key signed `bindingMessage` (verified here, in `bind`,
 * before the contract records the binding) can be paid, and only while it has standing; the
 * contract burns every other reporter's share, so an id anyone can fund or type earns no one
 * anything. Stake this ledger's account (the arbiter) sends is a grant the contract keeps locked.
 */
import { peerIdFromString } from '@libp2p/peer-id'
import { decode, encode } from 'cborg'
import { getAddress, hexToBytes, isAddress, parseEventLogs, toHex, type Abi, type Address, type Hex, type TransactionReceipt } from 'viem'
import { ConfigError, InputError } from '../shared/errors.js'
import { evidenceHash, verifyChain } from '../shared/ledger/rules.js'
import { DEFAULT_RULES, type Evidence, type EvidenceChecker, type Ledger, type LedgerRules, type PeerStanding } from '../shared/ledger/types.js'
import type { Groth16Proof } from '../shared/zk/types.js'
import { connect, peerKey, revertName, write, zkModelId, type Clients } from './chain/clients.js'
import { stakeArtifact } from './chain/compile.js'
import { EVIDENCE_KINDS, proofCallArgs, proofClaim, signalsHash, toUnits, toWei, type ProofSlash } from './ledger-evm-args.js'
import { eventReplay } from './ledger-evm-replay.js'
import { CHAIN_DEFAULTS } from './config.js'
import { logger } from '../shared/log.js'

const log = logger('tessera:ledger:evm')

export { EVIDENCE_KINDS, proofCallArgs, signalsHash, toUnits, toWei, WEI_PER_UNIT, type ProofSlash } from './ledger-evm-args.js'

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
  /** A federation's ledger: how often other arbiters' published evidence is re-checked here and approved or refused (ms). */
  cosignEveryMs?: number
}

export interface EvmLedger extends Ledger {
  readonly address: Address
  readonly account: Address
  /** Gas of the last transaction this ledger sent (0 before any). */
  readonly lastGas: number
  /** Every transaction's gas, by contract function. */
  gas(): Array<{ op: string; gas: number }>
  /** The on-chain ZK slash, with everything given explicitly; `slash()` calls it for counter-proof evidence. */
  slashByProof(p: ProofSlash): Promise<{ slashed: boolean; amount: number; reason: string; gas: number }>
  /**
   * The owner (this ledger's account: the first non-arbiter funder, or the address the peer bound) asks to
   * withdraw; paid after the contract's delay. The arbiter's own stake (a join grant) is never withdrawable.
   */
  requestWithdraw(peer: string, amount: number): Promise<PeerStanding>
  withdraw(peer: string): Promise<PeerStanding>
  /** The arbiter takes back (part of) the stake it granted `peer`; no one else can withdraw a grant. */
  reclaimGrant(peer: string, amount: number): Promise<PeerStanding>
  /**
   * Records that `peer` owns `owner` (an EVM address), once the peer's own key signed
   * bindingMessage(peer, owner, chainId, contract): from then on that address may withdraw its
   * stake and it may be paid rewards. Refuses (InputError) any other signature.
   */
  bind(peer: string, owner: Address, signature: Uint8Array): Promise<PeerStanding>
  /** Whether `peer` is bound, and to which address. */
  boundTo(peer: string): Promise<Address | undefined>
  /** Reads new events up to the head (less confirmations); reads and writes call it themselves. */
  sync(): Promise<void>
}

type Outcome = { slashed: boolean; amount: number; reason: string; matches?: string[]; pending?: { approvals: number; threshold: number } }

const NO_REPORTER: Hex = `0x${'00'.repeat(32)}`

/** What a peer's key signs to bind itself to an address on one contract of one chain (no replay elsewhere). */
export const bindingMessage = (peer: string, owner: Address, chainId: number, contract: Address): Uint8Array =>
  new TextEncoder().encode(`tessera-bind:${peer}:${getAddress(owner)}:${chainId}:${getAddress(contract)}`)

/** Whether `signature` is `peer`'s own (Ed25519 or other libp2p key embedded in its id) over the binding. */
export async function verifyBinding(peer: string, owner: Address, chainId: number, contract: Address, signature: Uint8Array): Promise<boolean> {
  let key
  try {
    key = peerIdFromString(peer).publicKey
  } catch {
    return false
  }
  if (key === undefined) return false
  try {
    return await key.verify(bindingMessage(peer, owner, chainId, contract), signature)
  } catch {
    return false
  }
}

/** The contract at `config.stakeAddress`, checked to run these rules, with its history replayed. */
export async function openEvmLedger(config: EvmLedgerConfig, checker: EvidenceChecker, rules: LedgerRules = DEFAULT_RULES): Promise<EvmLedger> {
  const c: Clients = await connect(config)
  const address = config.stakeAddress
  const abi: Abi = (await stakeArtifact()).abi
  const code = await c.public.getCode({ address }).catch(() => undefined)
  if (code === undefined || code === '0x') {
    throw new ConfigError(`there is no contract at ${address} on chain ${config.chainId}: deploy one (tessera chain deploy) or fix the address`)
  }
  // A chain shorter than the deployment (a reset node that got a new contract at the same address) has lost its history.
  const head = await c.public.getBlockNumber({ cacheTime: 0 })
  if (BigInt(config.fromBlock ?? 0) > head) {
    throw new ConfigError(
      `the contract at ${address} was deployed in block ${config.fromBlock} but chain ${config.chainId} is at block ${head}: ` +
        'the chain was reset and its history is gone; restore its state or deploy anew (tessera chain deploy)'
    )
  }
  const read = async <T>(functionName: string, args: unknown[] = []): Promise<T> => (await c.public.readContract({ address, abi, functionName, args })) as T
  await checkRules(read, address, rules)
  const { threshold, arbiters } = await federationOf(read, address)

  const replay = eventReplay({ client: c.public, address, abi, rules, fromBlock: config.fromBlock ?? 0, confirmations: c.confirmations })
  const { sync } = replay
  let gasUsed: Array<{ op: string; gas: number }> = []

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
    for (const p of new Set(peers)) if (!replay.labels.has(peerKey(p))) await send('label', [p])
  }
  const standingOf = async (peer: string): Promise<PeerStanding> => {
    await sync()
    return { ...replay.get(peerKey(peer)), peer }
  }
  const evidenceId = (e: Evidence): Hex => `0x${evidenceHash(e)}`
  /**
   * The reporter key the contract is given for a slash. The contract itself refuses unbound,
   * unstaked and slash-blacklisted reporters; a reputation blacklist is known off-chain only, so
   * such a reporter is not named at all (0: the reward is burned).
   */
  const payee = (reporter: string): Hex => {
    const k = peerKey(reporter)
    return replay.get(k).blacklisted ? NO_REPORTER : k
  }
  const reject = async (e: Evidence, reporter: string, reason: string): Promise<{ slashed: false; amount: 0; reason: string }> => {
    await labeled(e.accused, reporter)
    await send('reject', [peerKey(e.accused), evidenceId(e), EVIDENCE_KINDS.indexOf(e.kind), peerKey(reporter), reason])
    return { slashed: false, amount: 0, reason }
  }
  const slashedAmount = (r: TransactionReceipt): number => {
    const [log] = parseEventLogs({ abi, logs: r.logs, eventName: 'Slashed' }) as unknown as Array<{ args: { amount: bigint } }>
    return log === undefined ? 0 : toUnits(log.args.amount)
  }
  const used = async (id: Hex): Promise<boolean> => await read<boolean>('evidenceUsed', [id])

  async function proofSlash(p: ProofSlash, reason: string, e?: Evidence): Promise<Outcome & { gas: number }> {
    const { a, b, c: cc } = proofCallArgs(p.proof)
    await labeled(p.accused, p.reporter)
    try {
      const args = [
        peerKey(p.accused),
        p.evidenceId,
        zkModelId(p.model),
        signalsHash(p.claimedOutput),
        signalsHash(p.claimedInput),
        a,
        b,
        cc,
        p.publicSignals.map((s) => BigInt(s)),
        payee(p.reporter)
      ]
      const r = await send('slashByProof', args)
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

  /** Slashes on checked evidence, under the lock: by counter-proof on chain when there is one, else on the arbiter's word. */
  async function slashChecked(e: Evidence, reporter: string, id: Hex, reason: string, matches?: string[]): Promise<Outcome> {
    const m = matches !== undefined ? { matches } : {}
    const counter = e.kind === 'proof' ? (e.detail.counterProof as { proof: Groth16Proof; publicSignals: string[] } | undefined) : undefined
    let claim: Awaited<ReturnType<typeof proofClaim>> | undefined
    try {
      claim = counter !== undefined ? await proofClaim(e) : undefined
    } catch (err) {
      return await locked(async () => await reject(e, reporter, `invalid counter-proof evidence: ${(err as Error).message}`))
    }
    return await locked(async () => {
      // Checked again under the lock: the same evidence may have been slashed while we awaited the checker.
      if (await used(id)) return await reject(e, reporter, 'evidence already used')
      if (counter !== undefined && claim !== undefined) {
        const proof = { accused: e.accused, evidenceId: id, ...claim, proof: counter.proof, publicSignals: counter.publicSignals, reporter }
        const r = await proofSlash(proof, `${reason}; counter-proof verified on chain`, e)
        return { slashed: r.slashed, amount: r.amount, reason: r.reason, ...(r.slashed ? m : {}) }
      }
      await labeled(e.accused, reporter)
      // Where other arbiters must approve too, they re-check the evidence itself, not this relay's word.
      if (arbiters > 1 && !replay.published.has(id)) await send('publishEvidence', [id, toHex(encode({ evidence: e, reporter }))])
      try {
        const r = await send('slash', [peerKey(e.accused), id, EVIDENCE_KINDS.indexOf(e.kind), payee(reporter), reason])
        if (slashedIn(r)) return { slashed: true, amount: slashedAmount(r), reason, ...m }
        return waiting(id, reason)
      } catch (err) {
        const why = revertName((err as { cause?: unknown }).cause)
        if (why === 'EvidenceUsed') return await reject(e, reporter, 'evidence already used')
        if (why === 'AlreadyApproved') return waiting(id, reason)
        if (why === 'ProposalMismatch') return await reject(e, reporter, 'another arbiter accused someone else (or named another reporter) on this evidence')
        throw err
      }
    })
  }
  const slashedIn = (r: TransactionReceipt): boolean => parseEventLogs({ abi, logs: r.logs, eventName: 'Slashed' }).length > 0
  const waiting = (id: Hex, reason: string): Outcome => {
    const n = replay.approvals.get(id)?.size ?? 1
    return {
      slashed: false,
      amount: 0,
      reason: `${reason}; approved by ${n} of the ${threshold} arbiters a slash needs: the others re-check the published evidence`,
      pending: { approvals: n, threshold }
    }
  }

  /**
   * A federation's other half: evidence other arbiters published is re-checked here, by this
   * relay's own checker, and approved (one more approval towards the threshold) or refused in
   * public. Nothing counts on another relay's word: a lying arbiter's evidence gets no approval.
   */
  const judged = new Set<Hex>()
  const me = c.account.address.toLowerCase()
  async function cosign(): Promise<void> {
    await sync()
    for (const [id, p] of replay.published) {
      if (judged.has(id) || p.arbiter.toLowerCase() === me || replay.slashedOn.has(id)) continue
      if ([...(replay.approvals.get(id) ?? [])].some((a) => a.toLowerCase() === me)) continue
      judged.add(id)
      let e: Evidence
      let reporter: string
      try {
        const b = decode(hexToBytes(p.evidence)) as { evidence: Evidence; reporter: string }
        e = b.evidence
        reporter = typeof b.reporter === 'string' ? b.reporter : 'anonymous'
        if (!wellFormed(e) || evidenceId(e) !== id) throw new Error('the bytes are not the evidence the id names')
      } catch (err) {
        log.warn(`evidence ${id.slice(0, 10)} published by ${p.arbiter} is unreadable (${(err as Error).message}): not approved`)
        continue
      }
      // Slashed since the last sync by the others' approvals: nothing to add (a refusal would only be noise in the log).
      if (await used(id)) continue
      const outcome = await ledger.slash(e, reporter).catch((err: Error) => {
        log.warn(`re-checking evidence ${id.slice(0, 10)} failed: ${err.message}`)
        judged.delete(id) // tried again at the next round
        return undefined
      })
      if (outcome !== undefined) log.info(`evidence against ${e.accused.slice(-8)} published by ${p.arbiter}: ${outcome.slashed ? 'slashed' : outcome.reason}`)
    }
  }
  let cosigning = false
  const cosigner =
    arbiters > 1
      ? setInterval(() => {
          if (cosigning) return
          cosigning = true
          cosign()
            .catch((err: Error) => log.debug(`co-signing round failed: ${err.message}`))
            .finally(() => {
              cosigning = false
            })
        }, config.cosignEveryMs ?? CHAIN_DEFAULTS.cosignEveryMs)
      : undefined

  await sync()

  const ledger: EvmLedger = {
    address,
    account: c.account.address,
    get lastGas() {
      return lastGas
    },
    gas: () => [...gasUsed],

    async stake(peer, amount) {
      const value = toWei(amount)
      return await locked(async () => {
        await labeled(peer)
        await send('stake', [peerKey(peer)], value)
        return await standingOf(peer)
      })
    },

    async slash(e, reporter) {
      if (!wellFormed(e)) throw new InputError('evidence needs a known kind, an accused peer id, receipts as bytes and a detail object')
      const id = evidenceId(e)
      if (reporter === e.accused) return await locked(async () => await reject(e, reporter, 'a peer cannot report itself'))
      if (await used(id)) return await locked(async () => await reject(e, reporter, 'evidence already used'))
      let verdict: { valid: boolean; reason: string; matches?: string[]; unjudged?: boolean }
      try {
        verdict = await checker.check(e)
      } catch (err) {
        return { ...(await locked(async () => await reject(e, reporter, `checker failed: ${(err as Error).message}`))), unjudged: true }
      }
      if (!verdict.valid) {
        const refused = await locked(async () => await reject(e, reporter, `invalid evidence: ${verdict.reason}`))
        return verdict.unjudged === true ? { ...refused, unjudged: true } : refused
      }
      // Read defensively: only an array of peer ids is passed on.
      const matches = Array.isArray(verdict.matches) ? verdict.matches.filter((p): p is string => typeof p === 'string') : undefined
      return await slashChecked(e, reporter, id, verdict.reason, matches)
    },

    async slashByProof(p) {
      return await locked(async () => await proofSlash(p, 'counter-proof verified on chain'))
    },

    async observe(peer, ok) {
      return await locked(async () => {
        await labeled(peer)
        await send('observe', [peerKey(peer), ok])
        return await standingOf(peer)
      })
    },

    async requestWithdraw(peer, amount) {
      const value = toWei(amount)
      return await locked(async () => {
        await send('requestWithdraw', [peerKey(peer), value])
        return await standingOf(peer)
      })
    },

    async withdraw(peer) {
      return await locked(async () => {
        await send('withdraw', [peerKey(peer)])
        return await standingOf(peer)
      })
    },

    async reclaimGrant(peer, amount) {
      const value = toWei(amount)
      return await locked(async () => {
        await send('reclaimGrant', [peerKey(peer), value])
        return await standingOf(peer)
      })
    },

    async bind(peer, owner, signature) {
      if (typeof owner !== 'string' || !isAddress(owner) || BigInt(owner) === 0n) throw new InputError(`not an EVM address: ${String(owner)}`)
      if (!(signature instanceof Uint8Array) || !(await verifyBinding(peer, owner, config.chainId, address, signature))) {
        throw new InputError(`the binding of ${peer} to ${owner} is not signed by ${peer}'s own key`)
      }
      return await locked(async () => {
        await labeled(peer)
        await send('bind', [peerKey(peer), getAddress(owner)])
        return await standingOf(peer)
      })
    },

    async boundTo(peer) {
      await sync()
      return replay.bound.get(peerKey(peer))
    },

    standing: standingOf,
    async standings() {
      await sync()
      return [...replay.standings.values()].sort((x, y) => (x.peer < y.peer ? -1 : x.peer > y.peer ? 1 : 0))
    },
    async isBlacklisted(peer) {
      return (await standingOf(peer)).blacklisted
    },
    async audit(fromSeq = 1) {
      await sync()
      return replay.entries.filter((e) => e.seq >= fromSeq)
    },

    async verifyAudit() {
      await sync()
      const { entries } = replay
      const chain = verifyChain([...entries])
      if (!chain.ok) return chain
      // The replay must also agree with the contract's storage: the events are complete and applied right.
      for (const [k, s] of replay.standings) {
        const [stake, , , , slashed, blacklisted] = await read<[bigint, bigint, Address, bigint, number, boolean]>('peers', [k])
        if (stake !== (replay.wei.get(k) ?? 0n) || slashed !== s.slashed || (blacklisted && !s.blacklisted)) {
          return { ok: false, badSeq: entries.findLast((e) => e.peer === s.peer)?.seq ?? entries.length }
        }
      }
      return { ok: true, badSeq: null }
    },

    sync,
    async close() {
      if (cosigner !== undefined) clearInterval(cosigner)
      await queue
      replay.close()
      gasUsed = []
    }
  }
  return ledger
}

/** Refuses a contract whose slash, reward and blacklist parameters are not these rules': the replay would disagree with it. */
async function checkRules(read: <T>(fn: string) => Promise<T>, address: Address, rules: LedgerRules): Promise<void> {
  const [slashBps, rewardBps, afterSlashes] = await Promise.all([read<number>('slashBps'), read<number>('rewardBps'), read<number>('blacklistAfterSlashes')])
  const agree =
    slashBps === Math.round(rules.slashFraction * 1e4) && rewardBps === Math.round(rules.rewardFraction * 1e4) && afterSlashes === rules.blacklistAfterSlashes
  if (!agree) {
    throw new InputError(
      `the contract at ${address} slashes ${slashBps / 100}%, rewards ${rewardBps / 100}% and blacklists after ${afterSlashes} slashes; ` +
        `these ledger rules say ${rules.slashFraction * 100}%, ${rules.rewardFraction * 100}% and ${rules.blacklistAfterSlashes}`
    )
  }
}

/** Who may slash: the contract's arbiters and how many approvals a slash on receipts needs; refuses a contract from before federations. */
async function federationOf(read: <T>(fn: string) => Promise<T>, address: Address): Promise<{ threshold: number; arbiters: number }> {
  try {
    const [threshold, arbiters] = await Promise.all([read<number>('threshold'), read<number>('arbiterCount')])
    return { threshold: Number(threshold), arbiters: Number(arbiters) }
  } catch {
    throw new ConfigError(`the contract at ${address} is a TesseraStake from before federations (no arbiters' threshold): deploy anew (tessera chain deploy)`)
  }
}

/** Evidence of the shape the contract can record (the checker judges its content). */
function wellFormed(e: Evidence): boolean {
  return (
    (EVIDENCE_KINDS as readonly string[]).includes(e?.kind) &&
    typeof e.accused === 'string' &&
    Array.isArray(e.receipts) &&
    e.receipts.every((r) => r instanceof Uint8Array) &&
    typeof e.detail === 'object' &&
    e.detail !== null
  )
}
