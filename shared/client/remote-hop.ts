/**
 * The client end of one /tessera/infer/1.0.0 session: a hop of a route, served by a peer.
 * Every failure (error reply, reset stream, time-out, bad reply) surfaces as a HopError
 * naming the peer, which is what the session's failover acts on.
 */
import { lpStream } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import { decodeNodeMsg, encodeMsg, f32, bytesOf, INFER_PROTOCOL, type HandoffTarget, type NodeMsg, type ResultMsg } from '../protocol/infer.js'
import { MAX_MESSAGE_BYTES, lpLimits } from '../protocol/limits.js'
import type { Capability } from '../protocol/capability.js'
import type { HopInput, HopOutput } from '../runner.js'
import { asErrorCode, HopError, ProtocolError, TesseraError, type ErrorCode } from '../errors.js'
import { chainStates, EMPTY_CHAIN, verifyReceipt } from '../verify/receipt.js'
import type { Fingerprint } from '../verify/fingerprint.js'
import { hopMark } from '../hop-marks.js'

/** Opens protocol streams to peers: a libp2p node in Node or in a tab. */
export interface Dialer {
  dial(peer: Pick<Capability, 'peer' | 'addrs'>, protocol: string, signal: AbortSignal): Promise<Stream>
}

/** A hop's checked result: `fp` is the output's fingerprint; `unsent`, the handoff targets its node could not reach. */
export type HopResult = HopOutput & { ms: number; nodeMs: number; receipt: Uint8Array; fp: Fingerprint; unsent?: string[] }

/** A forwarded step's rows, as the client received them from the upstream hop: `handedOff` false means the client sends them itself. */
export interface HandedRows {
  hidden: Float32Array
  seq: number
  handedOff: boolean
}

export interface RemoteHop {
  readonly peer: Capability
  readonly layers: [number, number]
  readonly device: string
  /** Where an upstream hop hands this hop its rows (a hop opened with `inbox`). */
  readonly target?: HandoffTarget
  /**
   * Runs one step; the result's receipt has been checked (HopError 'BAD_RECEIPT' otherwise).
   * `to`: the node also hands its output to these hops (node to node, protocol/infer.ts).
   */
  forward(input: HopInput, start: number, o?: { to?: HandoffTarget[] }): Promise<HopResult>
  /**
   * Runs one step whose rows `from` (a peer) hands the node; `rows` are the same rows as the client
   * receives them from that upstream hop, to check the receipt by (and to send itself if the
   * handoff did not happen or does not come within the step's late mark). If `rows` fails, the
   * step is dropped at the node and this throws BAD_HANDOFF. A receipt for other rows than `rows`
   * throws BAD_HANDOFF too: the upstream may have handed other rows than it sent the client, and
   * nobody can tell which of the two lied; the caller runs the step again through the client.
   */
  expect(from: string, seq: number, rows: Promise<HandedRows>, start: number, o?: { to?: HandoffTarget[] }): Promise<HopResult>
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
 * `inbox`: the hop takes rows handed to it by an upstream hop (node-to-node forwarding).
 */
export async function openRemoteHop(
  dialer: Dialer,
  peer: Capability,
  layers: [number, number],
  root: string,
  session: string,
  t: HopTimeouts,
  o: { keep?: boolean; commit?: boolean; inbox?: boolean } = {}
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
  // Steps dropped at the node after it may already have run them (their upstream failed): their results are skipped.
  const dropped = new Set<number>()
  const reply = async (ms: number): Promise<NodeMsg> => {
    const signal = AbortSignal.timeout(ms)
    for (;;) {
      let bytes: Uint8Array
      try {
        bytes = (await lp.read({ signal })).subarray()
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
      if (m.t === 'result' && dropped.delete(m.step)) continue
      return m
    }
  }
  // In order, one at a time: a late supply may go out while the next step is being sent.
  let writing: Promise<void> = Promise.resolve()
  const write = async (bytes: Uint8Array): Promise<void> => {
    const next = writing.then(async () => {
      await lp.write(bytes)
    })
    writing = next.catch(() => {})
    try {
      await next
    } catch (err) {
      throw fail('RESET', `send failed: ${(err as Error).message}`)
    }
  }

  await write(
    encodeMsg({
      t: 'open',
      root,
      layers,
      session,
      ...(o.keep === true ? { keep: true } : {}),
      ...(o.commit === true ? { commit: true } : {}),
      ...(o.inbox === true ? { inbox: true } : {})
    })
  )
  const opened = await reply(t.openMs)
  if (opened.t !== 'opened') throw fail('BAD_REPLY', `expected "opened", got "${opened.t}"`)
  let step = 0
  let lateBefore = false
  const inputs: Uint8Array[] = [EMPTY_CHAIN] // the chain after each row sent so far, as the receipts must state it

  /**
   * Waits for step `id`'s result and checks it. `rows`: the step's input bytes as the receipt must
   * state them; `handedOff`: they reached the node by handoff, so a receipt for other rows is
   * BAD_HANDOFF, not the hop's fault; `onLate`: called once if no reply by the late mark.
   */
  const receive = async (
    id: number,
    start: number,
    rows: Uint8Array,
    seq: number,
    sent: number,
    handedOff: boolean,
    onLate?: () => void
  ): Promise<HopResult> => {
    // Hashed while the peer computes: only the receipt check needs it.
    // A start before the end rewinds the session (rejected drafts): the chain picks up from there. Past the end the node refuses the step.
    const states = chainStates(inputs[Math.min(start, inputs.length - 1)], rows, seq)
    const chain = states[states.length - 1]
    const due = stepDeadline(t, peer, layers, seq, id === 0)
    // A step whose handoff did not come is late through its upstream's doing: it is supplied, and does not count as late here.
    let supplied = false
    const lateTimer =
      onLate === undefined
        ? undefined
        : setTimeout(() => {
            supplied = true
            onLate()
          }, due.late)
    let m: NodeMsg
    try {
      m = await reply(due.deadline)
    } finally {
      clearTimeout(lateTimer)
    }
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
        output: { data, seq: m.seq, width: m.width },
        handedOff
      })
      fp = body.fingerprint
      if (o.commit === true && m.kind === 'logits') await checkLogitsCommitment(body.logits, data.subarray((m.seq - 1) * m.width, m.seq * m.width))
    } catch (err) {
      if ((err as ProtocolError).code === 'BAD_HANDOFF') {
        // The node's chain now follows the rows it was handed: the caller's next step there starts at `start`, rewinding them.
        throw new TesseraError('BAD_HANDOFF', `${peer.peer.slice(-8)} computed step ${id} from other rows than its upstream sent this client`)
      }
      stream.abort(err as Error)
      throw fail('BAD_RECEIPT', (err as Error).message)
    }
    inputs.length = start + 1
    inputs.push(...states)
    const late = id > 0 && took > due.late && !supplied
    if (late && lateBefore) {
      stream.abort(new TesseraError('TIMEOUT', 'late'))
      throw fail('TIMEOUT', `two steps in a row late: the last took ${Math.round(took)} ms where its measured speed predicts under ${Math.round(due.late)} ms`)
    }
    lateBefore = late
    return { data, seq: m.seq, width: m.width, kind: m.kind, ms: took, nodeMs: m.ms, receipt: m.receipt!, fp, ...unsentOf(m) }
  }

  return {
    peer,
    layers,
    device: opened.device,
    ...(o.inbox === true ? { target: { peer: peer.peer, addrs: peer.addrs, inbox: session } } : {}),
    async forward(input, start, f = {}) {
      const id = step++
      const sent = performance.now()
      hopMark?.('client:send', session, layers[0], id)
      const body =
        'tokens' in input ? { seq: input.tokens.length, tokens: bytesOf(Int32Array.from(input.tokens)) } : { seq: input.seq, hidden: bytesOf(input.hidden) }
      await write(encodeMsg({ t: 'forward', step: id, start, ...body, ...(f.to !== undefined ? { to: f.to } : {}) }))
      return await receive(id, start, body.tokens ?? body.hidden!, body.seq, sent, false)
    },
    async expect(from, seq, rows, start, f = {}) {
      const id = step++
      hopMark?.('client:send', session, layers[0], id)
      // The step goes out before its rows exist: it reaches the node while the upstream computes.
      const announced = write(encodeMsg({ t: 'forward', step: id, start, seq, from, ...(f.to !== undefined ? { to: f.to } : {}) }))
      announced.catch(() => {}) // awaited below; a failure there is this hop's
      let got: HandedRows
      try {
        got = await rows
      } catch (err) {
        await announced
        dropped.add(id)
        await write(encodeMsg({ t: 'supply', step: id }))
        throw new TesseraError('BAD_HANDOFF', `step ${id} dropped: its upstream failed (${(err as Error).message})`)
      }
      await announced
      if (got.seq !== seq) throw new TesseraError('BAD_HANDOFF', `the upstream returned ${got.seq} rows where the step has ${seq}`)
      const sent = performance.now()
      const bytes = bytesOf(got.hidden)
      const supply = (): void => {
        void write(encodeMsg({ t: 'supply', step: id, hidden: bytes })).catch(() => {})
      }
      if (!got.handedOff) supply()
      return await receive(id, start, bytes, seq, sent, got.handedOff, got.handedOff ? supply : undefined)
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

const unsentOf = (m: ResultMsg): { unsent?: string[] } => (m.unsent !== undefined ? { unsent: m.unsent } : {})

/** The commitment must be to the very logits that came with it, or a sampling proof would be about other ones. */
async function checkLogitsCommitment(signed: string | undefined, row: Float32Array): Promise<void> {
  const { logitsCommitment, quantizeLogits } = await import('../zk/argmax.js')
  if (signed === undefined) throw new ProtocolError('BAD_RECEIPT', 'receipt rejected: it commits to no logits, though the session asked for it')
  if (signed !== logitsCommitment(quantizeLogits(row)))
    throw new ProtocolError('BAD_RECEIPT', 'receipt rejected: its logits commitment is not of the logits it came with')
}
