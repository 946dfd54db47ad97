/**
 * What a client offers to its callers (SDK, CLI, the relay's OpenAI API): one generation at a
 * time as a stream of tokens, then a result that says which peers served which layers.
 */
import type { SamplingOptions } from '../sampler.js'
import type { DeviceKind } from '../runner.js'
import type { SamplingProof } from '../zk/argmax.js'
import type { Speculation } from './draft.js'

export interface GenerationRequest extends SamplingOptions {
  /** Token ids, BOS included if the model wants one. */
  prompt: number[]
  maxTokens: number
  /** Stop after emitting one of these ids (off by default). */
  stopIds?: number[]
  /**
   * Asked after each token is taken: true ends the generation there (finish reason "stop"). For
   * rules the caller keeps, such as text stop strings; in-process only, never sent to a peer.
   */
  until?: () => boolean
  /** Report each token's log probability and this many of the likeliest alternatives (0–20). */
  logprobs?: number
  /** Model name or root hash; default: the one model the network fully covers. */
  model?: string
  /** How results are checked (default: the client's default, `none` unless configured). */
  verification?: VerificationOptions
  /**
   * Prove each greedy token is the argmax of the logits the last hop signed (zk/argmax.ts): the
   * sampling step only, not the layers. Needs temperature 0 and a client with a sampling prover.
   */
  proveSampling?: boolean
  /** Peer ids this generation must not use (a corrected re-run avoids whoever was caught). */
  avoid?: string[]
  /**
   * Speculative decoding (client/draft.ts): the client's draft model guesses up to `gamma` tokens
   * a pass and the route checks them in one step. Greedy, the tokens are the same as without;
   * sampling, they are distributed the same (speculative sampling). γ adapts unless `adapt: false`.
   */
  speculate?: Speculation
  /**
   * Node to node (protocol/infer.ts): each hop hands its output straight to the next and the
   * client only checks what comes back, so a token costs (hops + 1) / 2 round trips instead of
   * hops. Default: the client's `forward` (off).
   */
  forward?: boolean
}

/**
 * `none`: one peer per hop, trusted as it is (receipts are still checked).
 * `redundant`: each hop run by k distinct peers in parallel; on a mismatch a referee runs it too
 *   and the reputation-weighted majority wins; the minority is reported with the receipts as evidence.
 * `spot`: one peer per hop; each step of each hop is re-run on another peer with probability p.
 * `optimistic`: one peer per hop and the tokens at once, marked pending; watchers re-execute the
 *   hops within `window` ms and a proven fault overturns the result (see client/board.ts).
 */
export type VerificationMode = 'none' | 'redundant' | 'spot' | 'optimistic'
export interface VerificationOptions {
  mode: VerificationMode
  k?: number
  /** spot: the chance each step of each hop is re-run; redundant: see `audit`. */
  p?: number
  /** redundant: the chance a peer outside the k lanes also runs a step (so k colluding lanes cannot count on agreeing unseen). */
  audit?: number
  window?: number
  /**
   * Accept a generation the mode cannot check (spot with no second peer for a hop): it runs, and
   * every token says `unverified`. Off by default: the request is refused instead.
   */
  fallback?: boolean
}

/**
 * unchecked: nobody else ran it (mode none, or spot did not sample it); agreed: every re-run
 * matched; overruled: someone disagreed, a referee was asked, and the majority's output was used;
 * pending: optimistic, open to challenge until the window closes; unverified: the mode could not
 * check it and the request allowed that (`fallback`).
 */
export type Verdict = 'unchecked' | 'agreed' | 'overruled' | 'pending' | 'unverified'

/**
 * One hop of one step: who computed the output that was used, the round trip and the node's own
 * compute time, who else ran it to check, and the verdict.
 */
export interface HopTrace {
  peer: string
  device: DeviceKind | string
  layers: [number, number]
  ms: number
  nodeMs?: number
  checkedBy?: string[]
  verdict?: Verdict
  /** Peers whose output lost the vote on this hop. */
  accused?: string[]
  /** Forwarded: the peer that handed this hop its rows (node to node), where the handoff was used. */
  handedBy?: string
}

/** A peer caught computing a hop wrongly, and what the ledger made of the evidence. */
export interface FaultReport {
  step: number
  layers: [number, number]
  accused: string
  /** Peers whose matching receipts are the evidence (empty when the fault cannot be proven to others, e.g. a bad receipt). */
  witnesses: string[]
  reason: string
  slashed: boolean
  amount: number
}

/** Per hop (layer range) over the whole generation: who ran it, who checked it, the verdicts. */
export interface HopSummary {
  layers: [number, number]
  ranBy: string[]
  checkedBy: string[]
  verdicts: Record<Verdict, number>
}

export interface VerificationReport {
  mode: VerificationMode
  k?: number
  p?: number
  /** Hop-steps that were re-run by someone else and compared. */
  checks: number
  /** Of those, how many disagreed (plus receipts that did not hold up). */
  mismatches: number
  /** Among results that agreed, the lowest top-k overlap and the largest relative error: the honest margin to the thresholds. */
  closest: { minOverlap: number; maxRelErr: number }
  hops: HopSummary[]
  faults: FaultReport[]
  /** optimistic: the claim watchers audit, its window, and its state when the tokens were returned. */
  claim?: string
  window?: number
  /** pending: optimistic, open to challenge; unverified: the mode could not run and `fallback` allowed it. */
  status?: 'pending' | 'unverified'
}

/** A challenge of an optimistic claim and how it ended. */
export interface ChallengeReport {
  layers: [number, number]
  accused: string
  challenger: string
  referee?: string
  /** overturned: the accused was wrong; frivolous: the challenger was; undecided: no two agreed. */
  outcome: 'overturned' | 'frivolous' | 'undecided'
  /** Who lost stake, and how much. */
  slashed?: { peer: string; amount: number }
  reason: string
  /**
   * Where the two parted ways, found by bisection over the per-layer commitments: the first
   * block whose committed fingerprints differ (`layer`; the hop's end when every block agrees and
   * only the head is left), or why none was found (`note`: a party did not answer in time, …).
   */
  located?: { layer?: number; reveals: number; note: string; timedOut?: string }
  /**
   * What the referee re-executed: one block (or the head, `what`) of the hop's `of` blocks, or,
   * where no block could be singled out, the whole hop.
   */
  reexecuted?: { layers: number; of: number; what: string }
}

/** How an optimistic claim ended. `tokens` are the corrected ones when it was overturned. */
export interface Settlement {
  claim: string
  status: 'final' | 'overturned' | 'unverified'
  /** ms from submission to settlement. */
  afterMs: number
  /** Per hop: who audited it; ok false when a step did not match or the audit could not run (see note). */
  audits: Array<{ layers: [number, number]; watcher?: string; ok: boolean; note: string }>
  challenges: ChallengeReport[]
  tokens?: number[]
}

/** A hop that failed and what replaced it. */
export interface RouteSwitch {
  step: number
  failed: string
  layers: [number, number]
  reason: string
  replacement: HopTrace[]
}

export interface RouteTrace {
  /** The route of the last step (after any switch). */
  hops: HopTrace[]
  switches: RouteSwitch[]
}

/** `status: 'pending'` under optimistic verification: the token may still be overturned. */
export interface TokenEvent {
  id: number
  index: number
  hops: HopTrace[]
  /** With `logprobs`: ln p(id) under the model's distribution (before temperature), and the top alternatives. */
  logprob?: number
  top?: Array<{ id: number; logprob: number }>
  /** unverified: the request's mode could not check this token and `fallback` allowed it anyway. */
  status?: 'pending' | 'unverified'
}

export interface GenerationResult {
  model: string
  root: string
  prompt: number[]
  tokens: number[]
  finishReason: 'length' | 'stop'
  route: RouteTrace
  verification: VerificationReport
  timings: { firstTokenMs: number; totalMs: number }
  /** Speculating: passes through the route, tokens drafted and drafts the target kept (kept ÷ drafted is the acceptance rate). */
  speculation?: { gamma: number; passes: number; drafted: number; kept: number }
  /** Forwarding: steps sent node to node, and of those how many went on through the client part of the way (a failure, a disagreeing handoff). */
  forwarded?: { steps: number; dropped: number }
  /** optimistic only: resolves when the claim is final or overturned (with corrected tokens). */
  settlement?: Promise<Settlement>
  /** proveSampling only: one proof per token, in order (verify with verify/sampling.ts). */
  sampling?: SamplingProof[]
}

/** Runs generations over the network. `generate` yields tokens and returns the result. */
export interface Generator {
  generate(req: GenerationRequest, signal?: AbortSignal): AsyncGenerator<TokenEvent, GenerationResult>
}

/** What `GET /api/network` shows: every live peer, what it serves, and coverage per layer. */
export interface NetworkView {
  models: Array<{ name: string; root: string; layers: number; coverage: number[] }>
  peers: Array<{
    peer: string
    device: string
    model: string
    root: string
    layers: [number, number]
    msPerLayer: number
    memory: number
    kvRoom: number
    sessions: number
    addrs: string[]
    expires: number
    /** The relay (peer id) this relay has the record from; absent where the peer announced here itself. */
    via?: string
  }>
  /** A federated relay's view: the other relays it shares records with (relay/federation.ts). */
  relays?: string[]
}
