/**
 * The node side of /tessera/infer/1.0.0, the same for a native node and a browser tab: it
 * holds a run of loaded shards and serves sessions over streams, one stream per session.
 * A bad message gets an error reply and ends that stream only; other sessions go on. Under abuse:
 * one remote peer holds at most its share of the sessions, a stream that keeps the node waiting
 * (no open, no first step, no next step, a reply it does not read) is dropped with EXPIRED, and a
 * finished stream is reset if its client does not hang up.
 */
import type { Connection, Stream } from '@libp2p/interface'
import type { ShardRunner, ShardSession, HopOutput } from '../runner.js'
import { decodeClientMsg, encodeMsg, f32, firstNonFinite, i32, bytesOf, type ErrorCode, type NodeMsg } from '../protocol/infer.js'
import { MAX_MESSAGE_BYTES, MAX_STEP_TOKENS } from '../protocol/limits.js'
import { ProtocolError, TesseraError } from '../errors.js'
import { logger } from '../log.js'
import { chainStates, EMPTY_CHAIN, signReceipt, type Signer } from '../verify/receipt.js'
import { encodeFingerprint, fingerprint } from '../verify/fingerprint.js'
import { createDisputeHandler, TraceStore } from './dispute.js'
import type { StepFault } from './fault.js'
import { PEER_DEFAULTS } from './config.js'
import { frameStream } from './frames.js'
import { hopMark } from '../hop-marks.js'
import type { Dialer } from '../client/remote-hop.js'
import { createHandoffHandler, HandoffSender, Inbox, type Upstream } from './handoff.js'

const log = logger('tessera:node:serve')

export interface ServeOptions {
  root: string
  /** This node's peer id and its libp2p key's signer: every result carries a signed receipt. */
  peer: string
  sign: Signer
  /** The node's shards, consecutive, in layer order. */
  runners: ShardRunner[]
  maxSessions?: number
  /**
   * Sessions one remote peer may hold at once, by its peer id: a number, or one per peer
   * (service.ts gives the relay it announces to more, config.ts says why).
   */
  sessionsPerPeer?: number | ((remote: string) => number)
  /** Tokens of KV cache all sessions together may hold (the memory cap); more gets BUSY. */
  maxCacheTokens?: number | (() => number)
  sessionTtlMs?: number
  /** A stream that has not forwarded yet is dropped after this long (config.ts). */
  openIdleMs?: number
  /** How long a finished stream is left for its client to hang up before it is reset (config.ts). */
  lingerMs?: number
  maxMessageBytes?: number
  /** Faults injected for drills (node/fault.ts); undefined = honest. */
  fault?: StepFault
  /** Dials the next hop of a forwarded step (handoff.ts); without one every handoff is reported unsent. */
  dialer?: Dialer
  /** The model's hidden size: a handoff of rows of another width is refused before it can reach a step. */
  dim?: number
}

export interface ServeStats {
  sessions: number // open now
  opened: number // ever opened (requests served)
  steps: number
  tokens: number
  errors: number
  cachedTokens: number
  busyMs: number // time spent computing steps
  /** Forwarded steps: rows taken from an upstream's handoff, handoffs made to the next hop, rows the client supplied for want of one. */
  handedIn: number
  handedOut: number
  supplied: number
}

/** Who is at the other end: libp2p hands a handler the stream's connection, whose remote peer noise authenticated. */
export type Remote = Pick<Connection, 'remotePeer'>

export interface InferHandler {
  /**
   * Serves one session stream. Without a connection (an in-process stream pair in tests) the
   * remote is unknown and only the node's total limit applies.
   */
  handle: (stream: Stream, connection?: Remote) => Promise<void>
  /** Serves /tessera/dispute/1.0.0 (node/dispute.ts): reveals, kept states, referee re-executions. */
  handleDispute: (stream: Stream) => Promise<void>
  /** Serves /tessera/handoff/1.0.0 (node/handoff.ts): rows an upstream peer hands a forwarded session. */
  handleHandoff: (stream: Stream, connection?: Upstream) => Promise<void>
  /** Live counters. */
  stats: ServeStats
  /** Serve other shards from now on (sessions already open keep theirs). */
  setRunners: (runners: ShardRunner[]) => void
}

/** Creates the stream handler. */
export function createInferHandler(o: ServeOptions): InferHandler {
  let runners = o.runners
  const traces = new TraceStore()
  const stats: ServeStats = { sessions: 0, opened: 0, steps: 0, tokens: 0, errors: 0, cachedTokens: 0, busyMs: 0, handedIn: 0, handedOut: 0, supplied: 0 }
  const maxCache = (): number => (typeof o.maxCacheTokens === 'function' ? o.maxCacheTokens() : (o.maxCacheTokens ?? Infinity))
  const maxSessions = o.maxSessions ?? PEER_DEFAULTS.maxSessions
  const ttl = o.sessionTtlMs ?? PEER_DEFAULTS.sessionTtlMs
  const openIdle = o.openIdleMs ?? PEER_DEFAULTS.openIdleMs
  const linger = o.lingerMs ?? PEER_DEFAULTS.lingerMs
  const perPeer = o.sessionsPerPeer ?? PEER_DEFAULTS.sessionsPerPeer
  const quotaOf = (remote: string): number => (typeof perPeer === 'function' ? perPeer(remote) : perPeer)
  const byPeer = new Map<string, number>() // sessions open now, by remote peer id
  const cacheByPeer = new Map<string, number>() // KV cache tokens its sessions hold, by remote peer id
  // A peer's share of the KV cache goes with its share of the sessions: eight long sessions must not fill it for everyone.
  const cacheShareOf = (remote: string): number => Math.floor((maxCache() * Math.min(quotaOf(remote), maxSessions)) / maxSessions)
  const inboxes = new Map<string, Inbox>() // forwarded sessions, by session id
  const maxMessageBytes = o.maxMessageBytes ?? MAX_MESSAGE_BYTES

  async function handle(stream: Stream, connection?: Remote): Promise<void> {
    const remote = connection?.remotePeer.toString()
    const frames = frameStream(stream, maxMessageBytes)
    // A step waiting for its handoff also listens for the client's next frame (its supply); one read is in flight at a time.
    let reading: Promise<Uint8Array | undefined> | undefined
    const nextFrame = (): Promise<Uint8Array | undefined> => {
      reading ??= frames.read(expiry.signal)
      return reading
    }
    // Aborted with EXPIRED when the client keeps the node waiting too long, reading or writing.
    const expiry = new AbortController()
    const send = async (m: NodeMsg, signal: AbortSignal = expiry.signal): Promise<void> => {
      await frames.write(encodeMsg(m), signal)
    }
    let chain: ShardSession[] | undefined
    let layers: [number, number] = [0, 0]
    let session = ''
    let keep = false // a challenger's replay: keep each block's output for the dispute
    let commit = false // sign a commitment to the last row's logits, for a sampling proof
    let counted = false
    let held = 0 // tokens this session holds in the KV cache
    const inputs: Uint8Array[] = [EMPTY_CHAIN] // the hash chain over the input rows after each position, the last signed in each receipt
    let forwarded = false
    let inbox: Inbox | undefined
    const handoffs = new HandoffSender(o.dialer, openIdle)
    let timer: ReturnType<typeof setTimeout> | undefined
    // The clock runs only while the node waits on the client (for a frame, or to take a reply), not while it computes.
    const waitOnClient = (): void => {
      clearTimeout(timer)
      const ms = forwarded ? ttl : Math.min(openIdle, ttl) // the short clock is never the longer one
      const why = forwarded
        ? `session idle for ${ms} ms`
        : chain === undefined
          ? `no session opened in ${ms} ms`
          : `session opened but no step sent in ${ms} ms`
      timer = setTimeout(() => expiry.abort(new ProtocolError('EXPIRED', `${why}; it was dropped, open a new one`)), ms)
    }
    // Frees the session's slot, its share and its KV cache, once, as soon as the node is done with it.
    const release = (): void => {
      stats.cachedTokens -= held
      if (remote !== undefined && held > 0) {
        const left = (cacheByPeer.get(remote) ?? 0) - held
        if (left > 0) cacheByPeer.set(remote, left)
        else cacheByPeer.delete(remote)
      }
      held = 0
      for (const s of chain ?? []) s.close()
      chain = undefined
      if (inbox !== undefined && inboxes.get(session) === inbox) inboxes.delete(session)
      inbox = undefined
      handoffs.close()
      if (!counted) return
      counted = false
      stats.sessions--
      if (remote === undefined) return
      const n = (byPeer.get(remote) ?? 1) - 1
      if (n > 0) byPeer.set(remote, n)
      else byPeer.delete(remote)
    }
    const fail = async (code: ErrorCode, message: string): Promise<void> => {
      stats.errors++
      log.debug(`session error ${code}: ${message}`)
      // Its own deadline: the idle signal may be what fired, and a client that reads nothing must not hold the handler.
      await send({ t: 'error', code, message }, AbortSignal.timeout(linger)).catch((e: Error) => {
        log.debug(`could not send the error reply: ${e.message}`)
      })
    }
    log.debug(`stream ${stream.id} opened`)
    try {
      waitOnClient()
      for (;;) {
        // A frame cut short or too large throws (and gets a reply below), so does the idle clock; the client going away ends quietly.
        const bytes = await nextFrame()
        reading = undefined
        if (bytes === undefined) return
        clearTimeout(timer)
        const msg = decodeClientMsg(bytes)
        if (msg.t === 'close') return
        if (msg.t === 'supply') continue // for a step no longer waiting (its handoff came first): nothing to do
        if (msg.t === 'open') {
          if (counted) throw new ProtocolError('MALFORMED', 'session is already open')
          if (msg.root !== o.root) throw new ProtocolError('WRONG_MODEL', `this node serves model ${o.root.slice(0, 16)}…, not ${msg.root.slice(0, 16)}…`)
          const mine = remote === undefined ? 0 : (byPeer.get(remote) ?? 0)
          if (remote !== undefined && mine >= quotaOf(remote)) {
            throw new ProtocolError('BUSY', `your peer holds ${mine} sessions on this node, its share; close one or try another node`)
          }
          if (stats.sessions >= maxSessions) throw new ProtocolError('BUSY', `node is at its limit of ${maxSessions} sessions`)
          if (msg.inbox === true && inboxes.has(msg.session)) throw new ProtocolError('MALFORMED', 'a session with this id takes handoffs here already')
          chain = openChain(runners, msg.layers)
          layers = msg.layers
          session = msg.session
          keep = msg.keep === true
          commit = msg.commit === true
          stats.sessions++
          stats.opened++
          counted = true
          if (remote !== undefined) byPeer.set(remote, mine + 1)
          if (msg.inbox === true) {
            inbox = new Inbox()
            inboxes.set(session, inbox)
          }
          waitOnClient()
          await send({ t: 'opened', layers, device: runners[0].device })
          continue
        }
        if (chain === undefined) throw new ProtocolError('MALFORMED', 'forward before open')
        hopMark?.('node:read', session, layers[0], msg.step)
        if (msg.start > chain[0].length) {
          throw new ProtocolError('BAD_STEP', `step starts at position ${msg.start} but the session holds ${chain[0].length} tokens`)
        }
        // A step that starts before the cache's end drops the rows from there on first: a speculative
        // client rewinds the drafts its check rejected. The input chain rewinds with them.
        if (msg.start < chain[0].length) {
          const dropped = chain[0].length - msg.start
          for (const s of chain) s.truncate(msg.start)
          inputs.length = msg.start + 1
          held -= dropped
          stats.cachedTokens -= dropped
          if (remote !== undefined) cacheByPeer.set(remote, (cacheByPeer.get(remote) ?? 0) - dropped)
        }
        if (msg.seq > MAX_STEP_TOKENS) throw new ProtocolError('TOO_LARGE', `a step may carry at most ${MAX_STEP_TOKENS} tokens, got ${msg.seq}`)
        if (stats.cachedTokens + msg.seq > maxCache()) throw new ProtocolError('BUSY', `KV cache full: ${stats.cachedTokens} of ${maxCache()} tokens in use`)
        const mineCached = remote === undefined ? 0 : (cacheByPeer.get(remote) ?? 0)
        if (remote !== undefined && mineCached + msg.seq > cacheShareOf(remote)) {
          throw new ProtocolError(
            'BUSY',
            `your peer's sessions hold ${mineCached} of this node's ${maxCache()} KV cache tokens; its share is ${cacheShareOf(remote)}`
          )
        }
        let rows = msg.hidden
        if (msg.from !== undefined) {
          if (inbox === undefined) throw new ProtocolError('MALFORMED', 'a step from a handoff needs a session opened with inbox')
          // The rows come from the upstream peer or, if its handoff does not come, from the client (supply).
          waitOnClient()
          const wait = inbox.take(msg.from, msg.start, msg.seq)
          const handed = wait.got.then((h) => ({ rows: h.hidden }))
          for (;;) {
            const got = await Promise.race([handed, nextFrame().then((frame) => ({ frame }))])
            if ('rows' in got) {
              rows = got.rows
              stats.handedIn++
              break
            }
            reading = undefined
            if (got.frame === undefined) return
            const m = decodeClientMsg(got.frame)
            if (m.t === 'close') return
            if (m.t === 'supply' && m.step < msg.step) continue // a late supply for a step its handoff served
            if (m.t !== 'supply' || m.step !== msg.step)
              throw new ProtocolError('MALFORMED', `step ${msg.step} waits for its handoff: only its supply may come first`)
            wait.cancel()
            if (m.hidden === undefined) break // the client dropped the step (its upstream failed)
            if (m.hidden.byteLength % (4 * msg.seq) !== 0) throw new ProtocolError('MALFORMED', `supply.hidden must hold seq (${msg.seq}) rows of fp32 values`)
            rows = m.hidden
            stats.supplied++
            break
          }
          clearTimeout(timer)
          if (rows === undefined) continue
        }
        const started = performance.now()
        hopMark?.('node:start', session, layers[0], msg.step)
        let out =
          msg.tokens !== undefined
            ? await forwardChecked(chain[0], { tokens: i32(msg.tokens) }, msg.seq)
            : await forwardChecked(chain[0], { hidden: f32(rows!), seq: msg.seq }, msg.seq)
        const perLayer = [...(out.layers ?? [])]
        for (const s of chain.slice(1)) {
          out = await s.forward({ hidden: out.data, seq: out.seq })
          perLayer.push(...(out.layers ?? []))
        }
        if (o.fault?.output !== undefined) out = o.fault.output(layers, out)
        // Per-layer commitment: a Merkle root over each block's output fingerprint, leaves kept for reveals.
        const trace = perLayer.length === layers[1] - layers[0] ? traces.commit(session, msg.step, layers, perLayer, out.seq, keep) : undefined
        inputs.push(...chainStates(inputs[inputs.length - 1], msg.tokens ?? rows!, msg.seq))
        held += msg.seq
        stats.cachedTokens += msg.seq
        if (remote !== undefined) cacheByPeer.set(remote, (cacheByPeer.get(remote) ?? 0) + msg.seq)
        const ms = performance.now() - started
        hopMark?.('node:computed', session, layers[0], msg.step)
        stats.steps++
        stats.tokens += msg.seq
        stats.busyMs += ms
        // Poseidon (~0.8 MB of constants) loads only for a session that asks for the commitment.
        const logits = commit && out.kind === 'logits' ? await commitLastRow(out) : undefined
        const receipt = await signReceipt(
          {
            peer: o.fault?.receiptBy?.peer ?? o.peer,
            session,
            step: msg.step,
            root: o.root,
            layers,
            start: msg.start,
            input: inputs[inputs.length - 1],
            output: encodeFingerprint(fingerprint(out.data, out.seq, out.width)),
            ...(trace !== undefined ? { trace } : {}),
            ...(logits !== undefined ? { logits } : {})
          },
          o.fault?.receiptBy?.sign ?? o.sign
        )
        hopMark?.('node:signed', session, layers[0], msg.step)
        forwarded = true
        if (o.fault?.delayMs !== undefined) await new Promise((r) => setTimeout(r, o.fault!.delayMs))
        // The next hop's rows first: they are on the token's critical path, this reply is not.
        let unsent: string[] = []
        if (msg.to !== undefined) {
          if (out.kind !== 'hidden') throw new ProtocolError('MALFORMED', 'the last hop returns logits to the client: it has nobody to hand them to')
          const handed = o.fault?.handoff !== undefined ? o.fault.handoff(out) : out
          if (handed !== undefined) {
            unsent = await handoffs.send(msg.to, { start: msg.start, seq: handed.seq, hidden: bytesOf(handed.data) })
            stats.handedOut += msg.to.length - unsent.length
          }
        }
        waitOnClient()
        await send({
          t: 'result',
          step: msg.step,
          seq: out.seq,
          width: out.width,
          kind: out.kind,
          data: bytesOf(out.data),
          ms,
          receipt,
          ...(unsent.length > 0 ? { unsent } : {})
        })
        hopMark?.('node:sent', session, layers[0], msg.step)
      }
    } catch (err) {
      const e = err as TesseraError
      const code = (err instanceof TesseraError ? e.code : 'INTERNAL') as ErrorCode
      clearTimeout(timer)
      release()
      await fail(code, e.message)
    } finally {
      clearTimeout(timer)
      release()
      await finish(stream, linger)
    }
  }
  const handleHandoff = createHandoffHandler(inboxes, { maxMessageBytes, idleMs: ttl, dim: o.dim })
  const handleDispute = createDisputeHandler({ root: o.root, peer: o.peer, sign: o.sign, traces, runners: () => runners, mute: o.fault?.mute })
  return {
    handle,
    handleDispute,
    handleHandoff,
    stats,
    setRunners: (r) => {
      runners = r
    }
  }
}

/**
 * Ends the node's side of a stream: the last reply flushed (given up on after `lingerMs`), any
 * further input discarded, and the stream reset if the client has not hung up `lingerMs` later
 * (until then a client coming back still reads the reply, not a bare reset).
 */
async function finish(stream: Stream, lingerMs: number): Promise<void> {
  try {
    const signal = AbortSignal.timeout(lingerMs)
    if (stream.writeStatus === 'writable') await stream.close({ signal })
    await stream.closeRead({ signal })
  } catch (err) {
    stream.abort(err as Error)
    return
  }
  if (stream.status !== 'open' && stream.status !== 'closing') return
  const timer = setTimeout(() => stream.abort(new ProtocolError('TIMEOUT', `the client did not hang up within ${lingerMs} ms`)), lingerMs)
  ;(timer as { unref?: () => void }).unref?.() // a lingering stream must not keep a process alive
  stream.addEventListener('close', () => clearTimeout(timer), { once: true })
}

/** Opens sessions on the node's shards that exactly cover `layers`. */
function openChain(runners: ShardRunner[], [a, b]: [number, number]): ShardSession[] {
  const start = runners.findIndex((r) => r.shard.layers[0] === a)
  const end = runners.findIndex((r) => r.shard.layers[1] === b)
  if (start < 0 || end < start) {
    const bounds = runners.map((r) => `[${r.shard.layers[0]},${r.shard.layers[1]})`).join(' ')
    throw new ProtocolError('WRONG_LAYERS', `this node cannot serve layers [${a},${b}); its shards are ${bounds}`)
  }
  return runners.slice(start, end + 1).map((r) => r.open())
}

async function forwardChecked(s: ShardSession, input: Parameters<ShardSession['forward']>[0], seq: number): Promise<HopOutput> {
  if ('tokens' in input && input.tokens.length !== seq) throw new ProtocolError('MALFORMED', `tokens hold ${input.tokens.length} ids but seq is ${seq}`)
  // A node signs what it computed from what it was fed: NaN or Inf in, NaN out, under our name.
  if ('hidden' in input) {
    const at = firstNonFinite(input.hidden)
    if (at >= 0) throw new ProtocolError('MALFORMED', `hidden states must be finite: value ${at} is ${input.hidden[at]}`)
  }
  try {
    return await s.forward(input)
  } catch (err) {
    if (err instanceof TesseraError) throw new ProtocolError('MALFORMED', err.message)
    throw err
  }
}

/** The commitment a sampling proof refers to: the step's last row of logits, quantized (zk/argmax.ts). */
async function commitLastRow(out: HopOutput): Promise<string> {
  const { logitsCommitment, quantizeLogits } = await import('../zk/argmax.js')
  return logitsCommitment(quantizeLogits(out.data.subarray((out.seq - 1) * out.width, out.seq * out.width)))
}
