/**
 * /tessera/infer/1.0.0 — one libp2p stream per inference session between a client and a node.
 * Length-prefixed CBOR messages; tensors travel as raw little-endian bytes, never JSON numbers.
 *
 *   client → node   open     { root, layers: [a, b], session, keep?, commit?, inbox? }   (keep: a challenger's replay;
 *                                                                   its per-layer states stay for a dispute;
 *                                                                   commit: the last hop signs a commitment to
 *                                                                   each step's last-row logits, zk/argmax.ts;
 *                                                                   inbox: take handoffs addressed to `session`)
 *                   forward  { step, start, seq, tokens? (int32 bytes) | hidden? (fp32 bytes) | from?, to? }
 *                   supply   { step, hidden? }   (the client's own copy of a handoff that did not come; none: drop the step)
 *                   close    {}
 *   node → client   opened   { layers, device }
 *                   result   { step, seq, width, kind, data (fp32 bytes), ms, receipt (signed, see verify/receipt.ts), unsent? }
 *                   error    { code, message }       (the node closes the stream after it)
 *
 * `start` is the position of the step's first token; the node refuses a step that skips ahead
 * of its cache, so a replayed history cannot be misplaced. A step that starts before the cache's
 * end drops the rows from `start` on first (a speculative client rewinding rejected drafts); the
 * receipts' input chain rewinds with them.
 *
 * Forwarding (node to node): a step with `from` (a peer id) carries no rows; they come from that
 * peer over /tessera/handoff/1.0.0, and the node waits for them (or for the client's `supply`).
 * A step with `to` also hands its output to each target's session there, before it replies;
 * the reply's `unsent` lists the targets it could not reach, so the client supplies them itself.
 * The client still gets every hop's output and signed receipt, so checking, blame and replay work
 * as without forwarding; one token costs (hops + 1) / 2 round trips instead of hops.
 *
 *   upstream → node  handoff  { inbox (the session), start, seq, hidden }    (one-way; a refusal is an error and the end)
 */
import { decode, encode } from 'cborg'
import { ProtocolError, type WireCode } from '../errors.js'

export const INFER_PROTOCOL = '/tessera/infer/1.0.0'
/**
 * One request per stream (node/dispute.ts), each answered or refused with { t: 'error', code, message }:
 *   reveal   { session, step, layer }                        → leaf  { fp, proof }   a committed per-layer fingerprint
 *   state    { session, step, layer }                        → state { data, seq, width }   block output kept for a kept session
 *   execute  { root, hop, layer, seq, tokens? | hidden? }    → part  { statement }   a referee re-executes one block
 */
export const DISPUTE_PROTOCOL = '/tessera/dispute/1.0.0'
export const HANDOFF_PROTOCOL = '/tessera/handoff/1.0.0'
/** Targets one step may hand its output to (a route's next slot has at most this many lanes). */
export const MAX_HANDOFF_TARGETS = 8

export interface OpenMsg {
  t: 'open'
  root: string
  layers: [number, number]
  session: string
  keep?: boolean
  commit?: boolean
  inbox?: boolean
}
/** Where a hop hands its output: the next hop's peer, its addresses, its session (the inbox). */
export interface HandoffTarget {
  peer: string
  addrs: string[]
  inbox: string
}
export interface ForwardMsg {
  t: 'forward'
  step: number
  start: number
  seq: number
  tokens?: Uint8Array
  hidden?: Uint8Array
  /** The rows come from this peer's handoff. */
  from?: string
  to?: HandoffTarget[]
}
export interface SupplyMsg {
  t: 'supply'
  step: number
  hidden?: Uint8Array
}
export interface HandoffMsg {
  t: 'handoff'
  inbox: string
  start: number
  seq: number
  hidden: Uint8Array
}
export interface CloseMsg {
  t: 'close'
}
export interface OpenedMsg {
  t: 'opened'
  layers: [number, number]
  device: string
}
export interface ResultMsg {
  t: 'result'
  step: number
  seq: number
  width: number
  kind: 'hidden' | 'logits'
  data: Uint8Array
  ms: number
  receipt?: Uint8Array
  /** The inboxes of `to` targets the output could not be handed to. */
  unsent?: string[]
}
export interface ErrorMsg {
  t: 'error'
  code: ErrorCode
  message: string
}

export type ClientMsg = OpenMsg | ForwardMsg | SupplyMsg | CloseMsg
export type NodeMsg = OpenedMsg | ResultMsg | ErrorMsg

export type ErrorCode = WireCode

export function encodeMsg(m: ClientMsg | NodeMsg | HandoffMsg): Uint8Array {
  return encode(m)
}

/** Decodes and validates a client message; throws ProtocolError('MALFORMED', …) on anything off. */
export function decodeClientMsg(bytes: Uint8Array): ClientMsg {
  const m = decodeObject(bytes)
  switch (m.t) {
    case 'open':
      need(typeof m.root === 'string' && /^[0-9a-f]{64}$/.test(m.root), 'open.root must be a 64-hex model root')
      need(isRange(m.layers), 'open.layers must be [start, end) with 0 ≤ start < end')
      need(typeof m.session === 'string' && m.session.length > 0 && m.session.length <= 128, 'open.session must be a non-empty string')
      need(m.keep === undefined || typeof m.keep === 'boolean', 'open.keep must be a boolean')
      need(m.commit === undefined || typeof m.commit === 'boolean', 'open.commit must be a boolean')
      need(m.inbox === undefined || typeof m.inbox === 'boolean', 'open.inbox must be a boolean')
      return m as unknown as OpenMsg
    case 'forward': {
      need(isUint(m.step) && isUint(m.start), 'forward.step and forward.start must be non-negative integers')
      need(isUint(m.seq) && (m.seq as number) > 0, 'forward.seq must be a positive integer')
      const hasTokens = m.tokens instanceof Uint8Array
      const hasHidden = m.hidden instanceof Uint8Array
      const hasFrom = m.from !== undefined
      need(Number(hasTokens) + Number(hasHidden) + Number(hasFrom) === 1, 'forward needs exactly one of tokens, hidden (byte strings) and from (a peer id)')
      if (hasFrom) need(isId(m.from), 'forward.from must be a peer id')
      // Whole rows of 4-byte values, or the int32/fp32 views below would throw a RangeError (no code, no reply).
      const seq = m.seq as number
      if (hasTokens) need((m.tokens as Uint8Array).byteLength === 4 * seq, `forward.tokens must hold seq (${seq}) int32 ids`)
      if (hasHidden) need((m.hidden as Uint8Array).byteLength % (4 * seq) === 0, `forward.hidden must hold seq (${seq}) rows of fp32 values`)
      if (m.to !== undefined) {
        need(Array.isArray(m.to) && m.to.length > 0 && m.to.length <= MAX_HANDOFF_TARGETS, `forward.to must list 1 to ${MAX_HANDOFF_TARGETS} targets`)
        for (const x of m.to as unknown[]) need(isTarget(x), 'forward.to: each target needs peer (a peer id), addrs (at most 16 strings) and inbox (a session)')
      }
      return m as unknown as ForwardMsg
    }
    case 'supply':
      need(isUint(m.step), 'supply.step must be a non-negative integer')
      need(m.hidden === undefined || (m.hidden instanceof Uint8Array && m.hidden.byteLength % 4 === 0), 'supply.hidden must be fp32 bytes')
      return m as unknown as SupplyMsg
    case 'close':
      return { t: 'close' }
    default:
      throw new ProtocolError('MALFORMED', `unknown message type ${JSON.stringify(m.t)}`)
  }
}

/** Decodes and validates a node message (the client checks what it receives too). */
export function decodeNodeMsg(bytes: Uint8Array): NodeMsg {
  const m = decodeObject(bytes)
  switch (m.t) {
    case 'opened':
      need(isRange(m.layers) && typeof m.device === 'string', 'opened needs layers and device')
      return m as unknown as OpenedMsg
    case 'result':
      need(isUint(m.step) && isUint(m.seq) && isUint(m.width), 'result.step, seq and width must be non-negative integers')
      need(m.kind === 'hidden' || m.kind === 'logits', 'result.kind must be hidden or logits')
      need(m.data instanceof Uint8Array && m.data.byteLength === (m.seq as number) * (m.width as number) * 4, 'result.data must hold seq × width fp32 values')
      need(m.unsent === undefined || (Array.isArray(m.unsent) && m.unsent.every(isId)), 'result.unsent must list inboxes')
      return m as unknown as ResultMsg
    case 'error':
      need(typeof m.code === 'string' && typeof m.message === 'string', 'error needs code and message')
      return m as unknown as ErrorMsg
    default:
      throw new ProtocolError('MALFORMED', `unknown message type ${JSON.stringify(m.t)}`)
  }
}

/** Decodes and validates a handoff from an upstream node. */
export function decodeHandoffMsg(bytes: Uint8Array): HandoffMsg {
  const m = decodeObject(bytes)
  need(m.t === 'handoff', `expected a handoff, got ${JSON.stringify(m.t)}`)
  need(isId(m.inbox), 'handoff.inbox must be a session id')
  need(isUint(m.start) && isUint(m.seq) && (m.seq as number) > 0, 'handoff.start and seq must be integers, seq positive')
  need(
    m.hidden instanceof Uint8Array && m.hidden.byteLength > 0 && m.hidden.byteLength % (4 * (m.seq as number)) === 0,
    'handoff.hidden must hold seq rows of fp32 values'
  )
  return m as unknown as HandoffMsg
}

function decodeObject(bytes: Uint8Array): Record<string, unknown> {
  let m: unknown
  try {
    m = decode(bytes)
  } catch (err) {
    throw new ProtocolError('MALFORMED', `not valid CBOR: ${(err as Error).message}`)
  }
  if (typeof m !== 'object' || m === null || Array.isArray(m)) throw new ProtocolError('MALFORMED', 'a message must be a CBOR map')
  return m as Record<string, unknown>
}

function need(ok: boolean, message: string): void {
  if (!ok) throw new ProtocolError('MALFORMED', message)
}

const isUint = (v: unknown): boolean => Number.isSafeInteger(v) && (v as number) >= 0
const isId = (v: unknown): boolean => typeof v === 'string' && v.length > 0 && v.length <= 128
const isTarget = (v: unknown): boolean => {
  if (typeof v !== 'object' || v === null) return false
  const t = v as Record<string, unknown>
  return isId(t.peer) && isId(t.inbox) && Array.isArray(t.addrs) && t.addrs.length <= 16 && t.addrs.every((a) => typeof a === 'string' && a.length <= 512)
}
const isRange = (v: unknown): boolean => Array.isArray(v) && v.length === 2 && isUint(v[0]) && isUint(v[1]) && v[0] < v[1]

/** Views over tensor bytes (copied when unaligned, as CBOR byte strings often are). */
export const f32 = (b: Uint8Array): Float32Array =>
  b.byteOffset % 4 === 0 ? new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4) : new Float32Array(b.slice().buffer)
export const i32 = (b: Uint8Array): Int32Array =>
  b.byteOffset % 4 === 0 ? new Int32Array(b.buffer, b.byteOffset, b.byteLength / 4) : new Int32Array(b.slice().buffer)
export const bytesOf = (a: Float32Array | Int32Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength)

/** The index of the first NaN or ±Inf, or -1. A plain loop: findIndex's callback cost 35 µs on a hop's 4096 values. */
export function firstNonFinite(v: Float32Array): number {
  for (let i = 0; i < v.length; i++) if (v[i] - v[i] !== 0) return i // NaN - NaN and Inf - Inf are NaN
  return -1
}
