/**
 * The ledger on a real local chain: anvil (127.0.0.1 only), TesseraStake compiled with solc,
 * viem. Nothing of those is mocked; the EvidenceChecker is the same fake as in ledger.test.ts
 * (it trusts `detail.valid`), except in the ZK part, which uses the real receipt checker with
 * real Ed25519-signed replies and real Groth16 proofs of the tiny model (keys cached in .cache/zk).
 * Each case deploys its own contract (~30 ms) so their logs do not mix.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { existsSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { createPublicClient, createTestClient, http, type Abi } from 'viem'
import { startAnvil, type Anvil } from '../relay/chain/anvil.js'
import { connect, peerKey, write } from '../relay/chain/clients.js'
import { privateKeyToAccount } from 'viem/accounts'
import { stakeArtifact } from '../relay/chain/compile.js'
import { deployTessera, deployZkVerifier, type Deployment } from '../relay/chain/deploy.js'
import { startLocalChain } from '../relay/chain/local.js'
import { bindingMessage, openEvmLedger, toWei, type EvmLedger } from '../relay/ledger-evm.js'
import { evidenceHash } from '../shared/ledger/rules.js'
import { DEFAULT_RULES, type Evidence, type EvidenceChecker, type LedgerEntry } from '../shared/ledger/types.js'
import { ConfigError, InputError, TesseraError } from '../shared/errors.js'
import { bytesOfInt32, signZkReply } from '../shared/protocol/zk.js'
import { receiptEvidenceChecker } from '../shared/verify/evidence.js'
import { encodeProof } from '../shared/zk/proof.js'
import { toField } from '../shared/zk/field.js'
import { randomInputs } from '../shared/zk/model.js'
import { quantizeInput } from '../shared/zk/quantize.js'
import { releaseZkWorkers } from '../shared/zk/verify.js'
import { seededZkModel, setupZkModel } from '../host/zk/setup.js'
import { tempDir } from './helpers/paths.js'
import { evidence, fakeChecker, ledgerContract } from './helpers/ledger-contract.js'
import { contractEvents, type ContractEvent } from './helpers/chain-events.js'

const WITHDRAW_DELAY = 3600
let anvil: Anvil
const open: EvmLedger[] = []

async function fresh(
  checker: EvidenceChecker = fakeChecker(),
  chain: Anvil = anvil
): Promise<{ d: Deployment; ledger: EvmLedger; reopen: (c?: EvidenceChecker, key?: string) => Promise<EvmLedger> }> {
  const d = await deployTessera({ rpcUrl: chain.url, privateKey: chain.accounts[0], out: null, withdrawDelay: WITHDRAW_DELAY })
  const reopen = async (c: EvidenceChecker = checker, key: string = chain.accounts[0]): Promise<EvmLedger> => {
    const l = await openEvmLedger({ rpcUrl: chain.url, chainId: chain.chainId, stakeAddress: d.stakeAddress, privateKey: key, fromBlock: d.deployBlock }, c)
    open.push(l)
    return l
  }
  return { d, ledger: await reopen(), reopen }
}

/** The contract's own events, for comparing with the rebuilt audit log. */
const events = async (chain: Anvil, d: Deployment): Promise<ContractEvent[]> => await contractEvents(chain.url, d)

beforeAll(async () => {
  anvil = await startAnvil()
})
afterEach(async () => {
  for (const l of open.splice(0)) await l.close().catch(() => {})
})
afterAll(async () => {
  await anvil?.stop()
})

/** Binds `peer` straight through the contract (the arbiter's call, past ledger.bind's signature check): setup for ids that are not libp2p keys. */
async function bindRaw(d: Deployment, peer: string, owner: `0x${string}`): Promise<void> {
  const c = await connect({ rpcUrl: anvil.url, chainId: anvil.chainId, privateKey: anvil.accounts[0] })
  await write(c, { address: d.stakeAddress, abi: (await stakeArtifact()).abi, functionName: 'bind', args: [peerKey(peer), owner] })
}

const addressOf = (i: number): `0x${string}` => privateKeyToAccount(anvil.accounts[i]).address

async function pastDelay(): Promise<void> {
  const test = createTestClient({ mode: 'anvil', transport: http(anvil.url, { retryCount: 0 }) })
  await test.increaseTime({ seconds: WITHDRAW_DELAY + 1 })
  await test.mine({ blocks: 1 })
}

describe('EVM ledger', () => {
  // The shared cases' reporter 'honest' is a bound one (it is not a libp2p key, so bound by the arbiter directly).
  ledgerContract(async (checker) => {
    const f = await fresh(checker)
    await bindRaw(f.d, 'honest', addressOf(3))
    return f.ledger
  })

  it("refuses a wrong chain id, a missing contract and rules that differ from the contract's", async () => {
    const { d } = await fresh()
    const base = { rpcUrl: anvil.url, chainId: anvil.chainId, stakeAddress: d.stakeAddress, privateKey: anvil.accounts[0] }
    await expect(openEvmLedger({ ...base, chainId: 1 }, fakeChecker())).rejects.toThrow(/is on chain 31337, not 1/)
    await expect(openEvmLedger({ ...base, stakeAddress: '0x000000000000000000000000000000000000dEaD' }, fakeChecker())).rejects.toThrow(/there is no contract/)
    await expect(openEvmLedger(base, fakeChecker(), { ...DEFAULT_RULES, slashFraction: 0.25 })).rejects.toThrow(InputError)
    await expect(openEvmLedger({ ...base, privateKey: 'NO_SUCH_TESSERA_KEY' }, fakeChecker())).rejects.toThrow(/NO_SUCH_TESSERA_KEY .*not set/)
  })

  it('withdraws only after the delay, and stake under a pending withdrawal can still be slashed', async () => {
    const { d, ledger: l, reopen } = await fresh()
    // The operator stakes from its own address (the arbiter's stake would be a locked grant).
    const operator = await reopen(undefined, anvil.accounts[4])
    await operator.stake('leaver', 10)
    await operator.requestWithdraw('leaver', 8)
    await expect(operator.withdraw('leaver')).rejects.toThrow(/WithdrawTooEarly/)
    expect((await l.slash(evidence(1, 'leaver'), 'honest')).amount).toBe(5)
    // Only the owner (the account that staked first) may withdraw; only the arbiter may slash.
    const other = await reopen(undefined, anvil.accounts[1])
    await expect(other.requestWithdraw('leaver', 1)).rejects.toThrow(/NotOwner/)
    await expect(l.requestWithdraw('leaver', 1)).rejects.toThrow(/NotOwner/)
    await expect(other.slash(evidence(2, 'leaver'), 'honest')).rejects.toThrow(/NotArbiter/)
    await pastDelay()
    const c = await connect({ rpcUrl: anvil.url, chainId: anvil.chainId, privateKey: anvil.accounts[0] })
    const before = await c.public.getBalance({ address: d.stakeAddress })
    // 8 were asked for, but the slash left 5: that is all that is paid.
    expect((await operator.withdraw('leaver')).stake).toBe(0)
    expect(before - (await c.public.getBalance({ address: d.stakeAddress }))).toBe(5n * 10n ** 15n)
    await expect(operator.withdraw('leaver')).rejects.toThrow(/NoPendingWithdrawal/)
    expect((await l.audit()).filter((e) => e.peer === 'leaver').map((e) => [e.kind, e.amount])).toEqual([
      ['stake', 10],
      ['stake', undefined],
      ['slash', 5],
      ['stake', -5]
    ])
  })

  it('a stranger who funds a made-up reporter id and reports through it gets back only what it staked: the reward is burned', async () => {
    const { d, ledger: l, reopen } = await fresh()
    await l.stake('cheat', 100)
    const stranger = await reopen(undefined, anvil.accounts[1])
    const me = addressOf(1)
    await stranger.stake('made-up', 1)
    const c = await connect({ rpcUrl: anvil.url, chainId: anvil.chainId, privateKey: anvil.accounts[0] })
    const { abi } = await stakeArtifact()
    const burnedBefore = (await c.public.readContract({ address: d.stakeAddress, abi, functionName: 'burned' })) as bigint
    // Valid evidence naming the made-up id: the cheat is slashed, but no one is paid.
    expect(await l.slash(evidence(1), 'made-up')).toMatchObject({ slashed: true, amount: 50 })
    expect((await l.standing('made-up')).stake).toBe(1)
    expect((await c.public.readContract({ address: d.stakeAddress, abi, functionName: 'burned' })) as bigint).toBe(burnedBefore + 50n * 10n ** 15n)
    expect((await l.audit()).filter((e) => e.kind === 'reward')).toEqual([])
    expect((await l.audit()).find((e) => e.kind === 'slash')?.data).toMatchObject({ reporter: 'made-up', rewardBurned: true })
    // It cannot bind the id itself, nor have the arbiter bind it without the id's key (it has none: it is no key at all).
    await expect(
      write(await connect({ rpcUrl: anvil.url, chainId: anvil.chainId, privateKey: anvil.accounts[1] }), {
        address: d.stakeAddress,
        abi,
        functionName: 'bind',
        args: [peerKey('made-up'), me]
      })
    ).rejects.toThrow(/NotArbiter/)
    await expect(l.bind('made-up', me, new Uint8Array(64))).rejects.toThrow(InputError)
    // Out of the contract comes exactly the one unit it put in.
    await expect(stranger.requestWithdraw('made-up', 2)).rejects.toThrow(/NothingStaked/)
    await stranger.requestWithdraw('made-up', 1)
    await pastDelay()
    const held = await c.public.getBalance({ address: d.stakeAddress })
    await stranger.withdraw('made-up')
    expect(held - (await c.public.getBalance({ address: d.stakeAddress }))).toBe(10n ** 15n)
    await expect(stranger.requestWithdraw('made-up', 1)).rejects.toThrow(/NothingStaked/)
  })

  it("only a binding signed by the reporter's own peer key makes it payable, and its address then owns it over a first funder", async () => {
    const { d, ledger: l, reopen } = await fresh()
    await l.stake('cheat', 100)
    const key = await generateKeyPair('Ed25519')
    const reporter = peerIdFromPrivateKey(key).toString()
    const operator = addressOf(2)
    // A stranger funds the real peer id first (the old way to own it), then forges bindings.
    const stranger = await reopen(undefined, anvil.accounts[1])
    await stranger.stake(reporter, 1)
    const otherKey = await generateKeyPair('Ed25519')
    const forged = await otherKey.sign(bindingMessage(reporter, addressOf(1), anvil.chainId, d.stakeAddress))
    await expect(l.bind(reporter, addressOf(1), forged)).rejects.toThrow(/not signed by/)
    // The reporter's own signature, but for another contract or chain, or another address, does not bind here.
    const elsewhere = await key.sign(bindingMessage(reporter, operator, anvil.chainId, '0x000000000000000000000000000000000000dEaD'))
    await expect(l.bind(reporter, operator, elsewhere)).rejects.toThrow(/not signed by/)
    const otherChain = await key.sign(bindingMessage(reporter, operator, 1, d.stakeAddress))
    await expect(l.bind(reporter, operator, otherChain)).rejects.toThrow(/not signed by/)
    const mine = await key.sign(bindingMessage(reporter, operator, anvil.chainId, d.stakeAddress))
    await expect(l.bind(reporter, addressOf(1), mine)).rejects.toThrow(/not signed by/)
    // Unbound, even with stake: the reward is burned.
    expect(await l.boundTo(reporter)).toBeUndefined()
    await l.slash(evidence(1), reporter)
    expect((await l.standing(reporter)).stake).toBe(1)

    await l.bind(reporter, operator, mine)
    expect(await l.boundTo(reporter)).toBe(operator)
    expect((await l.slash(evidence(2), reporter)).amount).toBe(25)
    expect((await l.standing(reporter)).stake).toBe(13.5) // 1 + half of half of 50
    // The stranger's first funding gives it nothing; the bound operator withdraws the reward.
    await expect(stranger.requestWithdraw(reporter, 1)).rejects.toThrow(/NotOwner/)
    const op = await reopen(undefined, anvil.accounts[2])
    await expect(op.requestWithdraw(reporter, 13.5)).resolves.toMatchObject({ stake: 13.5 })
    expect(await l.verifyAudit()).toEqual({ ok: true, badSeq: null })
  })

  it("a bound reporter that is blacklisted is paid nothing, and the arbiter's join stake is a grant no identity can withdraw", async () => {
    const { d, ledger: l, reopen } = await fresh()
    await l.stake('cheat', 100)
    // The arbiter grants 'newcomer' a join stake; its key binds it to an address it controls and asks for the money.
    await l.stake('newcomer', 100)
    await bindRaw(d, 'newcomer', addressOf(5))
    const newcomer = await reopen(undefined, anvil.accounts[5])
    await expect(newcomer.requestWithdraw('newcomer', 1)).rejects.toThrow(/NothingStaked/)
    await expect(l.requestWithdraw('newcomer', 1)).rejects.toThrow(/NotOwner/)
    // Its own stake on top is its to take back; the grant stays, slashable.
    await newcomer.stake('newcomer', 10)
    await expect(newcomer.requestWithdraw('newcomer', 10.001)).rejects.toThrow(/NothingStaked/)
    await expect(newcomer.requestWithdraw('newcomer', 10)).resolves.toMatchObject({ stake: 110 })
    // Three slashes blacklist it: then, though bound and staked, it reports for nothing.
    for (const n of [1, 2, 3]) await l.slash(evidence(n, 'newcomer'), 'someone')
    expect(await l.standing('newcomer')).toMatchObject({ blacklisted: true, stake: 13.75 })
    const before = (await l.standing('newcomer')).stake
    await l.slash(evidence(4), 'newcomer')
    expect((await l.standing('newcomer')).stake).toBe(before)
    // Slashes ate its own 10 first: nothing of the grant's remainder is withdrawable.
    await pastDelay()
    await expect(newcomer.withdraw('newcomer')).rejects.toThrow(/NothingStaked/)
    // The grant's remainder is the arbiter's to take back, and no one else's.
    await expect(newcomer.reclaimGrant('newcomer', 1)).rejects.toThrow(/NotArbiter/)
    const c = await connect({ rpcUrl: anvil.url, chainId: anvil.chainId, privateKey: anvil.accounts[0] })
    const held = await c.public.getBalance({ address: d.stakeAddress })
    await expect(l.reclaimGrant('newcomer', 13.76)).rejects.toThrow(/NothingStaked/)
    expect((await l.reclaimGrant('newcomer', 13.75)).stake).toBe(0)
    expect(held - (await c.public.getBalance({ address: d.stakeAddress }))).toBe(toWei(13.75))
    expect(await l.verifyAudit()).toEqual({ ok: true, badSeq: null })
  })

  it('a bound, staked reporter blacklisted by reputation (off-chain only) is not named to the contract: its share is burned', async () => {
    const { d, ledger: l } = await fresh()
    await l.stake('cheat', 100)
    await l.stake('flaky', 10)
    await bindRaw(d, 'flaky', addressOf(6))
    for (let i = 0; i < 5; i++) await l.observe('flaky', false)
    expect(await l.standing('flaky')).toMatchObject({ blacklisted: true, stake: 10, slashed: 0 })
    expect((await l.slash(evidence(1), 'flaky')).slashed).toBe(true)
    expect((await l.standing('flaky')).stake).toBe(10)
    expect((await l.audit()).findLast((e) => e.kind === 'slash')?.data).toMatchObject({ reporter: null, rewardBurned: true })
    expect(await l.verifyAudit()).toEqual({ ok: true, badSeq: null })
  })

  it('a local chain restarted without its state refuses to start instead of deploying an empty contract', async () => {
    const dir = tempDir('chain-lost')
    const stateFile = join(dir, 'anvil.json')
    const deploymentFile = join(dir, 'chain.json')
    const first = await startLocalChain({ stateFile, deploymentFile })
    const l = await openEvmLedger(first.config, fakeChecker())
    await l.stake('cheat', 100)
    await l.close()
    await first.anvil.stop()
    expect(existsSync(stateFile)).toBe(true)
    // With its state it comes back with its history.
    const again = await startLocalChain({ stateFile, deploymentFile })
    expect(again.deployment.stakeAddress).toBe(first.deployment.stakeAddress)
    const l2 = await openEvmLedger(again.config, fakeChecker())
    expect((await l2.standing('cheat')).stake).toBe(100)
    await l2.close()
    await again.anvil.stop()
    // Without it: a clear refusal naming both files and what to do.
    rmSync(stateFile)
    const refused = startLocalChain({ stateFile, deploymentFile })
    await expect(refused).rejects.toThrow(ConfigError)
    await expect(refused).rejects.toThrow(new RegExp(`${deploymentFile}.*does not hold it.*Restore ${stateFile}.*delete ${deploymentFile}`))
  }, 60_000)

  it('a ledger whose chain is younger than its deployment (reset, history gone) refuses to open', async () => {
    const { d } = await fresh()
    const head = Number(await createPublicClient({ transport: http(anvil.url, { retryCount: 0 }) }).getBlockNumber())
    const cfg = { rpcUrl: anvil.url, chainId: anvil.chainId, stakeAddress: d.stakeAddress, privateKey: anvil.accounts[0], fromBlock: head + 1000 }
    await expect(openEvmLedger(cfg, fakeChecker())).rejects.toThrow(ConfigError)
    await expect(openEvmLedger(cfg, fakeChecker())).rejects.toThrow(/history is gone/)
  })

  it("passes the checker's re-execution matches on with a slash", async () => {
    const { ledger: l } = await fresh({ check: async () => ({ valid: true, reason: 're-executed', matches: ['peer-a', 'peer-b'] }) })
    await l.stake('cheat', 10)
    expect(await l.slash(evidence(1), 'honest')).toEqual({ slashed: true, amount: 5, reason: 're-executed', matches: ['peer-a', 'peer-b'] })
  })

  it("the contract's storage and events say what the rebuilt log says after three slashes", async () => {
    const { d, ledger: l } = await fresh()
    await l.stake('cheat', 100)
    await l.stake('honest', 10)
    await bindRaw(d, 'honest', addressOf(3))
    for (const n of [1, 2, 3]) await l.slash(evidence(n), 'honest')
    const abi: Abi = (await stakeArtifact()).abi
    const c = await connect({ rpcUrl: anvil.url, chainId: anvil.chainId, privateKey: anvil.accounts[0] })
    const peer = (await c.public.readContract({ address: d.stakeAddress, abi, functionName: 'peers', args: [peerKey('cheat')] })) as unknown[]
    expect([peer[0], peer[4], peer[5]]).toEqual([125n * 10n ** 14n, 3, true])
    expect(await c.public.readContract({ address: d.stakeAddress, abi, functionName: 'burned' })).toBe(4375n * 10n ** 13n) // 25 + 12.5 + 6.25 units burned
    // Labels, bindings and the arbiters' admissions and approvals change no standing: not audit entries.
    const evs = (await events(anvil, d)).filter((e) => !['Labeled', 'Bound', 'ArbiterAdmitted', 'Approved'].includes(e.eventName))
    const kinds: Record<string, LedgerEntry['kind']> = {
      Staked: 'stake',
      Slashed: 'slash',
      Rewarded: 'reward',
      Observed: 'reputation',
      Rejected: 'reject',
      Blacklisted: 'blacklist'
    }
    const audit = await l.audit()
    expect(evs.map((e) => kinds[e.eventName])).toEqual(audit.map((e) => e.kind))
    expect(evs.map((e) => (e.args.amount === undefined ? undefined : Number(e.args.amount as bigint) / 1e15))).toEqual(
      audit.map((e) => (e.kind === 'blacklist' ? undefined : e.amount))
    )
    expect(await l.verifyAudit()).toEqual({ ok: true, badSeq: null })
  })

  it('a lost RPC answer is retried with the same signed transaction: nothing is sent twice', async () => {
    // A proxy in front of anvil that lets the first transaction through, then drops the connection
    // instead of answering: the ledger cannot know whether it arrived.
    let dropped = 0
    const proxy = createServer((req, res) => {
      let body = ''
      req.on('data', (b: Buffer) => {
        body += b.toString()
      })
      req.on('end', () => {
        void (async () => {
          const upstream = await fetch(anvil.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
          const text = await upstream.text()
          if (dropped === 0 && (JSON.parse(body) as { method?: string }).method === 'eth_sendRawTransaction') {
            dropped++
            req.socket.destroy()
            return
          }
          res.writeHead(upstream.status, { 'content-type': 'application/json' }).end(text)
        })()
      })
    })
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve))
    try {
      const d = await deployTessera({ rpcUrl: anvil.url, privateKey: anvil.accounts[0], out: null })
      const l = await openEvmLedger(
        {
          rpcUrl: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`,
          chainId: anvil.chainId,
          stakeAddress: d.stakeAddress,
          privateKey: anvil.accounts[0],
          fromBlock: d.deployBlock
        },
        fakeChecker()
      )
      open.push(l)
      expect((await l.stake('p', 10)).stake).toBe(10)
      expect(dropped).toBe(1)
      expect((await l.stake('p', 5)).stake).toBe(15)
      const evs = await events(anvil, d)
      expect(evs.map((e) => e.eventName)).toEqual(['ArbiterAdmitted', 'Labeled', 'Staked', 'Staked'])
    } finally {
      proxy.close()
    }
  })

  it('a reopened ledger rebuilds the same standings and log from the chain, and keeps the chain growing', async () => {
    const { ledger: l, reopen } = await fresh()
    await l.stake('cheat', 100)
    await l.stake('honest', 1)
    await l.slash(evidence(1), 'honest')
    await l.observe('honest', true)
    const standings = await l.standings()
    const audit = await l.audit()
    await l.close()
    await expect(l.standings()).rejects.toThrow(TesseraError)

    const again = await reopen()
    expect(await again.standings()).toEqual(standings)
    expect(await again.audit()).toEqual(audit)
    expect(await again.slash(evidence(1), 'honest')).toMatchObject({ reason: 'evidence already used' })
    expect((await again.observe('cheat', false)).reputation).toBeCloseTo(0.405)
    const tail = (await again.audit()).slice(-2)
    expect(tail[1].prevHash).toBe(tail[0].hash)
    expect(await again.verifyAudit()).toEqual({ ok: true, badSeq: null })
  })

  it('survives stopping anvil: --state dumps the chain on exit and a restart loads it', async () => {
    const stateFile = join(tempDir('chain'), 'state.json')
    const first = await startAnvil({ stateFile })
    let d: Deployment
    let standings, audit
    try {
      const f = await fresh(fakeChecker(), first)
      d = f.d
      await f.ledger.stake('cheat', 100)
      await f.ledger.slash(evidence(1), 'honest')
      await f.ledger.observe('cheat', false)
      standings = await f.ledger.standings()
      audit = await f.ledger.audit()
      await f.ledger.close()
    } finally {
      await first.stop()
    }
    const second = await startAnvil({ stateFile })
    try {
      const l = await openEvmLedger(
        { rpcUrl: second.url, chainId: second.chainId, stakeAddress: d.stakeAddress, privateKey: second.accounts[0], fromBlock: d.deployBlock },
        fakeChecker()
      )
      open.push(l)
      expect(await l.standings()).toEqual(standings)
      expect(await l.audit()).toEqual(audit)
      expect((await l.stake('cheat', 1)).stake).toBe(51)
      expect(await l.verifyAudit()).toEqual({ ok: true, badSeq: null })
    } finally {
      await second.stop()
    }
  })
})

describe('EVM ledger: a federation of arbiters (one key per relay, 2 of 3 approvals)', () => {
  /** A contract three relays share (anvil accounts 1–3 as arbiters), and each relay's ledger on it with its own checker. */
  async function federation(checkers: EvidenceChecker[]): Promise<{ d: Deployment; ledgers: EvmLedger[] }> {
    const d = await deployTessera({
      rpcUrl: anvil.url,
      privateKey: anvil.accounts[0],
      out: null,
      arbiters: [1, 2, 3].map(addressOf),
      threshold: 2
    })
    const ledgers: EvmLedger[] = []
    for (const [i, checker] of checkers.entries()) {
      const cfg = { rpcUrl: anvil.url, chainId: anvil.chainId, stakeAddress: d.stakeAddress, privateKey: anvil.accounts[i + 1], fromBlock: d.deployBlock }
      const l = await openEvmLedger({ ...cfg, cosignEveryMs: 100 }, checker)
      open.push(l)
      ledgers.push(l)
    }
    return { d, ledgers }
  }
  const until = async (check: () => Promise<boolean>, ms = 10_000): Promise<void> => {
    const end = Date.now() + ms
    while (!(await check())) {
      if (Date.now() > end) throw new Error('timed out')
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }

  it('a slash on receipts takes effect at the second approval, once; every relay rebuilds the same standings and audit log', async () => {
    const { d, ledgers } = await federation([fakeChecker(), fakeChecker(), fakeChecker()])
    const [a, b, c] = ledgers
    await a.stake('cheat', 100)
    const first = await a.slash(evidence(1), 'honest')
    expect(first.slashed).toBe(false)
    expect(first.pending).toEqual({ approvals: 1, threshold: 2 })
    // The other relays read the published evidence, re-check it with their own checkers and approve.
    await until(async () => (await c.standing('cheat')).slashed === 1)
    await new Promise((resolve) => setTimeout(resolve, 500)) // every co-signer has had its round
    for (const l of ledgers) expect(await l.standing('cheat')).toMatchObject({ stake: 50, slashed: 1 })
    const evs = await events(anvil, d)
    expect(evs.filter((e) => e.eventName === 'Slashed')).toHaveLength(1)
    expect(evs.filter((e) => e.eventName === 'EvidencePublished')).toHaveLength(1)
    expect(evs.filter((e) => e.eventName === 'Approved').length).toBeGreaterThanOrEqual(2)
    const [la, lb, lc] = await Promise.all([a.audit(), b.audit(), c.audit()])
    expect(lb).toEqual(la)
    expect(lc).toEqual(la)
    // Reporting it again, through another relay, counts nothing twice.
    expect((await b.slash(evidence(1), 'honest')).slashed).toBe(false)
    expect((await a.standing('cheat')).slashed).toBe(1)
  }, 30_000)

  it('a lying arbiter alone slashes nobody: the others re-check its evidence, refuse it in public, and the honest peer keeps its stake', async () => {
    const liar = { check: async () => ({ valid: true, reason: 'trust me' }) }
    const { d, ledgers } = await federation([fakeChecker(), fakeChecker(), liar])
    const [a, , rogue] = ledgers
    await a.stake('honest', 10)
    // Evidence whose receipts agree (detail.valid false): the liar's checker approves it anyway.
    const r = await rogue.slash(evidence(7, 'honest', false), 'rogue-client')
    expect(r.pending).toEqual({ approvals: 1, threshold: 2 })
    await until(async () => (await events(anvil, d)).filter((e) => e.eventName === 'Rejected').length >= 2)
    for (const l of ledgers) expect(await l.standing('honest')).toMatchObject({ stake: 10, slashed: 0 })
    expect((await events(anvil, d)).filter((e) => e.eventName === 'Slashed')).toHaveLength(0)
    // Approving twice is still one approval; an address that is no arbiter cannot approve at all.
    expect((await rogue.slash(evidence(7, 'honest', false), 'rogue-client')).pending).toEqual({ approvals: 1, threshold: 2 })
    const outsider = await connect({ rpcUrl: anvil.url, chainId: anvil.chainId, privateKey: anvil.accounts[5] })
    const abi = (await stakeArtifact()).abi
    await expect(
      write(outsider, {
        address: d.stakeAddress,
        abi,
        functionName: 'slash',
        args: [peerKey('honest'), `0x${evidenceHash(evidence(7, 'honest', false))}`, 0, peerKey('x'), 'x']
      })
    ).rejects.toThrow()
    expect((await a.standing('honest')).slashed).toBe(0)
  }, 30_000)

  it('refuses a threshold the arbiters cannot meet', async () => {
    await expect(deployTessera({ rpcUrl: anvil.url, privateKey: anvil.accounts[0], out: null, arbiters: [addressOf(1)], threshold: 2 })).rejects.toThrow(
      InputError
    )
  })
})

describe('EVM ledger: ZK faults proven on chain', () => {
  afterAll(async () => {
    await releaseZkWorkers()
  })

  it('a forged counter-proof is refused by the on-chain verifier; a valid one slashes', async () => {
    const tiny = await setupZkModel(seededZkModel('tiny'))
    const prover = await tiny.prover()
    const x = quantizeInput(tiny.model.quant, randomInputs(tiny.entry.shape.layers[0].inputs, 1, 21)[0])
    const honest = await prover.prove(x)

    // The accused signs a reply whose output is not the model's (its proof is the honest one, so it fails for that output).
    const key = await generateKeyPair('Ed25519')
    const accused = peerIdFromPrivateKey(key).toString()
    const claimed = Int32Array.from(honest.statement.output, (v, i) => (i === 0 ? v + 7 : v))
    const reply = await signZkReply(
      {
        peer: accused,
        model: 'tiny',
        input: new Uint8Array(x.buffer, x.byteOffset, x.byteLength),
        output: bytesOfInt32(claimed),
        proof: encodeProof(honest.proof),
        publicSignals: honest.publicSignals,
        ms: 1
      },
      async (b) => await key.sign(b)
    )
    const checker = receiptEvidenceChecker({ zkModels: (n) => (n === 'tiny' ? tiny.entry : undefined) })
    const { d, ledger: l } = await fresh(checker)
    const c = await connect({ rpcUrl: anvil.url, chainId: anvil.chainId, privateKey: anvil.accounts[0] })
    const z = await deployZkVerifier(c, d.stakeAddress, { entry: tiny.entry, zkey: tiny.keys.zkey })
    console.log(`tiny verifier deployed and registered: ${z.gas} gas (${z.signals} public signals)`)
    await l.stake(accused, 100)
    await l.stake('prover', 10)
    await bindRaw(d, 'prover', addressOf(3))

    // Forged: an output signal changed after proving, so the pairing fails: ProofRejected, nothing slashed.
    const forgedSignals = [...honest.publicSignals]
    forgedSignals[0] = toField(claimed[0] - 1).toString()
    const forged: Evidence = { kind: 'proof', accused, receipts: [reply], detail: { counterProof: { proof: honest.proof, publicSignals: forgedSignals } } }
    const refused = await l.slash(forged, 'prover')
    expect(refused).toEqual({ slashed: false, amount: 0, reason: 'counter-proof refused on chain: ProofRejected' })
    console.log(`forged counter-proof: refused in the gas estimate (no slash sent); its Rejected record cost ${l.lastGas} gas`)
    expect((await l.standing(accused)).stake).toBe(100)

    // Valid: the honest prover's proof for the same input proves another output than the accused claimed.
    const valid: Evidence = { ...forged, detail: { counterProof: { proof: honest.proof, publicSignals: honest.publicSignals } } }
    const r = await l.slash(valid, 'prover')
    expect(r.slashed).toBe(true)
    expect(r.amount).toBe(50)
    expect(r.reason).toMatch(/proof fails.*counter-proof verified on chain/)
    console.log(`valid counter-proof: slashByProof ${l.lastGas} gas`)
    expect(await l.standing(accused)).toMatchObject({ stake: 50, slashed: 1 })
    expect((await l.standing('prover')).stake).toBe(35)
    expect((await l.audit()).slice(-3).map((e) => [e.kind, e.data.kind])).toEqual([
      ['reject', 'proof'],
      ['slash', 'proof'],
      ['reward', undefined]
    ])

    // The same evidence again, straight to the contract (past the ledger's own check): EvidenceUsed.
    const claim = { model: 'tiny', claimedOutput: Array.from(claimed, (v) => toField(v)), claimedInput: Array.from(x, (v) => toField(v)) }
    const evidenceId = `0x${evidenceHash(valid)}` as const
    expect(await l.slashByProof({ accused, evidenceId, ...claim, proof: honest.proof, publicSignals: honest.publicSignals, reporter: 'prover' })).toMatchObject(
      { slashed: false, reason: 'evidence already used' }
    )
    // A claim equal to what the proof proves is no fault, and a proof about another input proves nothing about this one.
    const other = `0x${'11'.repeat(32)}` as const
    const honestOutput = Array.from(honest.statement.output, (v) => toField(v))
    expect(
      await l.slashByProof({
        accused,
        evidenceId: other,
        ...claim,
        claimedOutput: honestOutput,
        proof: honest.proof,
        publicSignals: honest.publicSignals,
        reporter: 'prover'
      })
    ).toMatchObject({ slashed: false, reason: 'counter-proof refused on chain: NoFault' })
    expect(
      await l.slashByProof({
        accused,
        evidenceId: other,
        ...claim,
        claimedInput: claim.claimedInput.map((v, i) => (i === 0 ? v + 1n : v)),
        proof: honest.proof,
        publicSignals: honest.publicSignals,
        reporter: 'prover'
      })
    ).toMatchObject({ reason: 'counter-proof refused on chain: WrongInput' })
    expect((await l.standing(accused)).stake).toBe(50)
    expect(await l.verifyAudit()).toEqual({ ok: true, badSeq: null })
  }, 300_000)
})
