/**
 * The node side of /tessera/infer/1.0.0, the same for a native node and a browser tab: it
 * holds a run of loaded shards and serves sessions over streams, one stream per session.
 * A bad message gets an error reply and ends that stream only; other sessions go on.
 */
import type { Stream } from '@libp2p/interface'
import type { ShardRunner, ShardSession, HopOutput } from '../runner.js'
import { decodeClientMsg, encodeMsg, f32, i32, bytesOf, type ErrorCode, type NodeMsg } from '../protocol/infer.js'
import { MAX_MESSAGE_BYTES, MAX_STEP_TOKENS } from '../protocol/limits.js'
import { ProtocolError, TesseraError } from '../errors.js'
import { logger } from '../log.js'
import { chainRows, EMPTY_CHAIN, signReceipt, type Signer } from '../verify/receipt.js'
import { encodeFingerprint, fingerprint } from '../verify/fingerprint.js'
import { createDisputeHandler, TraceStore } from './dispute.js'
import type { StepFault } from './fault.js'
import { PEER_DEFAULTS } from './config.js'
import { frameStream } from './frames.js'

const log = logger('tessera:node:serve')

export interface ServeOptions {
  root: string
  /** This node's peer id and its libp2p key's signer: every result carries a signed receipt. */
  peer: string
  sign: Signer
  /** The node's shards, consecutive, in layer order. */
  runners: ShardRunner[]
  maxSessions?: number
  /** Tokens of KV cache all sessions together may hold (the memory cap); more gets BUSY. */
  maxCacheTokens?: number | (() => number)
  sessionTtlMs?: number
  maxMessageBytes?: number
  /** Faults injected for drills (node/fault.ts); undefined = honest. */
  fault?: StepFault
}

export interface ServeStats {
  sessions: number // open now
  opened: number // ever opened (requests served)
  steps: number
  tokens: number
  errors: number
  cachedTokens: number
  busyMs: number // time spent computing steps
}

export interface InferHandler {
  handle: (stream: Stream) => Promise<void>
  /** Serves /tessera/dispute/1.0.0 (node/dispute.ts): reveals, kept states, referee re-executions. */
  handleDispute: (stream: Stream) => Promise<void>
  /** Live counters. */
  stats: ServeStats
  /** Serve other shards from now on (sessions already open keep theirs). */
  setRunners: (runners: ShardRunner[]) => void
}

/** Creates the stream handler. */
export function createInferHandler(o: ServeOptions): InferHandler {
  let runners = o.runners
  const traces = new TraceStore()
  const stats: ServeStats = { sessions: 0, opened: 0, steps: 0, tokens: 0, errors: 0, cachedTokens: 0, busyMs: 0 }
  const maxCache = (): number => (typeof o.maxCacheTokens === 'function' ? o.maxCacheTokens() : (o.maxCacheTokens ?? Infinity))
  const maxSessions = o.maxSessions ?? PEER_DEFAULTS.maxSessions
  const ttl = o.sessionTtlMs ?? PEER_DEFAULTS.sessionTtlMs

  async function handle(stream: Stream): Promise<void> {
    const frames = frameStream(stream, o.maxMessageBytes ?? MAX_MESSAGE_BYTES)
    const send = async (m: NodeMsg): Promise<void> => {
      await frames.write(encodeMsg(m))
    }
    let chain: ShardSession[] | undefined
    let layers: [number, number] = [0, 0]
    let session = ''
    let keep = false // a challenger's replay: keep each block's output for the dispute
    let commit = false // sign a commitment to the last row's logits, for a sampling proof
    let counted = false
    let held = 0 // tokens this session holds in the KV cache
    let inputs: Uint8Array = EMPTY_CHAIN // hash chain over every input row, signed in each receipt
    let timer: ReturnType<typeof setTimeout> | undefined
    const touch = (): void => {
      clearTimeout(timer)
      timer = setTimeout(() => {
        void fail('EXPIRED', `session idle for ${ttl} ms`)
      }, ttl)
    }
    const fail = async (code: ErrorCode, message: string): Promise<void> => {
      stats.errors++
      log.debug(`session error ${code}: ${message}`)
      await send({ t: 'error', code, message }).catch((e: Error) => {
        log.debug(`could not send the error reply: ${e.message}`)
      })
      await stream.close().catch(() => stream.abort(new ProtocolError(code, message)))
    }
    log.debug(`stream ${stream.id} opened`)
    try {
      touch()
      for (;;) {
        // A frame cut short or too large throws (and gets a reply below); the client going away ends quietly.
        const bytes = await frames.read()
        if (bytes === undefined) return
        touch()
        const msg = decodeClientMsg(bytes)
        if (msg.t === 'close') {
          await stream.close()
          return
        }
        if (msg.t === 'open') {
          if (chain !== undefined) throw new ProtocolError('MALFORMED', 'session is already open')
          if (msg.root !== o.root) throw new ProtocolError('WRONG_MODEL', `this node serves model ${o.root.slice(0, 16)}…, not ${msg.root.slice(0, 16)}…`)
          if (stats.sessions >= maxSessions) throw new ProtocolError('BUSY', `node is at its limit of ${maxSessions} sessions`)
          chain = openChain(runners, msg.layers)
          layers = msg.layers
          session = msg.session
          keep = msg.keep === true
          commit = msg.commit === true
          stats.sessions++
          stats.opened++
          counted = true
          await send({ t: 'opened', layers, device: runners[0].device })
          continue
        }
        if (chain === undefined) throw new ProtocolError('MALFORMED', 'forward before open')
        if (msg.start !== chain[0].length) {
          throw new ProtocolError('BAD_STEP', `step starts at position ${msg.start} but the session holds ${chain[0].length} tokens`)
        }
        if (msg.seq > MAX_STEP_TOKENS) throw new ProtocolError('TOO_LARGE', `a step may carry at most ${MAX_STEP_TOKENS} tokens, got ${msg.seq}`)
        if (stats.cachedTokens + msg.seq > maxCache()) throw new ProtocolError('BUSY', `KV cache full: ${stats.cachedTokens} of ${maxCache()} tokens in use`)
        const started = performance.now()
        let out =
          msg.tokens !== undefined
            ? await forwardChecked(chain[0], { tokens: i32(msg.tokens) }, msg.seq)
            : await forwardChecked(chain[0], { hidden: f32(msg.hidden!), seq: msg.seq }, msg.seq)
        const perLayer = [...(out.layers ?? [])]
        for (const s of chain.slice(1)) {
          out = await s.forward({ hidden: out.data, seq: out.seq })
          perLayer.push(...(out.layers ?? []))
        }
        if (o.fault?.output !== undefined) out = o.fault.output(layers, out)
        // Per-layer commitment: a Merkle root over each block's output fingerprint, leaves kept for reveals.
        const trace = perLayer.length === layers[1] - layers[0] ? traces.commit(session, msg.step, layers, perLayer, out.seq, keep) : undefined
        inputs = chainRows(inputs, msg.tokens ?? msg.hidden!, msg.seq)
        held += msg.seq
        stats.cachedTokens += msg.seq
        const ms = performance.now() - started
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
            input: inputs,
            output: encodeFingerprint(fingerprint(out.data, out.seq, out.width)),
            ...(trace !== undefined ? { trace } : {}),
            ...(logits !== undefined ? { logits } : {})
          },
          o.fault?.receiptBy?.sign ?? o.sign
        )
        await send({ t: 'result', step: msg.step, seq: out.seq, width: out.width, kind: out.kind, data: bytesOf(out.data), ms, receipt })
      }
    } catch (err) {
      const e = err as TesseraError
      const code = (err instanceof TesseraError ? e.code : 'INTERNAL') as ErrorCode
      await fail(code, e.message)
    } finally {
      clearTimeout(timer)
      if (stream.writeStatus === 'writable') await stream.close().catch(() => {})
      stats.cachedTokens -= held
      for (const s of chain ?? []) s.close()
      if (counted) stats.sessions--
    }
  }
  const handleDispute = createDisputeHandler({ root: o.root, peer: o.peer, sign: o.sign, traces, runners: () => runners, mute: o.fault?.mute })
  return {
    handle,
    handleDispute,
    stats,
    setRunners: (r) => {
      runners = r
    }
  }
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
    const at = input.hidden.findIndex((v) => !Number.isFinite(v))
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
