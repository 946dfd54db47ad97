/**
 * Node-to-node forwarding (node/handoff.ts) on stories260K in three hops, through the real client
 * and handlers in process: every hop's rows but the first come from the hop before, the client
 * still checks every receipt against what it got, and greedy tokens are the reference ids. A hop
 * killed mid-generation is replaced as without forwarding; a faulty middle hop is caught by
 * redundant and spot; an upstream that hands the next hop other rows than it sends the client
 * (framing it), or hands it nothing, changes no token and gets nobody accused; a stranger's rows
 * are never taken.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { streamPair } from '@libp2p/utils'
import { lpStream } from '@libp2p/utils'
import { buildStories, modelRunners, type ModelRunners } from '../helpers/memory-model.js'
import { memoryNet, type MemoryNet, type MemoryPeer } from '../helpers/memory-net.js'
import { generateAll, memoryClient } from '../helpers/memory-client.js'
import { reference } from '../helpers/reference.js'
import { modelDraft } from '../../shared/client/draft.js'
import { HANDOFF_PROTOCOL, encodeMsg } from '../../shared/protocol/infer.js'
import { Inbox } from '../../shared/node/handoff.js'

let model: ModelRunners
const c = reference()[0]
const n = c.decisive_prefix
const HOPS: Array<[number, number]> = [
  [0, 2],
  [2, 4],
  [4, 5]
]

beforeAll(async () => {
  model = await modelRunners(await buildStories([2, 4]))
})
afterAll(async () => {
  await model?.dispose()
})

/** `perHop` peers on each of the three hops; `fault` on the cheapest peer of the middle hop (the route's). */
async function network(perHop = 1, fault?: string): Promise<{ net: MemoryNet; middle: MemoryPeer }> {
  const net = memoryNet(model)
  let middle: MemoryPeer | undefined
  for (let i = 0; i < perHop; i++) {
    for (const layers of HOPS) {
      const p = await net.add({ layers, msPerLayer: 1 + i, ...(layers[0] === 2 && i === 0 && fault !== undefined ? { fault } : {}) })
      if (layers[0] === 2 && i === 0) middle = p
    }
  }
  return { net, middle: middle! }
}

const handed = (net: MemoryNet): { in: number; out: number; supplied: number } =>
  net.peers.reduce(
    (s, p) => ({ in: s.in + p.handler.stats.handedIn, out: s.out + p.handler.stats.handedOut, supplied: s.supplied + p.handler.stats.supplied }),
    {
      in: 0,
      out: 0,
      supplied: 0
    }
  )

describe('forwarding node to node', () => {
  it('returns the reference ids with every hop after the first fed by the hop before', async () => {
    const { net } = await network()
    try {
      const r = await generateAll(memoryClient(net), { prompt: c.prompt, maxTokens: n, forward: true })
      expect(r.tokens).toEqual(c.greedy.slice(0, n))
      // A prefill step and n - 1 decode steps, each handed on at two boundaries; nothing supplied by the client.
      const steps = Math.ceil(c.prompt.length / 64) + n - 1
      expect(handed(net)).toEqual({ in: 2 * steps, out: 2 * steps, supplied: 0 })
      expect(net.dials.filter((d) => d.protocol === HANDOFF_PROTOCOL).length).toBe(2) // one stream per boundary, kept
      expect(r.route.hops.map((h) => h.handedBy)).toEqual([undefined, r.route.hops[0].peer, r.route.hops[1].peer])
      expect(r.forwarded).toEqual({ steps, dropped: 0 })

      // The same request through the client: the same ids, nothing handed on.
      const before = handed(net)
      const plain = await generateAll(memoryClient(net), { prompt: c.prompt, maxTokens: n })
      expect(plain.tokens).toEqual(r.tokens)
      expect(handed(net)).toEqual(before)
    } finally {
      net.stop()
    }
  })

  it('replaces a forwarded hop killed mid-generation (the switch in the route), and speculates over forwarded steps', async () => {
    const { net, middle } = await network(2)
    const draft = modelDraft((await model.forPeer([0, 5])).runners)
    try {
      middle.onStep = (served) => {
        if (served === Math.floor(n / 2)) middle.kill()
      }
      const r = await generateAll(memoryClient(net), { prompt: c.prompt, maxTokens: n, forward: true })
      expect(r.tokens).toEqual(c.greedy.slice(0, n))
      expect(r.route.switches.some((s) => s.failed === middle.id)).toBe(true)
      expect(r.route.hops[1].peer).not.toBe(middle.id)
      expect(r.route.hops[2].handedBy).toBe(r.route.hops[1].peer) // the replacement hands on in turn

      const s = await generateAll(memoryClient(net, { draft }), { prompt: c.prompt, maxTokens: n, forward: true, speculate: { gamma: 4 } })
      expect(s.tokens).toEqual(c.greedy.slice(0, n))
      expect(s.speculation?.kept).toBe(s.speculation?.drafted)
    } finally {
      draft.close()
      net.stop()
    }
  })

  for (const mode of ['redundant', 'spot'] as const) {
    it(`${mode} catches a faulty middle hop in forwarded steps, and accuses nobody else`, async () => {
      const { net, middle } = await network(3, 'random-output')
      try {
        const verification = mode === 'redundant' ? { mode, k: 2 } : { mode, p: 1 }
        // Draws always take the cheapest peer: the faulty one is a lane (redundant) or the primary (spot).
        const r = await generateAll(memoryClient(net, { random: () => 0 }), { prompt: c.prompt, maxTokens: n, forward: true, verification })
        expect(r.tokens).toEqual(c.greedy.slice(0, n))
        expect(r.verification.faults.length).toBeGreaterThan(0)
        expect(new Set(r.verification.faults.map((f) => f.accused))).toEqual(new Set([middle.id]))
        expect(r.route.hops.every((h) => h.peer !== middle.id)).toBe(true)
        expect(handed(net).in).toBeGreaterThan(0) // forwarding went on around the fault
        expect(r.forwarded!.dropped).toBeGreaterThan(0) // steps where the faulty lane had handed on went on through the client
        expect(r.forwarded!.dropped).toBeLessThan(r.forwarded!.steps)
      } finally {
        net.stop()
      }
    })
  }

  for (const fault of ['two-faced', 'withhold'] as const) {
    it(`an upstream that is ${fault} changes no token and gets its honest downstream accused of nothing`, async () => {
      const { net, middle } = await network(1, fault)
      try {
        const r = await generateAll(memoryClient(net, { timeouts: { lateMs: 200 } }), {
          prompt: c.prompt,
          maxTokens: 6,
          forward: true
        })
        expect(r.tokens).toEqual(c.greedy.slice(0, 6))
        expect(r.verification.faults).toEqual([])
        expect(r.route.switches).toEqual([]) // nobody failed over: the last hop is honest
        const last = net.peers.find((p) => p.layers[0] === 4)!
        if (fault === 'withhold') {
          expect(last.handler.stats.supplied).toBe(r.forwarded?.steps) // the client sent what never came, each step
          expect(r.forwarded?.dropped).toBe(0)
        } else {
          expect(last.handler.stats.handedIn).toBeGreaterThan(0) // it took the noise, and the client ran the step again itself
          expect(r.forwarded?.dropped).toBe(r.forwarded?.steps)
        }
        expect(middle.handler.stats.handedOut).toBe(fault === 'withhold' ? 0 : middle.handler.stats.steps)
      } finally {
        net.stop()
      }
    })
  }

  it('takes rows only from the peer the client named, at the position it named', async () => {
    const inbox = new Inbox()
    const rows = (x: number): Uint8Array => new Uint8Array([x, 0, 0, 0])
    inbox.put({ from: 'stranger', start: 3, seq: 1, hidden: rows(1) })
    inbox.put({ from: 'upstream', start: 2, seq: 1, hidden: rows(2) }) // an old position
    const wait = inbox.take('upstream', 3, 1)
    let got: Uint8Array | undefined
    void wait.got.then((h) => {
      got = h.hidden
    })
    await new Promise((r) => setImmediate(r))
    expect(got).toBeUndefined()
    inbox.put({ from: 'upstream', start: 3, seq: 1, hidden: rows(3) })
    await new Promise((r) => setImmediate(r))
    expect(got).toEqual(rows(3))

    // Over the wire: a handoff to an inbox nobody opened is refused with NOT_FOUND and taken nowhere.
    const { net } = await network()
    try {
      const target = net.peers[1]
      const [out, inbound] = await streamPair({ protocol: HANDOFF_PROTOCOL })
      const served = target.handler.handleHandoff(inbound, { remotePeer: { toString: () => net.peers[0].id } } as never)
      const lp = lpStream(out)
      await lp.write(encodeMsg({ t: 'handoff', inbox: 'h-nobody', start: 0, seq: 1, hidden: new Uint8Array(4 * model.manifest.config.dim) }))
      const reply = new TextDecoder().decode((await lp.read()).subarray())
      expect(reply).toMatch(/NOT_FOUND/)
      await served
      expect(target.handler.stats.handedIn).toBe(0)
    } finally {
      net.stop()
    }
  })
})
