/**
 * Bad input sent straight to a node over /tessera/infer/1.0.0: malformed, truncated, oversized,
 * wrong-model and out-of-order messages each get a clear error reply, and the node keeps
 * serving a generation that runs at the same time.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { multiaddr } from '@multiformats/multiaddr'
import { lpStream } from '@libp2p/utils'
import { encode as varint } from 'uint8-varint'
import type { Libp2p, Stream } from '@libp2p/interface'
import { buildModel } from '../host/model-store.js'
import { createPeer } from '../host/libp2p.js'
import { decodeNodeMsg, encodeMsg, INFER_PROTOCOL, type ClientMsg, type NodeMsg } from '../shared/protocol/infer.js'
import { MAX_MESSAGE_BYTES } from '../shared/protocol/limits.js'
import { reference, stories } from './helpers/reference.js'
import { tempDir } from './helpers/paths.js'
import { api, startNetwork, type TestNetwork } from './helpers/network.js'

let net: TestNetwork
let attacker: Libp2p
let root: string

beforeAll(async () => {
  const model = tempDir('adv-model')
  root = (await buildModel(await stories(), model, { source: 'stories260K.bin', cuts: [2, 4] })).root
  net = await startNetwork(model, ['0-2', '2-4', '4-5'])
  attacker = await createPeer({ listen: [] })
})
afterAll(async () => {
  await attacker?.stop()
  await net?.stop()
})

/** Dials the node serving `layers` ('2,4' by default: a middle node). */
async function open(layers = '2,4'): Promise<Stream> {
  const node = net.nodes.find((n) => n.ready.layers.join(',') === layers)!
  const addrs = node.ready.addrs.map((a: string) => multiaddr(a))
  return await attacker.dialProtocol(addrs, INFER_PROTOCOL)
}

/** Sends raw frames, returns the node's reply (expects exactly one, then the stream to end). */
async function exchange(frames: Array<Uint8Array | ClientMsg>, layers = '2,4'): Promise<NodeMsg[]> {
  const stream = await open(layers)
  const lp = lpStream(stream, { maxDataLength: MAX_MESSAGE_BYTES })
  for (const f of frames) await lp.write(f instanceof Uint8Array ? f : encodeMsg(f))
  const replies: NodeMsg[] = []
  try {
    for (;;) replies.push(decodeNodeMsg((await lp.read({ signal: AbortSignal.timeout(10_000) })).subarray()))
  } catch {
    /* stream ended */
  }
  await stream.close().catch(() => {})
  return replies
}

const errorOf = (replies: NodeMsg[]): { code: string; message: string } => {
  const e = replies.find((r) => r.t === 'error')
  expect(e, JSON.stringify(replies)).toBeDefined()
  return e as { code: string; message: string }
}

describe('a node under bad input', () => {
  it('answers each bad message with a clear error and keeps serving a concurrent generation', async () => {
    const c = reference()[0]
    const generation = api(net.http, '/v1/completions', { prompt: c.prompt, max_tokens: c.decisive_prefix })
    const hidden = (seq: number): Uint8Array => new Uint8Array(seq * 64 * 4)

    // Not CBOR at all.
    expect(errorOf(await exchange([new Uint8Array([0xff, 0xfe, 0x00, 0x13])]))).toMatchObject({
      code: 'MALFORMED',
      message: expect.stringMatching(/not valid CBOR/)
    })
    // Valid CBOR, not a message.
    expect(errorOf(await exchange([encodeMsg({ t: 'launch' } as unknown as ClientMsg)]))).toMatchObject({
      code: 'MALFORMED',
      message: expect.stringMatching(/unknown message type/)
    })
    // Another model's root.
    expect(errorOf(await exchange([{ t: 'open', root: 'ab'.repeat(32), layers: [2, 4], session: 'x' }]))).toMatchObject({ code: 'WRONG_MODEL' })
    // Layers this node does not hold.
    expect(errorOf(await exchange([{ t: 'open', root, layers: [0, 2], session: 'x' }]))).toMatchObject({
      code: 'WRONG_LAYERS',
      message: expect.stringMatching(/its shards are \[2,4\)/)
    })
    // Forward before open.
    expect(errorOf(await exchange([{ t: 'forward', step: 0, start: 0, seq: 1, hidden: hidden(1) }]))).toMatchObject({
      code: 'MALFORMED',
      message: expect.stringMatching(/forward before open/)
    })
    // A step that does not continue the cache.
    expect(
      errorOf(
        await exchange([
          { t: 'open', root, layers: [2, 4], session: 'x' },
          { t: 'forward', step: 0, start: 5, seq: 1, hidden: hidden(1) }
        ])
      )
    ).toMatchObject({ code: 'BAD_STEP' })
    // Hidden states of the wrong size.
    expect(
      errorOf(
        await exchange([
          { t: 'open', root, layers: [2, 4], session: 'x' },
          { t: 'forward', step: 0, start: 0, seq: 2, hidden: hidden(1) }
        ])
      )
    ).toMatchObject({ code: 'MALFORMED', message: expect.stringMatching(/expected 2 × 64/) })
    // Token ids outside the vocabulary, on the first node.
    expect(
      errorOf(
        await exchange(
          [
            { t: 'open', root, layers: [0, 2], session: 'x' },
            { t: 'forward', step: 0, start: 0, seq: 1, tokens: new Uint8Array(new Int32Array([9999]).buffer) }
          ],
          '0,2'
        )
      )
    ).toMatchObject({ code: 'MALFORMED', message: expect.stringMatching(/outside the vocabulary/) })

    // Oversized: a length prefix beyond the limit is refused before any payload is read.
    {
      const stream = await open()
      const lp = lpStream(stream) // listen before sending: a reply may come at once
      stream.send(varint(MAX_MESSAGE_BYTES + 1))
      expect(errorOf([decodeNodeMsg((await lp.read({ signal: AbortSignal.timeout(10_000) })).subarray())])).toMatchObject({ code: 'TOO_LARGE' })
      await stream.close()
    }
    // Truncated: the prefix promises 1000 bytes, 10 come, then the writer closes.
    {
      const stream = await open()
      const lp = lpStream(stream)
      stream.send(varint(1000))
      stream.send(new Uint8Array(10))
      await stream.close()
      expect(errorOf([decodeNodeMsg((await lp.read({ signal: AbortSignal.timeout(10_000) })).subarray())])).toMatchObject({
        code: 'MALFORMED',
        message: expect.stringMatching(/truncated/)
      })
    }

    const r = await generation
    expect(r.tessera.tokens).toEqual(c.greedy.slice(0, c.decisive_prefix))
    // And it still serves new work afterwards.
    const again = await api(net.http, '/v1/completions', { prompt: c.prompt, max_tokens: 8 })
    expect(again.tessera.tokens).toEqual(c.greedy.slice(0, 8))
  })
})
