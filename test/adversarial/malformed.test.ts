/**
 * Malformed frames sent straight to a node's /tessera/infer/1.0.0 handler (shared/node/serve.ts)
 * over real libp2p streams in this process: each class gets its error reply (MALFORMED, or
 * TOO_LARGE / BAD_STEP where that is the code), the node ends the stream after it and computes
 * nothing, a client that never hangs up is reset, and the node serves others all along.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Libp2p, PrivateKey, Stream } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import { encode } from 'cborg'
import { encode as varint } from 'uint8-varint'
import { buildModel } from '../../host/model-store.js'
import { loadModel } from '../../native-node/store.js'
import { createPeer } from '../../host/libp2p.js'
import { preset } from '../../shared/model/config.js'
import { randomWeights } from '../../shared/model/random.js'
import { createInferHandler, type InferHandler } from '../../shared/node/serve.js'
import { decodeNodeMsg, INFER_PROTOCOL, type NodeMsg } from '../../shared/protocol/infer.js'
import { MAX_STEP_TOKENS } from '../../shared/protocol/limits.js'
import { openRemoteHop } from '../../shared/client/remote-hop.js'
import { libp2pDialer } from '../../shared/route/directory.js'
import type { Capability } from '../../shared/protocol/capability.js'
import type { ShardRunner } from '../../shared/runner.js'
import { tempDir } from '../helpers/paths.js'

const MAX_BYTES = 1 << 20
const LINGER_MS = 400
const T = { openMs: 5000, stepMs: 5000, minStepMs: 5000, minFirstStepMs: 5000, lateMs: 5000, slack: 20 }

let server: Libp2p
let key: PrivateKey
let attacker: Libp2p
let honest: Libp2p
let runners: ShardRunner[]
let root: string
let handler: InferHandler
let cap: Capability

beforeAll(async () => {
  const dir = tempDir('malformed')
  root = (await buildModel(randomWeights(preset('tiny'), 9), dir, { source: 'x', shards: 2 })).root
  runners = (await loadModel(dir, { device: 'cpu' })).runners
  key = await generateKeyPair('Ed25519')
  server = await createPeer({ privateKey: key })
  handler = createInferHandler({
    root,
    runners,
    peer: server.peerId.toString(),
    sign: async (b) => await key.sign(b),
    maxMessageBytes: MAX_BYTES,
    lingerMs: LINGER_MS
  })
  await server.handle(INFER_PROTOCOL, handler.handle, { maxInboundStreams: 64 })
  cap = { peer: server.peerId.toString(), addrs: server.getMultiaddrs().map(String), msPerLayer: 1 } as unknown as Capability
  attacker = await createPeer({ listen: [] })
  honest = await createPeer({ listen: [] })
})
afterAll(async () => {
  await honest?.stop()
  await attacker?.stop()
  await server?.stop()
})

const dial = async (): Promise<Stream> => await attacker.dialProtocol(multiaddr(server.getMultiaddrs()[0]), INFER_PROTOCOL)
const bytesOf = (ids: number[]): Uint8Array => new Uint8Array(new Int32Array(ids).buffer)
const open = { t: 'open', layers: [0, 2], session: 'x' }

/**
 * Sends `frames` (objects are CBOR-encoded and length-prefixed, `raw` bytes go as they are), closes
 * the write side if `hangUp`, and reads every reply until the stream ends: returns them and how
 * reading ended (UnexpectedEOFError is the node ending the stream; a TimeoutError would be it hanging).
 */
async function exchange(frames: Array<object | { raw: Uint8Array }>, hangUp = false): Promise<{ replies: NodeMsg[]; end: string; stream: Stream }> {
  const stream = await dial()
  const lp = lpStream(stream, { maxDataLength: MAX_BYTES })
  for (const f of frames) {
    if ('raw' in f && f.raw instanceof Uint8Array) stream.send(f.raw)
    else await lp.write(encode(f))
  }
  if (hangUp) await stream.close()
  const replies: NodeMsg[] = []
  for (;;) {
    const r = await lp.read({ signal: AbortSignal.timeout(5000) }).catch((e: Error) => e)
    if (r instanceof Error) return { replies, end: r.name, stream }
    replies.push(decodeNodeMsg(r.subarray()))
  }
}

/** The stream's one error reply (after any `opened`), and the node ended the stream after it. */
async function refused(name: string, frames: Array<object | { raw: Uint8Array }>, hangUp = false): Promise<{ code: string; message: string }> {
  const { replies, end, stream } = await exchange(frames, hangUp)
  await stream.close().catch(() => {})
  const last = replies.at(-1)
  expect(last?.t, `${name}: ${JSON.stringify(replies.map((r) => r.t))} then ${end}`).toBe('error')
  expect(
    replies.filter((r) => r.t === 'result'),
    name
  ).toHaveLength(0)
  expect(end, name).toBe('UnexpectedEOFError')
  return last as { code: string; message: string }
}

describe('malformed frames', () => {
  it('each class gets its error reply and an ended stream, and computes nothing', async () => {
    // An honest session opened before the attack and used after it.
    const before = await openRemoteHop(libp2pDialer(honest), cap, [0, 2], root, 'honest', T)
    await before.forward({ tokens: [1, 2] }, 0)
    const steps = handler.stats.steps

    const cases: Array<[string, Array<object | { raw: Uint8Array }>, boolean, string, RegExp]> = [
      // Framing.
      ['a length prefix cut short', [{ raw: Uint8Array.of(0x80) }], true, 'MALFORMED', /truncated message: 1 bytes/],
      ['a length prefix longer than any length', [{ raw: new Uint8Array(12).fill(0xff) }], false, 'MALFORMED', /bad length prefix/],
      ['a length over the limit', [{ raw: varint(MAX_BYTES + 1) }], false, 'TOO_LARGE', /exceeds 1048576 bytes/],
      ['a body cut short', [{ raw: Uint8Array.of(...varint(1000), ...new Uint8Array(10)) }], true, 'MALFORMED', /truncated message: 12 bytes/],
      ['an empty frame', [{ raw: Uint8Array.of(0) }], false, 'MALFORMED', /not valid CBOR/],
      // Bodies.
      ['not CBOR', [{ raw: Uint8Array.of(4, 0xff, 0xfe, 0x00, 0x13) }], false, 'MALFORMED', /not valid CBOR/],
      ['JSON', [{ raw: Uint8Array.of(...lp(new TextEncoder().encode(JSON.stringify({ ...open, root })))) }], false, 'MALFORMED', /./],
      ['CBOR, not a map', [[1, 2]], false, 'MALFORMED', /a message must be a CBOR map/],
      ['CBOR with bytes after it', [{ raw: lp(Uint8Array.of(...encode({ t: 'close' }), 0x00)) }], false, 'MALFORMED', /not valid CBOR/],
      ['an unknown type', [{ t: 'launch' }], false, 'MALFORMED', /unknown message type "launch"/],
      ['no type', [{ root }], false, 'MALFORMED', /unknown message type/],
      // Field types.
      ['a root that is a number', [{ ...open, root: 7 }], false, 'MALFORMED', /open.root must be a 64-hex model root/],
      ['layers backwards', [{ ...open, root, layers: [2, 0] }], false, 'MALFORMED', /open.layers must be \[start, end\)/],
      ['an empty session id', [{ ...open, root, session: '' }], false, 'MALFORMED', /open.session must be a non-empty string/],
      ['a session id too long', [{ ...open, root, session: 'x'.repeat(129) }], false, 'MALFORMED', /open.session/],
      ['keep that is a string', [{ ...open, root, keep: 'yes' }], false, 'MALFORMED', /open.keep must be a boolean/],
      ['a negative step', [{ t: 'forward', step: -1, start: 0, seq: 1, tokens: bytesOf([1]) }], false, 'MALFORMED', /forward.step and forward.start/],
      ['a fractional start', [{ t: 'forward', step: 0, start: 0.5, seq: 1, tokens: bytesOf([1]) }], false, 'MALFORMED', /forward.step and forward.start/],
      ['seq 0', [{ t: 'forward', step: 0, start: 0, seq: 0, tokens: bytesOf([]) }], false, 'MALFORMED', /forward.seq must be a positive integer/],
      ['tokens as a CBOR array', [{ t: 'forward', step: 0, start: 0, seq: 1, tokens: [1] }], false, 'MALFORMED', /exactly one of tokens, hidden/],
      [
        'tokens and hidden both',
        [{ t: 'forward', step: 0, start: 0, seq: 1, tokens: bytesOf([1]), hidden: new Uint8Array(4) }],
        false,
        'MALFORMED',
        /exactly one/
      ],
      // Byte strings that are not whole int32/fp32 rows: a RangeError (INTERNAL) in the views before the decoder checked them.
      [
        '5 bytes of tokens',
        [
          { ...open, root },
          { t: 'forward', step: 0, start: 0, seq: 1, tokens: new Uint8Array(5) }
        ],
        false,
        'MALFORMED',
        /seq \(1\) int32 ids/
      ],
      [
        'tokens for another seq',
        [
          { ...open, root },
          { t: 'forward', step: 0, start: 0, seq: 2, tokens: bytesOf([1]) }
        ],
        false,
        'MALFORMED',
        /seq \(2\) int32 ids/
      ],
      [
        '6 bytes of hidden',
        [
          { ...open, root, layers: [2, 4] },
          { t: 'forward', step: 0, start: 0, seq: 1, hidden: new Uint8Array(6) }
        ],
        false,
        'MALFORMED',
        /seq \(1\) rows of fp32/
      ],
      // Order.
      ['a forward before open', [{ t: 'forward', step: 0, start: 0, seq: 1, tokens: bytesOf([1]) }], false, 'MALFORMED', /forward before open/],
      [
        'a second open',
        [
          { ...open, root },
          { ...open, root }
        ],
        false,
        'MALFORMED',
        /session is already open/
      ],
      [
        'a step that skips ahead',
        [
          { ...open, root },
          { t: 'forward', step: 0, start: 3, seq: 1, tokens: bytesOf([1]) }
        ],
        false,
        'BAD_STEP',
        /starts at position 3/
      ],
      [
        'a step of too many tokens',
        [
          { ...open, root },
          { t: 'forward', step: 0, start: 0, seq: MAX_STEP_TOKENS + 1, tokens: bytesOf(new Array(MAX_STEP_TOKENS + 1).fill(1)) }
        ],
        false,
        'TOO_LARGE',
        /at most 4096 tokens/
      ]
    ]
    for (const [name, frames, hangUp, code, message] of cases) {
      const err = await refused(name, frames, hangUp)
      expect({ name, code: err.code }).toEqual({ name, code })
      expect(err.message, name).toMatch(message)
    }

    expect(handler.stats.steps).toBe(steps)
    expect(handler.stats.sessions).toBe(1)
    expect(handler.stats.errors).toBeGreaterThanOrEqual(cases.length)
    // The honest session goes on, and a well-formed request on a new stream is served.
    expect((await before.forward({ tokens: [3] }, 2)).seq).toBe(1)
    before.close()
    const after = await openRemoteHop(libp2pDialer(attacker), cap, [0, 4], root, 'after', T)
    expect((await after.forward({ tokens: [1, 2, 3] }, 0)).kind).toBe('logits')
    after.close()
  })

  it('frames after the error reply are not read: the session it asked for is never opened', async () => {
    const opened = handler.stats.opened
    const { replies, end, stream } = await exchange([
      { t: 'forward', step: 0, start: 0, seq: 1, tokens: bytesOf([1]) },
      { ...open, root }
    ])
    await stream.close().catch(() => {})
    expect(replies.map((r) => r.t)).toEqual(['error'])
    expect(end).toBe('UnexpectedEOFError')
    expect(handler.stats.opened).toBe(opened)
  })

  it('a client that never hangs up after the error is reset once the linger is over; one that does is closed cleanly', async () => {
    const stays = await exchange([{ t: 'launch' }])
    expect(stays.replies.map((r) => r.t)).toEqual(['error'])
    expect(stays.stream.status).toBe('open') // the node closed its side; ours is still writable
    await new Promise((resolve) => setTimeout(resolve, LINGER_MS + 400))
    expect(stays.stream.status).toBe('reset')

    const leaves = await exchange([{ t: 'launch' }])
    await leaves.stream.close()
    await new Promise((resolve) => setTimeout(resolve, LINGER_MS + 400))
    expect(leaves.stream.status).toBe('closed')
  })
})

/** A frame by hand: the varint length, then the bytes. */
function lp(body: Uint8Array): Uint8Array {
  return Uint8Array.of(...varint(body.byteLength), ...body)
}
