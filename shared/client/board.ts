/**
 * Optimistic verification's claim board: a generation served by one peer per hop is accepted at
 * once and posted here as a claim (the receipts each hop signed, and the inputs each hop was
 * fed). Until its window closes, watchers (other peers holding the same layers, drawn by the
 * audit policy) re-execute each hop over the whole sequence in one prefill and compare every
 * step's fingerprint. On a mismatch, bisection over the per-layer commitments both parties
 * signed finds the first layer where they part ways (a party that does not answer a reveal in
 * time loses it), and the challenge is settled by a referee drawn from the receipts themselves
 * (so neither party picks it); the minority of the three is slashed
 * through the ledger with its receipt as evidence: the accused (the claim is overturned) or the
 * challenger (a frivolous challenge costs it its stake, which is its bond). A claim nobody
 * overturns within its window is final.
 *
 * The board lives with the relay in the embedded setup; it needs only a dialer, the peers and a
 * ledger link, so it runs anywhere the client does.
 */
import type { Capability } from '../protocol/capability.js'
import { seqOf, type HopInput, type HopOutput } from '../runner.js'
import { HopError, InputError, TesseraError } from '../errors.js'
import { bytesToHex, newSha256 } from '../hash.js'
import { logger } from '../log.js'
import { compareFingerprints, decodeFingerprint, fingerprint, type Fingerprint } from '../verify/fingerprint.js'
import { layerLeaf, verifyMerkleProof } from '../verify/merkle.js'
import { bytesOf, DISPUTE_PROTOCOL } from '../protocol/infer.js'
import { MAX_RECORD_BYTES } from '../protocol/limits.js'
import { lpStream } from '@libp2p/utils'
import { decode, encode } from 'cborg'
import { mismatchEvidence, MIN_WITNESSES, tailFingerprint } from '../verify/evidence.js'
import { chainRows, EMPTY_CHAIN, openReceipt } from '../verify/receipt.js'
import { tally, type Claim as Vote } from '../verify/vote.js'
import type { LedgerLink } from './ledger-link.js'
import { openRemoteHop, type Dialer, type HopTimeouts } from './remote-hop.js'
import { serversOf, DEFAULT_COSTS } from './route.js'
import type { ChallengeReport, Settlement } from './types.js'

const log = logger('tessera:board')

/** One hop of a claim: who computed which steps (each receipt's output ends at row `end`), and every row it was fed. */
export interface HopClaim {
  layers: [number, number]
  entries: Array<{ peer: string, receipt: Uint8Array, end: number }>
  inputs: HopInput
}

export interface Claim {
  id: string
  root: string
  /** ms during which the claim may be challenged. */
  window: number
  hops: HopClaim[]
}

export interface BoardOptions {
  /** How long a party has to answer each reveal of a dispute (ms; default 5000). */
  revealMs?: number
  dialer: Dialer
  peers: () => Promise<Capability[]>
  /** Finds a peer's record even when it is left out of `peers` (blacklisted meanwhile); default: search `peers`. */
  find?: (peer: string) => Promise<Capability | undefined>
  ledger: LedgerLink
  timeouts: HopTimeouts
  /** Audit policy: the chance that a hop of a claim is audited (1 = every hop). */
  auditRate?: number
  random?: () => number
  /** Settled claims kept for GET /api/claims/:id. */
  keep?: number
}

/** Where a client posts its optimistic claims: the relay's board in-process, or over HTTP (claim-sink.ts). */
export interface ClaimSink {
  submit (claim: Claim, rerun?: (challenges: ChallengeReport[]) => Promise<number[]>): Promise<Settlement>
}

export interface ClaimStatus { claim: string, status: 'pending' | 'final' | 'overturned', window: number, submittedAt: number, settlement?: Settlement }

export class ClaimBoard implements ClaimSink {
  private readonly claims = new Map<string, ClaimStatus>()
  private readonly waiters = new Map<string, Array<(s: Settlement) => void>>()
  private readonly random: () => number

  constructor (private readonly o: BoardOptions) {
    this.random = o.random ?? Math.random
  }

  /**
   * Posts a claim; resolves when it is overturned (as soon as proven, after `rerun` has produced
   * the corrected tokens) or final (when its window closes).
   */
  async submit (claim: Claim, rerun?: (challenges: ChallengeReport[]) => Promise<number[]>): Promise<Settlement> {
    if (this.claims.has(claim.id)) throw new InputError(`claim ${claim.id} was already posted`)
    const submittedAt = Date.now()
    this.claims.set(claim.id, { claim: claim.id, status: 'pending', window: claim.window, submittedAt })
    this.trim()
    const audits: Settlement['audits'] = []
    const challenges: ChallengeReport[] = []
    const settle = async (status: Settlement['status']): Promise<Settlement> => {
      const s: Settlement = { claim: claim.id, status, afterMs: Date.now() - submittedAt, audits, challenges }
      if (status === 'overturned' && rerun !== undefined) {
        try { s.tokens = await rerun(challenges) } catch (err) { log.warn(`claim ${claim.id}: could not regenerate the corrected tokens: ${(err as Error).message}`) }
      }
      const entry = this.claims.get(claim.id)
      if (entry !== undefined && entry.status === 'pending') {
        entry.status = status
        entry.settlement = s
        for (const w of this.waiters.get(claim.id) ?? []) w(s)
        this.waiters.delete(claim.id)
      }
      return entry?.settlement ?? s
    }
    // Timers may fire a millisecond early by the wall clock: a claim is never final before its window.
    const windowEnds = (async (): Promise<'window'> => {
      while (Date.now() - submittedAt < claim.window) await new Promise((resolve) => setTimeout(resolve, claim.window - (Date.now() - submittedAt) + 1))
      return 'window'
    })()
    const audit = (async (): Promise<'overturned' | 'clean'> => {
      for (const [i, hop] of claim.hops.entries()) {
        if (this.random() >= (this.o.auditRate ?? 1)) { audits.push({ layers: hop.layers, ok: true, note: 'not sampled by the audit policy' }); continue }
        const r = await this.auditHop(claim, i, hop, audits, challenges).catch((err: Error) => {
          audits.push({ layers: hop.layers, ok: false, note: `audit failed: ${err.message}` })
          return 'clean' as const
        })
        if (r === 'overturned') return r
      }
      return 'clean'
    })()
    // A proven fault ends the claim at once; otherwise it is final when the window closes
    // (an audit still running then came too late: that is the optimistic bargain).
    const first = await Promise.race([audit, windowEnds])
    if (first === 'overturned') return await settle('overturned')
    if (first === 'clean') await windowEnds
    return await settle('final')
  }

  get (id: string): ClaimStatus | undefined { return this.claims.get(id) }

  /** Resolves when the claim settles (at once if it has). */
  async settled (id: string): Promise<Settlement> {
    const c = this.claims.get(id)
    if (c === undefined) throw new InputError(`no claim ${id} on this board`)
    if (c.settlement !== undefined) return c.settlement
    return await new Promise((resolve) => { this.waiters.set(id, [...(this.waiters.get(id) ?? []), resolve]) })
  }

  /** Counts for the pages: claims by state, challenges by outcome, mean time to settle. */
  stats (): { pending: number, final: number, overturned: number, challenges: number, frivolous: number, meanFinalMs: number } {
    const all = [...this.claims.values()]
    const settled = all.filter((c) => c.settlement !== undefined)
    const finals = settled.filter((c) => c.status === 'final')
    const ch = settled.flatMap((c) => c.settlement!.challenges)
    return {
      pending: all.filter((c) => c.status === 'pending').length,
      final: finals.length,
      overturned: settled.length - finals.length,
      challenges: ch.length,
      frivolous: ch.filter((c) => c.outcome === 'frivolous').length,
      meanFinalMs: finals.length === 0 ? 0 : finals.reduce((s, c) => s + c.settlement!.afterMs, 0) / finals.length
    }
  }

  private trim (): void {
    const keep = this.o.keep ?? 1000
    for (const [id, c] of this.claims) {
      if (this.claims.size <= keep) break
      if (c.status !== 'pending') this.claims.delete(id)
    }
  }

  /** Re-executes one hop on a watcher; on the first step that does not match, settles a challenge. */
  private async auditHop (claim: Claim, i: number, hop: HopClaim, audits: Settlement['audits'], challenges: ChallengeReport[]): Promise<'overturned' | 'clean'> {
    const bodies = await Promise.all(hop.entries.map(async (e) => await openReceipt(e.receipt)))
    // The claim's inputs must be what the peers signed for: a client cannot frame a peer.
    let chain: Uint8Array = EMPTY_CHAIN
    let at = 0
    for (const [j, e] of hop.entries.entries()) {
      if (e.end < at) throw new TesseraError('BAD_CLAIM', `hop [${hop.layers.join(',')}): receipts out of order`)
      if (e.end > at) { chain = chainRows(chain, rowBytes(hop.inputs, at, e.end), e.end - at); at = e.end }
      if (bytesToHex(chain) !== bytesToHex(bodies[j].input)) throw new TesseraError('BAD_CLAIM', `hop [${hop.layers.join(',')}): the inputs do not match ${e.peer.slice(-8)}'s receipt`)
    }
    const involved = new Set(hop.entries.map((e) => e.peer))
    const watchers = await this.candidates(hop.layers, involved)
    if (watchers.length === 0) { audits.push({ layers: hop.layers, ok: true, note: 'no watcher holds these layers' }); return 'clean' }
    const watcher = watchers[Math.floor(this.random() * watchers.length)]
    const full = await this.prefill(watcher, claim, `audit-${claim.id}-${i}`, hop.layers, hop.inputs)
    for (const [j, e] of hop.entries.entries()) {
      const claimed = decodeFingerprint(bodies[j].output)
      const rows = sliceRows(full.out, e.end - claimed.positions, e.end)
      if (compareFingerprints(claimed, fingerprint(rows.data, rows.seq, rows.width)).verdict === 'match') continue
      audits.push({ layers: hop.layers, watcher: watcher.peer, ok: false, note: `step ending at row ${e.end} does not match` })
      const c = await this.challenge(claim, i, hop, e, watcher, involved)
      challenges.push(c)
      return c.outcome === 'overturned' ? 'overturned' : 'clean'
    }
    audits.push({ layers: hop.layers, watcher: watcher.peer, ok: true, note: `all ${hop.entries.length} steps match` })
    return 'clean'
  }

  /**
   * The watcher signs its re-execution of the rows up to the disputed step; a referee drawn from
   * a hash of both receipts does the same; the vote of the three decides who is slashed.
   */
  private async challenge (claim: Claim, i: number, hop: HopClaim, e: HopClaim['entries'][number], watcher: Capability, involved: Set<string>): Promise<ChallengeReport> {
    const prefix = prefixRows(hop.inputs, e.end)
    const w = await this.prefill(watcher, claim, `challenge-${claim.id}-${i}`, hop.layers, prefix)
    const pool = await this.candidates(hop.layers, new Set([...involved, watcher.peer]))
    const report: ChallengeReport = { layers: hop.layers, accused: e.peer, challenger: watcher.peer, outcome: 'undecided', reason: '' }
    report.located = await this.locate(hop.layers, e, w.receipt, watcher)
    if (pool.length === 0) { report.reason = 'no referee holds these layers'; return report }
    // Deterministic: anyone holding the two receipts computes the same referee.
    pool.sort((a, b) => a.peer < b.peer ? -1 : 1)
    const seed = newSha256().update(new TextEncoder().encode(claim.id)).update(e.receipt).update(w.receipt).digest()
    const referee = pool[new DataView(seed.buffer, seed.byteOffset).getUint32(0) % pool.length]
    report.referee = referee.peer
    const r = await this.prefill(referee, claim, `referee-${claim.id}-${i}`, hop.layers, prefix)
    const claimed = decodeFingerprint((await openReceipt(e.receipt)).output)
    const votes: Array<Vote & { receipt: Uint8Array }> = [
      { peer: e.peer, fp: claimed, weight: this.o.ledger.weight(e.peer), receipt: e.receipt },
      { peer: watcher.peer, fp: tailFingerprint(w.fp, claimed.positions), weight: this.o.ledger.weight(watcher.peer), receipt: w.receipt },
      { peer: referee.peer, fp: tailFingerprint(r.fp, claimed.positions), weight: this.o.ledger.weight(referee.peer), receipt: r.receipt }
    ]
    const t = tally(votes)
    if (t.winner.length < MIN_WITNESSES) { report.reason = 'accused, challenger and referee all disagree'; return report }
    const loser = t.losers[0]
    report.outcome = loser.peer === e.peer ? 'overturned' : 'frivolous'
    const outcome = await this.o.ledger.report(mismatchEvidence('optimistic', loser, t.winner, { claim: claim.id, layers: hop.layers, end: e.end, challenger: watcher.peer, referee: referee.peer }))
    report.reason = outcome.reason
    if (outcome.slashed) report.slashed = { peer: loser.peer, amount: outcome.amount }
    log.info(`claim ${claim.id} hop [${hop.layers.join(',')}): ${report.outcome} (${loser.peer.slice(-8)} ${outcome.slashed ? `slashed ${outcome.amount}` : `not slashed: ${outcome.reason}`})`)
    return report
  }

  /**
   * Bisection over the layers: both parties reveal their committed fingerprint of layer mid
   * (checked against the Merkle root each signed); the first layer where they differ is where
   * the accused went wrong. log2(layers) rounds of two reveals; a party that does not answer in
   * time, or answers with something it did not commit to, loses the bisection.
   */
  private async locate (layers: [number, number], e: HopClaim['entries'][number], watcherReceipt: Uint8Array, watcher: Capability): Promise<NonNullable<ChallengeReport['located']>> {
    const [a, b] = layers
    const acc = await openReceipt(e.receipt)
    const wat = await openReceipt(watcherReceipt)
    if (acc.trace === undefined || wat.trace === undefined) return { reveals: 0, note: 'no per-layer commitment in the receipts (shards built without layer outputs)' }
    const accusedCap = this.o.find !== undefined ? await this.o.find(e.peer) : (await this.o.peers()).find((p) => p.peer === e.peer)
    const positions = decodeFingerprint(acc.output).positions
    let reveals = 0
    const leaf = async (who: 'accused' | 'watcher', layer: number): Promise<Fingerprint> => {
      reveals++
      const [cap, body] = who === 'accused' ? [accusedCap, acc] : [watcher, wat]
      if (cap === undefined) throw new DisputeTimeout(who, 'it left the network')
      const fp = await this.reveal(cap, body.session, body.step, layer, body.trace!, a).catch((err: Error) => { throw new DisputeTimeout(who, err.message) })
      return tailFingerprint(fp, positions)
    }
    const differs = async (layer: number): Promise<boolean> => compareFingerprints(await leaf('accused', layer), await leaf('watcher', layer)).verdict === 'mismatch'
    try {
      if (!await differs(b - 1)) return { reveals, note: 'every committed layer agrees: the output sent does not match the accused\'s own last layer' }
      let lo = a
      let hi = b - 1
      while (lo < hi) {
        const mid = (lo + hi) >> 1
        if (await differs(mid)) hi = mid
        else lo = mid + 1
      }
      return { layer: lo, reveals, note: `layer ${lo} is the first whose committed fingerprints differ` }
    } catch (err) {
      if (!(err instanceof DisputeTimeout)) throw err
      const peer = err.who === 'accused' ? e.peer : watcher.peer
      this.o.ledger.observe(peer, false)
      return { reveals, note: `the ${err.who} did not answer a reveal: ${err.message}`, timedOut: peer }
    }
  }

  /** Asks `peer` for its committed fingerprint of `layer` and checks the proof against `root`. */
  private async reveal (peer: Capability, session: string, step: number, layer: number, root: Uint8Array, first: number): Promise<Fingerprint> {
    const signal = AbortSignal.timeout(this.o.revealMs ?? 5000)
    const stream = await this.o.dialer.dial(peer, DISPUTE_PROTOCOL, signal)
    try {
      const lp = lpStream(stream, { maxDataLength: MAX_RECORD_BYTES })
      await lp.write(encode({ t: 'reveal', session, step, layer }), { signal })
      const m = decode((await lp.read({ signal })).subarray()) as { t?: string, fp?: unknown, proof?: unknown, message?: string }
      if (m.t !== 'leaf') throw new Error(m.message ?? 'no leaf in the reply')
      if (!(m.fp instanceof Uint8Array) || !Array.isArray(m.proof) || !m.proof.every((x) => x instanceof Uint8Array)) throw new Error('malformed reveal')
      if (!verifyMerkleProof(layerLeaf(layer, m.fp), layer - first, m.proof, root)) throw new Error(`its reveal of layer ${layer} is not what it committed to`)
      return decodeFingerprint(m.fp)
    } finally {
      await stream.close().catch(() => stream.abort(new Error('done')))
    }
  }

  private async candidates (layers: [number, number], exclude: Set<string>): Promise<Capability[]> {
    const peers = (await this.o.peers()).filter((p) => !exclude.has(p.peer) && !this.o.ledger.excluded(p.peer))
    return serversOf(peers, layers, DEFAULT_COSTS)
  }

  /** One prefill of `input` on `peer`: its output, receipt (checked on arrival) and the fingerprint of every row. */
  private async prefill (peer: Capability, claim: Claim, session: string, layers: [number, number], input: HopInput): Promise<{ out: HopOutput, receipt: Uint8Array, fp: ReturnType<typeof fingerprint> }> {
    const hop = await openRemoteHop(this.o.dialer, peer, layers, claim.root, session, this.o.timeouts)
    try {
      const out = await hop.forward(input, 0)
      return { out, receipt: out.receipt, fp: out.fp }
    } catch (err) {
      if (err instanceof HopError) this.o.ledger.observe(err.peer, false)
      throw err
    } finally {
      hop.close()
    }
  }
}

class DisputeTimeout extends Error {
  constructor (readonly who: 'accused' | 'watcher', message: string) { super(message) }
}


/** The first `n` rows of a hop's input. */
function prefixRows (x: HopInput, n: number): HopInput {
  if (n > seqOf(x)) throw new TesseraError('BAD_CLAIM', `a receipt ends at row ${n} but the claim holds ${seqOf(x)} rows`)
  if ('tokens' in x) return { tokens: Array.from(x.tokens).slice(0, n) }
  return { hidden: x.hidden.subarray(0, n * (x.hidden.length / x.seq)), seq: n }
}

/** The bytes of rows [from, to), as the receipts' input chains hash them. */
function rowBytes (x: HopInput, from: number, to: number): Uint8Array {
  if (to > seqOf(x)) throw new TesseraError('BAD_CLAIM', `a receipt ends at row ${to} but the claim holds ${seqOf(x)} rows`)
  if ('tokens' in x) return new Uint8Array(Int32Array.from(Array.from(x.tokens).slice(from, to)).buffer)
  const w = x.hidden.length / x.seq
  return bytesOf(x.hidden.subarray(from * w, to * w))
}

function sliceRows (out: HopOutput, from: number, to: number): HopOutput {
  return { ...out, data: out.data.subarray(from * out.width, to * out.width), seq: to - from }
}
