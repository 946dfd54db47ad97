/**
 * The node side of /tessera/dispute/1.0.0 (protocol/infer.ts), the same for a native node and a
 * browser tab. A node answers for what it committed to: it reveals a per-layer fingerprint with
 * its Merkle proof, hands over a block's output kept from a challenger's replay, and, drawn as a
 * referee, re-executes a block and signs what it got (verify/dispute.ts): from the hop's own input
 * (`from`: every block of the hop up to and through the disputed one), so that what it runs on
 * is bound by the receipts' input chain, not handed over by a party.
 */
import { lpStream } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import { decode, encode } from 'cborg'
import type { HopInput, HopOutput, ShardRunner } from '../runner.js'
import { bytesOf, f32, i32 } from '../protocol/infer.js'
import { MAX_MESSAGE_BYTES, lpLimits } from '../protocol/limits.js'
import { ProtocolError, TesseraError } from '../errors.js'
import { encodeFingerprint, fingerprint } from '../verify/fingerprint.js'
import { layerLeaf, merkleProof, merkleRoot } from '../verify/merkle.js'
import { chainRows, EMPTY_CHAIN, type Signer } from '../verify/receipt.js'
import { signPart } from '../verify/dispute.js'

/** Steps whose per-layer leaves a node keeps for reveals (the oldest go first). */
export const TRACE_KEEP = 4096
/** Kept block outputs (challengers' replays) a node holds at most, in steps and in bytes. */
export const STATE_KEEP = 16
export const STATE_KEEP_BYTES = 256 * 2 ** 20

interface Trace {
  layers: [number, number]
  seq: number
  fps: Uint8Array[]
  leaves: Uint8Array[]
  states?: Float32Array[]
}

/** Per-layer fingerprints of recent steps, the commitment each receipt signed, and kept states. */
export class TraceStore {
  private readonly steps = new Map<string, Trace>()
  private readonly kept: string[] = []
  private keptBytes = 0

  /** Commits to each block's output; `keep` holds the outputs themselves for a later dispute. Returns the Merkle root. */
  commit(session: string, step: number, layers: [number, number], perLayer: Float32Array[], seq: number, keep = false): Uint8Array {
    const fps = perLayer.map((data) => encodeFingerprint(fingerprint(data, seq, data.length / seq)))
    const leaves = fps.map((f, i) => layerLeaf(layers[0] + i, f))
    const key = `${session}\n${step}`
    const t: Trace = { layers, seq, fps, leaves }
    if (keep) {
      t.states = perLayer.map((x) => x.slice())
      this.kept.push(key)
      this.keptBytes += perLayer.reduce((n, x) => n + x.byteLength, 0)
      while (this.kept.length > STATE_KEEP || this.keptBytes > STATE_KEEP_BYTES) this.unkeep(this.kept.shift()!)
    }
    this.steps.set(key, t)
    if (this.steps.size > TRACE_KEEP) this.steps.delete(this.steps.keys().next().value!)
    return merkleRoot(leaves)
  }

  reveal(session: string, step: number, layer: number): { fp: Uint8Array; proof: Uint8Array[] } | undefined {
    const s = this.steps.get(`${session}\n${step}`)
    if (s === undefined || layer < s.layers[0] || layer >= s.layers[1]) return undefined
    const i = layer - s.layers[0]
    return { fp: s.fps[i], proof: merkleProof(s.leaves, i) }
  }

  state(session: string, step: number, layer: number): { data: Float32Array; seq: number } | undefined {
    const s = this.steps.get(`${session}\n${step}`)
    if (s?.states === undefined || layer < s.layers[0] || layer >= s.layers[1]) return undefined
    return { data: s.states[layer - s.layers[0]], seq: s.seq }
  }

  private unkeep(key: string): void {
    const s = this.steps.get(key)
    if (s?.states === undefined) return
    this.keptBytes -= s.states.reduce((n, x) => n + x.byteLength, 0)
    delete s.states
  }
}

export interface DisputeOptions {
  root: string
  peer: string
  sign: Signer
  traces: TraceStore
  runners: () => ShardRunner[]
  /** A drill (node/fault.ts): the node goes silent once challenged. */
  mute?: boolean
}

type Request =
  | { t: 'reveal'; session: string; step: number; layer: number }
  | { t: 'state'; session: string; step: number; layer: number }
  | { t: 'execute'; root: string; hop: [number, number]; layer: number; from?: number; seq: number; tokens?: Uint8Array; hidden?: Uint8Array }

/** One request per stream; a bad one gets an error reply and nothing else changes. */
export function createDisputeHandler(o: DisputeOptions): (stream: Stream) => Promise<void> {
  return async (stream) => {
    const lp = lpStream(stream, lpLimits(MAX_MESSAGE_BYTES))
    try {
      const m = parse((await lp.read({ signal: AbortSignal.timeout(10_000) })).subarray())
      if (o.mute === true) return
      const notKept = (what: string): never => {
        const { session, step } = m as { session: string; step: number }
        const kept = `kept ${TRACE_KEEP} steps, states of ${STATE_KEEP} replays`
        throw new ProtocolError('NOT_FOUND', `no ${what} for layer ${m.layer} of ${session} step ${step} (${kept})`)
      }
      if (m.t === 'reveal') {
        const r = o.traces.reveal(m.session, m.step, m.layer) ?? notKept('commitment')
        await lp.write(encode({ t: 'leaf', ...r }))
      } else if (m.t === 'state') {
        const x = o.traces.state(m.session, m.step, m.layer) ?? notKept('kept state')
        await lp.write(encode({ t: 'state', data: bytesOf(x.data), seq: x.seq, width: x.data.length / x.seq }))
      } else {
        await lp.write(encode({ t: 'part', statement: await execute(o, m) }))
      }
    } catch (err) {
      await lp.write(encode({ t: 'error', code: err instanceof TesseraError ? err.code : 'INTERNAL', message: (err as Error).message })).catch(() => {})
    } finally {
      await stream.close().catch(() => {})
    }
  }
}

/**
 * Re-executes block `m.layer` (or the head) of hop `m.hop` and signs the result: on the rows given
 * when they entered that block, or, with `from`, on rows that entered block `from`, running every
 * block from there up to the disputed one first (what entered it is then this node's own work).
 */
async function execute(o: DisputeOptions, m: Extract<Request, { t: 'execute' }>): Promise<Uint8Array> {
  if (m.root !== o.root) throw new ProtocolError('WRONG_MODEL', `this node serves model ${o.root.slice(0, 16)}…, not ${m.root.slice(0, 16)}…`)
  const [a, b] = m.hop
  const from = m.from ?? m.layer
  let input: HopInput = m.tokens !== undefined ? { tokens: i32(m.tokens) } : { hidden: f32(m.hidden!), seq: m.seq }
  if ('tokens' in input && input.tokens.length !== m.seq) throw new ProtocolError('MALFORMED', `tokens hold ${input.tokens.length} ids but seq is ${m.seq}`)
  if ('tokens' in input && from !== 0) throw new ProtocolError('MALFORMED', 'only block 0 takes token ids')
  const runners = o.runners()
  const blockRunner = (layer: number): ShardRunner => {
    const r = runners.find((x) => x.shard.layers[0] <= layer && layer < x.shard.layers[1])
    if (r === undefined) throw new ProtocolError('WRONG_LAYERS', `this node does not hold block ${layer}`)
    if (r.runPart === undefined) throw new ProtocolError('WRONG_LAYERS', `this node's runtime cannot re-execute single blocks`)
    return r
  }
  for (let l = from; l < m.layer; l++) {
    const x = await run(blockRunner(l), l, input)
    input = { hidden: x.data, seq: x.seq }
  }
  let out: HopOutput
  if (m.layer === b) {
    // The head: the model's LM head on the last hop; on another, the hop's output is block b-1's.
    const tail = runners.find((r) => r.shard.layers[1] === b)
    if (tail?.runPart !== undefined) out = await run(tail, b, input)
    else if (runners.some((r) => r.shard.layers[0] < b && b < r.shard.layers[1]) && 'hidden' in input) {
      out = { data: input.hidden, seq: input.seq, width: input.hidden.length / input.seq, kind: 'hidden' }
    } else throw new ProtocolError('WRONG_LAYERS', `this node cannot re-execute the head of [${a},${b})`)
  } else out = await run(blockRunner(m.layer), m.layer, input)
  const bytes = m.tokens ?? m.hidden!
  return await signPart(
    {
      peer: o.peer,
      root: o.root,
      hop: m.hop,
      layer: m.layer,
      ...(m.from !== undefined ? { from } : {}),
      input: chainRows(EMPTY_CHAIN, bytes, m.seq),
      ...('hidden' in input ? { inputFp: encodeFingerprint(fingerprint(input.hidden, input.seq, input.hidden.length / input.seq)) } : {}),
      output: encodeFingerprint(fingerprint(out.data, out.seq, out.width))
    },
    o.sign
  )
}

async function run(r: ShardRunner, layer: number, input: HopInput): Promise<HopOutput> {
  try {
    return await r.runPart!(layer, input)
  } catch (err) {
    if (err instanceof TesseraError) throw new ProtocolError('MALFORMED', err.message)
    throw err
  }
}

function parse(bytes: Uint8Array): Request {
  let m: Record<string, unknown>
  try {
    m = decode(bytes)
  } catch {
    throw new ProtocolError('MALFORMED', 'not valid CBOR')
  }
  const uint = (x: unknown): boolean => Number.isSafeInteger(x) && (x as number) >= 0
  if ((m?.t === 'reveal' || m?.t === 'state') && typeof m.session === 'string' && uint(m.step) && uint(m.layer)) return m as Request
  if (
    m?.t === 'execute' &&
    typeof m.root === 'string' &&
    Array.isArray(m.hop) &&
    m.hop.length === 2 &&
    m.hop.every(uint) &&
    (m.hop[0] as number) < (m.hop[1] as number) &&
    uint(m.layer) &&
    (m.layer as number) >= (m.hop[0] as number) &&
    (m.layer as number) <= (m.hop[1] as number) &&
    (m.from === undefined || (uint(m.from) && (m.from as number) >= (m.hop[0] as number) && (m.from as number) <= (m.layer as number))) &&
    uint(m.seq) &&
    (m.seq as number) > 0 &&
    m.tokens instanceof Uint8Array !== m.hidden instanceof Uint8Array
  )
    return m as Request
  throw new ProtocolError(
    'MALFORMED',
    'expected { t: "reveal" | "state", session, step, layer } or ' +
      '{ t: "execute", root, hop: [a, b], layer (a ≤ layer ≤ b), from? (a ≤ from ≤ layer), seq, tokens | hidden }'
  )
}
