/**
 * The client end of one /tessera/infer/1.0.0 session: a hop of a route, served by a peer.
 * Every failure (error reply, reset stream, time-out, bad reply) surfaces as a HopError
 * naming the peer, which is what the session's failover acts on.
 */
import { lpStream } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import { decodeNodeMsg, encodeMsg, f32, bytesOf, INFER_PROTOCOL, type NodeMsg } from '../protocol/infer.js'
import { MAX_MESSAGE_BYTES, lpLimits } from '../protocol/limits.js'
import type { Capability } from '../protocol/capability.js'
import type { HopInput, HopOutput } from '../runner.js'
import { asErrorCode, HopError, ProtocolError, TesseraError, type ErrorCode } from '../errors.js'
import { chainStates, EMPTY_CHAIN, verifyReceipt } from '../verify/receipt.js'
import type { Fingerprint } from '../verify/fingerprint.js'
import { hopMark } from '../hop-marks.js'

/** Opens protocol streams to peers: a libp2p node in Node or in a tab. */
export interface Dialer {
  dial(peer: Capability, protocol: string, signal: AbortSignal): Promise<Stream>
}

export interface RemoteHop {
  readonly peer: Capability
  readonly layers: [number, number]
  readonly device: string
  /** Runs one step; the result's receipt has been checked (HopError 'BAD_RECEIPT' otherwise); `fp` is the output's fingerprint. */
  forward(input: HopInput, start: number): Promise<HopOutput & { ms: number; nodeMs: number; receipt: Uint8Array; fp: Fingerprint }>
  close(): void
}

export interface HopTimeouts {
  /** Dial + open reply. */
  openMs: number
  /** The most one step's reply may take (a replayed prefill can be long). */
  stepMs: number
  /**
   * A step's own deadline: `slack` × what the peer's measured speed (its directory record)
   * predicts, at least `minStepMs`, at most `stepMs`; a hop's first step, which carries the
   * prefill or a replay and the peer's warm-up, at least `minFirstStepMs`. A peer that vanished
   * without a reset (a closed tab's WebRTC channel) or stalls is then noticed in seconds.
   */
  minStepMs: number
  minFirstStepMs: number
  slack: number
  /**
   * A reply that came in time but later than both this and `slack` × the prediction is late; a
   * second late step in a row fails the hop (TIMEOUT), so a peer stalling just under the
   * deadline is failed over all the same.
   */
  lateMs: number
}

/** How long a step of `seq` rows through `layers` may take on `peer`, and after how long it is late. */
export function stepDeadline(t: HopTimeouts, peer: Capability, layers: [number, number], seq: number, first: boolean): { deadline: number; late: number } {
  const predicted = t.slack * peer.msPerLayer * (layers[1] - layers[0]) * seq
  // Whole ms: AbortSignal.timeout refuses a fraction (a slow peer's prediction is one).
  const deadline = Math.ceil(Math.min(t.stepMs, Math.max(first ? t.minFirstStepMs : t.minStepMs, predicted)))
  return { deadline, late: Math.min(deadline, Math.max(t.lateMs, predicted)) }
}

/**
 * `keep`: ask the node to keep every block's output of this session for a dispute (a challenger's replay).
 * `commit`: ask the last hop to sign a commitment to each step's last row of logits (a sampling proof),
 * checked here against the logits it sent.
 */
export async function openRemoteHop(
  dialer: Dialer,
  peer: Capability,
  layers: [number, number],
  root: string,
  session: string,
  t: HopTimeouts,
  o: { keep?: boolean; commit?: boolean } = {}
): Promise<RemoteHop> {
  const fail = (code: ErrorCode, message: string): HopError => new HopError(peer.peer, code, message)
  let stream: Stream
  try {
    stream = await dialer.dial(peer, INFER_PROTOCOL, AbortSignal.timeout(t.openMs))
  } catch {
    // Browser WebRTC dials fail now and then on their own (about 1 in 14 on loopback): once more.
    try {
      stream = await dialer.dial(peer, INFER_PROTOCOL, AbortSignal.timeout(t.openMs))
    } catch (err) {
      throw fail('UNREACHABLE', `dial failed twice: ${(err as Error).message}`)
    }
  }
  const lp = lpStream(stream, lpLimits(MAX_MESSAGE_BYTES))
  const reply = async (ms: number): Promise<NodeMsg> => {
    let bytes: Uint8Array
    try {
      bytes = (await lp.read({ signal: AbortSignal.timeout(ms) })).subarray()
    } catch (err) {
      stream.abort(err as Error)
      throw fail('TIMEOUT', `no reply: ${(err as Error).message}`)
    }
    let m: NodeMsg
    try {
      m = decodeNodeMsg(bytes)
    } catch (err) {
      stream.abort(err as Error)
      throw fail('BAD_REPLY', (err as Error).message)
    }
    if (m.t === 'error') throw fail(asErrorCode(m.code), m.message)
    return m
  }
  const write = async (bytes: Uint8Array): Promise<void> => {
    try {
      await lp.write(bytes)
    } catch (err) {
      throw fail('RESET', `send failed: ${(err as Error).message}`)
    }
  }

  await write(encodeMsg({ t: 'open', root, layers, session, ...(o.keep === true ? { keep: true } : {}), ...(o.commit === true ? { commit: true } : {}) }))
  const opened = await reply(t.openMs)
  if (opened.t !== 'opened') throw fail('BAD_REPLY', `expected "opened", got "${opened.t}"`)
  let step = 0
  let lateBefore = false
  const inputs: Uint8Array[] = [EMPTY_CHAIN] // the chain after each row sent so far, as the receipts must state it
  return {
    peer,
    layers,
    device: opened.device,
    async forward(input, start) {
      const id = step++
      const sent = performance.now()
      hopMark?.('client:send', session, layers[0], id)
      const body =
        'tokens' in input ? { seq: input.tokens.length, tokens: bytesOf(Int32Array.from(input.tokens)) } : { seq: input.seq, hidden: bytesOf(input.hidden) }
      await write(encodeMsg({ t: 'forward', step: id, start, ...body }))
      // Hashed while the peer computes: only the receipt check needs it.
      // A start before the end rewinds the session (rejected drafts): the chain picks up from there. Past the end the node refuses the step.
      const states = chainStates(inputs[Math.min(start, inputs.length - 1)], body.tokens ?? body.hidden!, body.seq)
      const chain = states[states.length - 1]
      const due = stepDeadline(t, peer, layers, body.seq, id === 0)
      const m = await reply(due.deadline)
      const took = performance.now() - sent
      hopMark?.('client:reply', session, layers[0], id)
      if (m.t !== 'result' || m.step !== id) throw fail('BAD_REPLY', `expected the result of step ${id}`)
      const data = f32(m.data)
      let fp: Fingerprint
      try {
        const body = await verifyReceipt(m.receipt, {
          peer: peer.peer,
          session,
          step: id,
          root,
          layers,
          start,
          input: chain,
          output: { data, seq: m.seq, width: m.width }
        })
        fp = body.fingerprint
        if (o.commit === true && m.kind === 'logits') await checkLogitsCommitment(body.logits, data.subarray((m.seq - 1) * m.width, m.seq * m.width))
      } catch (err) {
        stream.abort(err as Error)
        throw fail('BAD_RECEIPT', (err as Error).message)
      }
      inputs.length = start + 1
      inputs.push(...states)
      const late = id > 0 && took > due.late
      if (late && lateBefore) {
        stream.abort(new TesseraError('TIMEOUT', 'late'))
        throw fail(
          'TIMEOUT',
          `two steps in a row late: the last took ${Math.round(took)} ms where its measured speed predicts under ${Math.round(due.late)} ms`
        )
      }
      lateBefore = late
      return { data, seq: m.seq, width: m.width, kind: m.kind, ms: took, nodeMs: m.ms, receipt: m.receipt!, fp }
    },
    close() {
      void lp
        .write(encodeMsg({ t: 'close' }))
        .then(async () => {
          await stream.close()
        })
        .catch(() => {
          stream.abort(new TesseraError('RESET', 'closed'))
        })
    }
  }
}

/** The commitment must be to the very logits that came with it, or a sampling proof would be about other ones. */
async function checkLogitsCommitment(signed: string | undefined, row: Float32Array): Promise<void> {
  const { logitsCommitment, quantizeLogits } = await import('../zk/argmax.js')
  if (signed === undefined) throw new ProtocolError('BAD_RECEIPT', 'receipt rejected: it commits to no logits, though the session asked for it')
  if (signed !== logitsCommitment(quantizeLogits(row)))
    throw new ProtocolError('BAD_RECEIPT', 'receipt rejected: its logits commitment is not of the logits it came with')
}
