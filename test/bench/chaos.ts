/**
 * Chaos bench (measures, never asserts): the attacks of test/adversarial/ run against a real
 * multi-process network (`tessera relay` + `tessera node` children on loopback, stories260K in
 * three shards) while honest clients keep asking for completions. Per attack: how many attempts
 * were made and how many were refused, rate-limited or convicted; how many honest peers were
 * slashed; how many tokens came back wrong with an ok status; the honest requests' p50/p99
 * latency under attack divided by the same load on the idle network, measured just before; and
 * the relay's longest event-loop delay during the attack (its /metrics).
 *
 * Network A (`0-2`, `2-4`, `4-5`, one honest node each): session hog, registry flood, malformed
 * frames, HTTP limits, framing, a staller beside the honest [2, 4) node. Network B (`0-2` ×3, `2-5` ×3): a colluding pair with the same
 * wrong weights (`--fault wrong-weights=7`) joins [0, 2) for each verified mode in turn, fresh
 * identities each time (a blacklisted pair comes back under new keys, as a real cheater would).
 */
import { access } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { request } from 'node:http'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Libp2p, PrivateKey, Stream } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import { encode } from 'cborg'
import { encode as varint } from 'uint8-varint'
import { buildModel, readManifest } from '../../host/model-store.js'
import { createPeer } from '../../host/libp2p.js'
import { bytesToBase64 } from '../../shared/base64.js'
import { openRemoteHop, type HopTimeouts, type RemoteHop } from '../../shared/client/remote-hop.js'
import { MANIFEST_FILE } from '../../shared/manifest.js'
import { announce } from '../../shared/node/announce.js'
import type { Capability } from '../../shared/protocol/capability.js'
import { bytesOf, decodeNodeMsg, INFER_PROTOCOL, type NodeMsg } from '../../shared/protocol/infer.js'
import { MAX_MESSAGE_BYTES, MAX_STEP_TOKENS } from '../../shared/protocol/limits.js'
import { fillNormal, mulberry32 } from '../../shared/rng.js'
import { libp2pDialer } from '../../shared/route/directory.js'
import { encodeFingerprint, fingerprint } from '../../shared/verify/fingerprint.js'
import { openReceipt, signReceipt } from '../../shared/verify/receipt.js'
import { api, startNetwork, waitFor, type Proc, type TestNetwork } from '../helpers/network.js'
import { STORIES } from '../helpers/paths.js'
import { reference, stories } from '../helpers/reference.js'
import { lyingRecord } from '../helpers/lying-record.js'
import { kvLayout } from '../../shared/shard/build.js'

/** Honest requests per measurement (idle, then under attack), each `TOKENS` greedy tokens of reference case 0. */
const HONEST_N = 20
const TOKENS = 6
/** Under attack the honest load runs at least this long (and at least HONEST_N requests), so the attack has time to bite. */
const MIN_ATTACK_MS = 6000
/** What an attacker's own client waits for (remote-hop.ts); generous, this machine is shared by every process. */
const T: HopTimeouts = { openMs: 10_000, stepMs: 20_000, minStepMs: 10_000, minFirstStepMs: 20_000, lateMs: 20_000, slack: 20 }

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))
const round1 = (x: number): number => Math.round(x * 10) / 10
const round2 = (x: number): number => Math.round(x * 100) / 100

type Verification = string | { mode: string; k?: number; p?: number; audit?: number }

interface Sample {
  ok: boolean
  ms: number
  status: number
  /** ok, and the tokens are not the reference's. */
  wrong: boolean
  code?: string
  message?: string
  body: any
}

export interface ChaosRow {
  attack: string
  /** Attack attempts made. */
  tried: number
  /** Of those, refused, rate-limited, dropped or convicted. */
  caught: number
  /** Slashes of the honest nodes during the measurement (after minus before). */
  honestSlashed: number
  /** Requests (honest or attack) that came back with an ok status and tokens other than the reference's. */
  wrongTokens: number
  honestOk: number
  honestFailed: number
  idleP50: number
  idleP99: number
  p50: number
  p99: number
  p50Ratio: number
  p99Ratio: number
  notes: Record<string, unknown>
}

/** Nearest rank. */
function pct(xs: number[], q: number): number {
  if (xs.length === 0) return Number.NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.max(0, Math.ceil(q * s.length) - 1)]
}

async function complete(http: string, verification: Verification, expected: number[], prompt: number[]): Promise<Sample> {
  const t0 = performance.now()
  try {
    const res = await fetch(`${http}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt, max_tokens: expected.length, temperature: 0, verification })
    })
    const body = await res.json().catch(() => ({}))
    const ms = performance.now() - t0
    if (!res.ok) return { ok: false, ms, status: res.status, wrong: false, code: body?.error?.code, message: body?.error?.message, body }
    const tokens: number[] = body?.tessera?.tokens ?? []
    const wrong = tokens.length !== expected.length || tokens.some((t, i) => t !== expected[i])
    return { ok: true, ms, status: res.status, wrong, body }
  } catch (err) {
    const cause = (err as Error).cause as { code?: string; message?: string } | undefined
    return {
      ok: false,
      ms: performance.now() - t0,
      status: 0,
      wrong: false,
      code: (err as Error).message,
      message: cause?.code ?? cause?.message,
      body: undefined
    }
  }
}

/** At least `n` honest requests one after another, and for at least `minMs`. */
async function honestLoad(http: string, n: number, verification: Verification, minMs = 0): Promise<Sample[]> {
  const c = reference()[0]
  const expected = c.greedy.slice(0, Math.min(TOKENS, c.decisive_prefix))
  const out: Sample[] = []
  const until = performance.now() + minMs
  while (out.length < n || performance.now() < until) {
    out.push(await complete(http, verification, expected, c.prompt))
  }
  return out
}

async function slashes(http: string): Promise<Map<string, { slashed: number; blacklisted: boolean; stake: number }>> {
  const { standings } = await api(http, '/api/ledger')
  return new Map(standings.map((s: { peer: string; slashed: number; blacklisted: boolean; stake: number }) => [s.peer, s]))
}
const slashedOf = (m: Map<string, { slashed: number }>, peers: string[]): number => peers.reduce((a, p) => a + (m.get(p)?.slashed ?? 0), 0)

/**
 * The relay's longest event-loop delay since the last scrape, in ms (prom-client resets its
 * histogram on every read): read once before an attack to start the window, once after it.
 */
async function eventLoopLagMs(http: string): Promise<number> {
  const text = await (await fetch(`${http}/metrics`)).text()
  const line = text.split('\n').find((l) => l.startsWith('tessera_nodejs_eventloop_lag_max_seconds '))
  return line === undefined ? Number.NaN : Math.round(Number(line.split(' ')[1]) * 1000)
}

async function capabilities(http: string): Promise<Capability[]> {
  return (await api(http, '/api/network')).peers as Capability[]
}

/**
 * An attack: `start` before the honest load, then `round(i)` again and again while it runs (at least
 * once, at most `maxRounds`, `pauseMs` apart), then `stop`; `outcome` after.
 */
interface Attack {
  name: string
  pauseMs: number
  maxRounds: number
  start?(): Promise<void>
  round(i: number): Promise<void>
  stop?(): Promise<void>
  outcome(): { tried: number; caught: number; wrongTokens?: number; notes?: Record<string, unknown> }
}

interface Measured {
  idle: Sample[]
  during: Sample[]
  honestSlashed: number
}

function row(attack: string, m: Measured, o: ReturnType<Attack['outcome']>): ChaosRow {
  const okMs = (xs: Sample[]): number[] => xs.filter((s) => s.ok).map((s) => s.ms)
  const idleP50 = pct(okMs(m.idle), 0.5)
  const idleP99 = pct(okMs(m.idle), 0.99)
  const p50 = pct(okMs(m.during), 0.5)
  const p99 = pct(okMs(m.during), 0.99)
  const failures: Record<string, number> = {}
  const failureMessages: string[] = []
  for (const s of m.during.filter((x) => !x.ok)) {
    failures[s.code ?? String(s.status)] = (failures[s.code ?? String(s.status)] ?? 0) + 1
    if (failureMessages.length < 2 && s.message !== undefined) failureMessages.push(`${s.status} ${s.code}: ${s.message.slice(0, 200)}`)
  }
  return {
    attack,
    tried: o.tried,
    caught: o.caught,
    honestSlashed: m.honestSlashed,
    wrongTokens: m.during.filter((s) => s.wrong).length + (o.wrongTokens ?? 0),
    honestOk: m.during.filter((s) => s.ok).length,
    honestFailed: m.during.filter((s) => !s.ok).length,
    idleP50: round1(idleP50),
    idleP99: round1(idleP99),
    p50: round1(p50),
    p99: round1(p99),
    p50Ratio: round2(p50 / idleP50),
    p99Ratio: round2(p99 / idleP99),
    notes: {
      idleFailed: m.idle.filter((s) => !s.ok).length,
      idleWrong: m.idle.filter((s) => s.wrong).length,
      ...(Object.keys(failures).length > 0 ? { failures, failureMessages } : {}),
      ...o.notes
    }
  }
}

/** Idle baseline, then the attack with the same honest load beside it. */
async function measure(http: string, honest: string[], a: Attack, verification: Verification = 'none'): Promise<ChaosRow> {
  const idle = await honestLoad(http, HONEST_N, verification)
  const before = await slashes(http)
  await eventLoopLagMs(http)
  await a.start?.()
  let running = true
  let rounds = 0
  let roundErrors = 0
  let lastError: string | undefined
  const loop = (async () => {
    do {
      try {
        await a.round(rounds)
      } catch (err) {
        roundErrors++
        lastError = (err as Error).message.slice(0, 200)
      }
      rounds++
      if (running) await sleep(a.pauseMs)
    } while (running && rounds < a.maxRounds)
  })()
  let during: Sample[]
  try {
    during = await honestLoad(http, HONEST_N, verification, MIN_ATTACK_MS)
  } finally {
    running = false
    await loop
    await a.stop?.()
  }
  const lag = await eventLoopLagMs(http)
  const after = await slashes(http)
  const o = a.outcome()
  o.notes = { rounds, relayLagMaxMs: lag, ...(roundErrors > 0 ? { roundErrors, lastError } : {}), ...o.notes }
  return row(a.name, { idle, during, honestSlashed: slashedOf(after, honest) - slashedOf(before, honest) }, o)
}

// ---------------------------------------------------------------------------------------------
// Session hog (test/adversarial/session-hog.test.ts): one peer opens as many sessions as it can
// on every node and keeps each alive with a cheap step, asking for more all along.

function sessionHog(http: string, honest: string[], width: number): Attack {
  let attacker: Libp2p
  const held: Array<{ hop: RemoteHop; fed: number }> = []
  const heldPer: Record<string, number> = {}
  let caps: Capability[] = []
  let tried = 0
  let caught = 0
  let keepAliveFailed = 0
  const refusals: Record<string, number> = {}
  const input = (c: Capability): { tokens: number[] } | { hidden: Float32Array; seq: number } =>
    c.layers[0] === 0 ? { tokens: [7] } : { hidden: new Float32Array(width).fill(0.01), seq: 1 }
  const tryOpen = async (c: Capability, session: string): Promise<void> => {
    tried++
    try {
      const hop = await openRemoteHop(libp2pDialer(attacker), c, c.layers, c.root, session, T)
      await hop.forward(input(c), 0)
      held.push({ hop, fed: 1 })
      heldPer[c.peer.slice(-6)] = (heldPer[c.peer.slice(-6)] ?? 0) + 1
    } catch (err) {
      caught++
      const code = (err as { code?: string }).code ?? 'error'
      refusals[code] = (refusals[code] ?? 0) + 1
    }
  }
  return {
    name: 'session hog',
    pauseMs: 500,
    maxRounds: 200,
    async start() {
      attacker = await createPeer({ listen: [] })
      caps = (await capabilities(http)).filter((c) => honest.includes(c.peer))
      // Past the per-peer share (8) on every node at once.
      await Promise.all(
        caps.map(async (c) => {
          for (let i = 0; i < 12; i++) await tryOpen(c, `hog-${c.peer.slice(-4)}-${i}`)
        })
      )
    },
    async round(i) {
      // One cheap step on every held session (well inside the TTL), and one more open per node.
      for (const h of held) {
        try {
          await h.hop.forward(input(h.hop.peer), h.fed)
          h.fed++
        } catch {
          keepAliveFailed++
        }
      }
      await Promise.all(caps.map(async (c) => await tryOpen(c, `more-${c.peer.slice(-4)}-${i}`)))
    },
    async stop() {
      for (const h of held) h.hop.close()
      await sleep(200)
      await attacker.stop()
    },
    outcome: () => ({ tried, caught, notes: { sessionOpensTried: tried, heldPerNode: heldPer, refusals, keepAliveFailed } })
  }
}

// ---------------------------------------------------------------------------------------------
// Registry flood (test/adversarial/registry.test.ts): fresh identities announce records that claim
// 0 ms a layer, an expiry in the year 3000 and the layers an honest node serves, at addresses that
// go nowhere, and stay connected; every fourth record is sent by another peer than the one it
// names (a forged origin).

/** Records announced before the honest load starts. */
const PREFLOOD = 12

function registryFlood(http: string, relayAddr: string): Attack {
  const attackers: Libp2p[] = []
  const fakes: string[] = []
  let root = ''
  let model = ''
  let tried = 0
  let refused = 0
  let dropped = 0
  let stillListed = 0
  let expiryCapped = 0
  let goneAfterDisconnectMs = Number.NaN
  const refusals: string[] = []
  const refuse = (err: unknown): void => {
    refused++
    if (refusals.length < 2) refusals.push((err as Error).message.slice(0, 160))
  }
  /** One more record: from a fresh identity over its own connection, or (every fourth) over another identity's. */
  const one = async (): Promise<void> => {
    const i = tried++
    const key = await generateKeyPair('Ed25519')
    const peer = peerIdFromPrivateKey(key).toString()
    const forged = i % 4 === 3 && attackers.length > 0
    const via = forged ? attackers[0] : await createPeer({ privateKey: key, listen: [] })
    if (!forged) attackers.push(via)
    try {
      await announce(via, relayAddr, lyingRecord(peer, [`/ip4/127.0.0.1/tcp/1/ws/p2p/${peer}`], root, model), key, { attempts: 1 })
      fakes.push(peer)
    } catch (err) {
      refuse(err)
    }
  }
  return {
    name: 'registry flood',
    // libp2p takes 5 new connections a second from one host: one new identity each 250 ms.
    pauseMs: 250,
    maxRounds: 40,
    async start() {
      ;({ root, name: model } = (await api(http, '/api/models')).models[0])
      // A registry already full of fakes when the honest load starts, then more all along.
      for (let i = 0; i < PREFLOOD; i++) {
        await one()
        await sleep(250)
      }
    },
    round: one,
    async stop() {
      // The relay's view is refreshed each second: what it lists now, with every attacker still connected.
      await sleep(1500)
      const listed = await capabilities(http)
      const now = Date.now()
      for (const f of fakes) {
        const p = listed.find((c) => c.peer === f)
        if (p === undefined) dropped++
        else {
          stillListed++
          if (p.expires <= now + 31_000) expiryCapped++
        }
      }
      const t0 = performance.now()
      for (const a of attackers.splice(0)) await Promise.resolve(a.stop()).catch(() => {})
      await waitFor(async () => {
        const ids = new Set((await capabilities(http)).map((c) => c.peer))
        return fakes.every((f) => !ids.has(f))
      }, 15_000).then(
        () => {
          goneAfterDisconnectMs = Math.round(performance.now() - t0)
        },
        () => {}
      )
    },
    outcome: () => ({
      tried,
      caught: refused + dropped,
      notes: {
        recordsAnnounced: tried,
        refusedAtAnnounce: refused,
        droppedWhileConnected: dropped,
        stillListedAtEnd: stillListed,
        listedWithCappedExpiry: expiryCapped,
        allGoneAfterDisconnectMs: goneAfterDisconnectMs,
        refusals
      }
    })
  }
}

// ---------------------------------------------------------------------------------------------
// Malformed frames straight to a node (test/adversarial/malformed.test.ts, test/adversarial.test.ts).

type Frame = object | { raw: Uint8Array }
interface FrameCase {
  name: string
  frames: Frame[]
  hangUp: boolean
}

function frameCases(root: string, layers: [number, number], width: number): FrameCase[] {
  const lp = (b: Uint8Array): Uint8Array => Uint8Array.of(...varint(b.length), ...b)
  const open = { t: 'open', root, layers, session: 'x' }
  const first = layers[0] === 0
  return [
    { name: 'a length prefix cut short', frames: [{ raw: Uint8Array.of(0x80) }], hangUp: true },
    { name: 'a length prefix longer than any length', frames: [{ raw: new Uint8Array(12).fill(0xff) }], hangUp: false },
    { name: 'a length over the limit', frames: [{ raw: varint(MAX_MESSAGE_BYTES + 1) }], hangUp: false },
    { name: 'a body cut short', frames: [{ raw: Uint8Array.of(...varint(1000), ...new Uint8Array(10)) }], hangUp: true },
    { name: 'an empty frame', frames: [{ raw: Uint8Array.of(0) }], hangUp: false },
    { name: 'not CBOR', frames: [{ raw: Uint8Array.of(4, 0xff, 0xfe, 0x00, 0x13) }], hangUp: false },
    { name: 'JSON', frames: [{ raw: lp(new TextEncoder().encode(JSON.stringify(open))) }], hangUp: false },
    { name: 'CBOR, not a map', frames: [[1, 2]], hangUp: false },
    { name: 'an unknown type', frames: [{ t: 'launch' }], hangUp: false },
    { name: 'a root that is a number', frames: [{ ...open, root: 7 }], hangUp: false },
    { name: 'layers backwards', frames: [{ ...open, layers: [layers[1], layers[0]] }], hangUp: false },
    { name: 'another model', frames: [{ ...open, root: 'ab'.repeat(32) }], hangUp: false },
    { name: 'layers it does not hold', frames: [{ ...open, layers: first ? [2, 4] : [0, 2] }], hangUp: false },
    { name: 'forward before open', frames: [{ t: 'forward', step: 0, start: 0, seq: 1, tokens: bytesOf(Int32Array.of(1)) }], hangUp: false },
    {
      name: 'a step that does not continue the cache',
      frames: [
        open,
        first
          ? { t: 'forward', step: 0, start: 5, seq: 1, tokens: bytesOf(Int32Array.of(1)) }
          : { t: 'forward', step: 0, start: 5, seq: 1, hidden: new Uint8Array(width * 4) }
      ],
      hangUp: false
    },
    {
      name: first ? 'a token outside the vocabulary' : 'hidden states of the wrong size',
      frames: [
        open,
        first
          ? { t: 'forward', step: 0, start: 0, seq: 1, tokens: bytesOf(Int32Array.of(9999)) }
          : { t: 'forward', step: 0, start: 0, seq: 2, hidden: new Uint8Array(width * 4) }
      ],
      hangUp: false
    },
    { name: 'a seq of 0', frames: [{ t: 'forward', step: 0, start: 0, seq: 0, tokens: new Uint8Array(0) }], hangUp: false },
    {
      name: 'more tokens than a step may carry',
      frames: [open, { t: 'forward', step: 0, start: 0, seq: MAX_STEP_TOKENS + 1, tokens: new Uint8Array((MAX_STEP_TOKENS + 1) * 4) }],
      hangUp: false
    }
  ]
}

/** Sends the frames, returns every reply until the stream ends (or 5 s pass). */
async function exchange(attacker: Libp2p, c: Capability, fc: FrameCase): Promise<{ replies: NodeMsg[]; end: string }> {
  const stream: Stream = await attacker.dialProtocol(
    c.addrs.map((a) => multiaddr(a)),
    INFER_PROTOCOL
  )
  const lp = lpStream(stream, { maxDataLength: MAX_MESSAGE_BYTES })
  try {
    for (const f of fc.frames) {
      if ('raw' in f && f.raw instanceof Uint8Array) stream.send(f.raw)
      else await lp.write(encode(f))
    }
    if (fc.hangUp) await stream.close()
    const replies: NodeMsg[] = []
    for (;;) {
      const r = await lp.read({ signal: AbortSignal.timeout(5000) }).catch((e: Error) => e)
      if (r instanceof Error) return { replies, end: r.name }
      replies.push(decodeNodeMsg(r.subarray()))
    }
  } finally {
    await stream.close().catch(() => stream.abort(new Error('done')))
  }
}

function malformedFrames(http: string, honest: string[], width: number): Attack {
  let attacker: Libp2p
  let caps: Capability[] = []
  let tried = 0
  let caught = 0
  const codes: Record<string, number> = {}
  const missed: string[] = []
  return {
    name: 'malformed frames',
    pauseMs: 20,
    maxRounds: 400,
    async start() {
      attacker = await createPeer({ listen: [] })
      caps = (await capabilities(http)).filter((c) => honest.includes(c.peer))
    },
    async round(i) {
      const c = caps[i % caps.length]
      const cases = frameCases(c.root, c.layers, width)
      const fc = cases[Math.floor(i / caps.length) % cases.length]
      tried++
      const { replies, end } = await exchange(attacker, c, fc)
      const err = replies.find((r) => r.t === 'error') as { code: string } | undefined
      // Refused: an error reply, nothing computed, and the node ended the stream (not a time-out).
      if (err !== undefined && !replies.some((r) => r.t === 'result') && end !== 'TimeoutError') {
        caught++
        codes[err.code] = (codes[err.code] ?? 0) + 1
      } else if (missed.length < 5) missed.push(`${fc.name} → ${replies.map((r) => r.t).join(',')} then ${end}`)
    },
    async stop() {
      await attacker.stop()
    },
    outcome: () => ({
      tried,
      caught,
      notes: { framesSent: tried, classes: frameCases('', [0, 2], width).length, codes, ...(missed.length > 0 ? { missed } : {}) }
    })
  }
}

// ---------------------------------------------------------------------------------------------
// The HTTP API's limits (test/adversarial/limits.test.ts): a giant prompt, an oversized body,
// deeply nested JSON, out-of-range token ids, a verification option of the wrong type.

/**
 * A POST on a connection of its own (no keep-alive pool shared with the honest clients: a socket the
 * relay closes after refusing a body would otherwise fail the next honest request sent on it).
 */
async function rawPost(url: string, body: string): Promise<number> {
  return await new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: 'POST', agent: false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
      (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
        res.on('error', reject)
      }
    )
    req.on('error', reject)
    req.end(body)
  })
}

function httpLimits(http: string): Attack {
  const N = 100_000
  const bodies: Array<[string, string, string, number]> = [
    ['giant prompt', '/v1/completions', JSON.stringify({ prompt: Array(MAX_STEP_TOKENS + 1).fill(1), max_tokens: 1 }), 400],
    ['2 MiB body', '/v1/completions', JSON.stringify({ prompt: [1], padding: 'x'.repeat(2 * 2 ** 20) }), 413],
    ['2 MiB evidence', '/api/evidence', JSON.stringify({ kind: 'redundant', accused: 'x', receipts: [], padding: 'x'.repeat(2 * 2 ** 20) }), 413],
    ['nested array', '/v1/completions', '['.repeat(N) + ']'.repeat(N), 400],
    ['nested object', '/v1/chat/completions', '{"a":'.repeat(N) + '1' + '}'.repeat(N), 400],
    ['nested evidence', '/api/evidence', `{"kind":"redundant","accused":"x","receipts":[],"detail":${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}}`, 400],
    ['token id 2^31', '/v1/completions', JSON.stringify({ prompt: [1, 2 ** 31], max_tokens: 1 }), 400],
    ['k as a string', '/v1/completions', JSON.stringify({ prompt: [1], max_tokens: 1, verification: { mode: 'redundant', k: '3' } }), 400]
  ]
  let tried = 0
  let caught = 0
  let served = 0
  const statuses: Record<string, Record<string, number>> = {}
  return {
    name: 'oversized / nested bodies',
    pauseMs: 20,
    maxRounds: 400,
    async round(i) {
      const [name, path, body, want] = bodies[i % bodies.length]
      tried++
      statuses[name] ??= {}
      let status: string
      try {
        const code = await rawPost(http + path, body)
        status = String(code)
        if (code === want) caught++
        if (code >= 200 && code < 300) served++
      } catch (err) {
        // The relay answers an oversized body before reading it and closes the connection: the
        // client may see that (EPIPE, ECONNRESET) before it reads the 413. Refused either way.
        status = `socket: ${(err as { code?: string }).code ?? (err as Error).message}`
        if (want === 413) caught++
      }
      statuses[name][status] = (statuses[name][status] ?? 0) + 1
    },
    outcome: () => ({ tried, caught, notes: { requestsSent: tried, servedOk: served, statuses } })
  }
}

// ---------------------------------------------------------------------------------------------
// Framing (test/adversarial/framing.test.ts): one real receipt of an honest node, taken as an
// ordinary client would, plus two "witness" receipts signed by fresh keys that say otherwise,
// posted to POST /api/evidence by a made-up reporter; with the hop's real inputs (the relay then
// re-executes it) or without them (which a relay holding the model refuses outright).

function framing(http: string, honest: string[]): Attack {
  const c = reference()[0]
  const prompt = c.prompt
  let attacker: Libp2p
  let first: Capability
  let middle: Capability | undefined
  let tried = 0
  let caught = 0
  let convicted = 0
  let reporterStake = Number.NaN
  const outcomes: Record<string, number> = {}
  const reasons: string[] = []
  const count = (k: string): void => {
    outcomes[k] = (outcomes[k] ?? 0) + 1
  }
  const fresh = async (): Promise<{ key: PrivateKey; peer: string }> => {
    const key = await generateKeyPair('Ed25519')
    return { key, peer: peerIdFromPrivateKey(key).toString() }
  }
  return {
    name: 'framing (fake witnesses)',
    pauseMs: 150,
    maxRounds: 12,
    async start() {
      attacker = await createPeer({ listen: [] })
      const caps = (await capabilities(http)).filter((x) => honest.includes(x.peer))
      first = caps.find((x) => x.layers[0] === 0)!
      middle = caps.find((x) => x.layers[0] === first.layers[1])
    },
    async round(i) {
      // A real step of the honest node: [0, 2) over the prompt, or, every other time, the next hop fed [0, 2)'s output.
      const h0 = await openRemoteHop(libp2pDialer(attacker), first, first.layers, first.root, `frame-a-${i}`, T)
      const out0 = await h0.forward({ tokens: prompt }, 0)
      h0.close()
      let target = first
      let out = out0
      let inputs: { tokens?: number[]; hidden?: string; seq: number } = { tokens: prompt, seq: prompt.length }
      if (i % 2 === 1 && middle !== undefined) {
        const h1 = await openRemoteHop(libp2pDialer(attacker), middle, middle.layers, middle.root, `frame-b-${i}`, T)
        out = await h1.forward({ hidden: out0.data, seq: out0.seq }, 0)
        h1.close()
        target = middle
        inputs = { hidden: bytesToBase64(bytesOf(out0.data)), seq: out0.seq }
      }
      const body = await openReceipt(out.receipt)
      const lie = encodeFingerprint(fingerprint(fillNormal(new Float32Array(out.seq * out.width), mulberry32(1000 + i), 1), out.seq, out.width))
      const witnesses: Uint8Array[] = []
      for (let w = 0; w < 2; w++) {
        const f = await fresh()
        const { trace: _trace, ...rest } = body
        witnesses.push(await signReceipt({ ...rest, peer: f.peer, output: lie }, async (b) => await f.key.sign(b)))
      }
      // Every third attempt without the inputs (the witness rule alone), the others with them.
      const withInputs = i % 3 !== 0
      tried++
      const res = await fetch(`${http}/api/evidence`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          kind: 'redundant',
          accused: target.peer,
          receipts: [out.receipt, ...witnesses].map(bytesToBase64),
          detail: {},
          reporter: 'mallory',
          ...(withInputs ? { inputs } : {})
        })
      })
      const reply = await res.json().catch(() => ({}))
      if (res.status === 429) {
        caught++
        count('rate-limited (429)')
      } else if (res.status === 200 && reply.slashed === false) {
        caught++
        count(
          withInputs
            ? Array.isArray(reply.matches) && reply.matches.includes(target.peer)
              ? 're-executed: honest receipt matches'
              : 'refused (inputs)'
            : 'refused (no inputs)'
        )
        if (reasons.length < 2 || (withInputs && reasons.length < 3)) reasons.push(String(reply.reason).slice(0, 160))
      } else if (res.status === 200 && reply.slashed === true) {
        convicted++
        count('SLASHED')
      } else {
        caught++
        count(`refused (${res.status})`)
      }
    },
    async stop() {
      await attacker.stop()
      reporterStake = (await slashes(http)).get('mallory')?.stake ?? 0
    },
    outcome: () => ({ tried, caught, notes: { evidencePosted: tried, outcomes, honestConvicted: convicted, reporterStakeAfter: reporterStake, reasons } })
  }
}

// ---------------------------------------------------------------------------------------------
// A colluding pair: two nodes with the same wrong weights on [0, 2) beside three honest ones.
// The generations of the verified mode are the honest requests here (a `none` request would trust
// whoever serves it); their idle baseline is the same mode before the pair joins.

/** Colluding pairs a row may use: a pair caught is replaced by a fresh one (new keys), as a real cheater would come back. */
const PAIRS = 3

async function collusion(net: TestNetwork, honest: string[], label: string, verification: Verification): Promise<ChaosRow> {
  const c = reference()[0]
  const expected = c.greedy.slice(0, Math.min(TOKENS, c.decisive_prefix))
  const idle = await honestLoad(net.http, HONEST_N, verification)
  const before = await slashes(net.http)
  await eventLoopLagMs(net.http)
  const logFrom = net.relay.log.length
  const spawnPair = async (): Promise<Proc[]> => await Promise.all([0, 1].map(async () => await net.addNode('0-2', ['--fault', 'wrong-weights=7'])))
  const pairs: Proc[][] = []
  const colluders: string[] = []
  const during: Sample[] = []
  let tried = 0
  let caught = 0
  let refusedVerification = 0
  let caughtInResult = 0
  let escaped = 0
  let wrongDespiteFault = 0 // ok, wrong tokens, yet a colluder named in the faults: counted caught, kept apart
  const escapes: unknown[] = []
  let spawnMs = 0
  const next = async (): Promise<void> => {
    for (const p of pairs.at(-1) ?? []) if (p.proc.exitCode === null) p.proc.kill('SIGKILL')
    const t0 = performance.now()
    const pair = await spawnPair()
    spawnMs += performance.now() - t0
    pairs.push(pair)
    colluders.push(...pair.map((p) => p.ready.peer as string))
  }
  try {
    await next()
    const until = performance.now() + MIN_ATTACK_MS
    while (during.length < HONEST_N || performance.now() < until) {
      const s = await complete(net.http, verification, expected, c.prompt)
      during.push(s)
      const current = pairs.at(-1)!.map((p) => p.ready.peer as string)
      let caughtNow = false
      if (!s.ok) {
        // A refusal is the mode doing its job when it says so (only the pair can be at fault); anything else is a plain failure.
        if (s.code === 'VERIFICATION_FAILED') {
          tried++
          caught++
          refusedVerification++
          caughtNow = true
        }
      } else {
        const v = s.body?.tessera?.verification ?? {}
        const involved = new Set<string>()
        for (const h of v.hops ?? []) for (const p of [...(h.ranBy ?? []), ...(h.checkedBy ?? [])]) involved.add(p)
        for (const f of v.faults ?? []) involved.add(f.accused)
        if (colluders.some((p) => involved.has(p))) {
          tried++
          if ((v.faults ?? []).some((f: { accused: string }) => colluders.includes(f.accused))) {
            caught++
            caughtInResult++
            caughtNow = (v.faults ?? []).some((f: { accused: string }) => current.includes(f.accused))
            if (s.wrong) wrongDespiteFault++
          } else if (s.wrong) {
            escaped++
            // The open trust bug (README "Under attack"): keep what the client said of the generation that got through.
            if (escapes.length < 3) escapes.push({ verification: v, colluders: [...colluders] })
            console.error(`ESCAPED WRONG: ${JSON.stringify({ verification: v, colluders })}`)
          }
        }
      }
      // Caught pairs are banned by the client and lose reputation: a cheater comes back under new keys.
      if (caughtNow && pairs.length < PAIRS) await next()
    }
  } finally {
    for (const pair of pairs) for (const p of pair) if (p.proc.exitCode === null) p.proc.kill('SIGKILL')
  }
  const lag = await eventLoopLagMs(net.http)
  const after = await slashes(net.http)
  const o = {
    tried,
    caught,
    notes: {
      relayLagMaxMs: lag,
      generations: during.length,
      withColluders: tried,
      pairsUsed: pairs.length,
      pairStartMs: Math.round(spawnMs / Math.max(1, pairs.length)),
      refusedVerificationFailed: refusedVerification,
      caughtAndOutvoted: caughtInResult,
      escapedWrong: escaped,
      wrongDespiteFault,
      escapes,
      colluderSlashes: colluders.map((p) => after.get(p)?.slashed ?? 0),
      colludersBlacklisted: colluders.filter((p) => after.get(p)?.blacklisted === true).length,
      // Steps whose sampled audit or check could not run (the relay's log says why): those went on unchecked.
      uncheckedSamples: net.relay.log.slice(logFrom).filter((l) => l.includes('a sampled check could not run')).length,
      lastUnchecked: net.relay.log
        .slice(logFrom)
        .filter((l) => l.includes('a sampled check could not run'))
        .slice(-2)
        .map((l) => l.slice(0, 300))
    }
  }
  // Let the registry forget the pairs (their connections closed) before the next measurement.
  await waitFor(async () => {
    const ids = new Set((await capabilities(net.http)).map((x) => x.peer))
    return colluders.every((p) => !ids.has(p))
  }, 15_000).catch(() => {})
  return row(label, { idle, during, honestSlashed: slashedOf(after, honest) - slashedOf(before, honest) }, o)
}

// ---------------------------------------------------------------------------------------------
// A staller (test/adversarial/slow-peer.test.ts): a second node on [2, 4) whose every result is
// sent SLOW_MS late. Its steps are due by its measured speed, so it is failed over, not waited on.

const SLOW_MS = 6000

async function slowPeer(net: TestNetwork, honest: string[]): Promise<ChaosRow> {
  const idle = await honestLoad(net.http, HONEST_N, 'none')
  const before = await slashes(net.http)
  await eventLoopLagMs(net.http)
  const staller = await net.addNode('2-4', ['--fault', `slow=${SLOW_MS}`])
  const id = staller.ready.peer as string
  const during: Sample[] = []
  let tried = 0
  let caught = 0
  try {
    const c = reference()[0]
    const expected = c.greedy.slice(0, Math.min(TOKENS, c.decisive_prefix))
    const until = performance.now() + MIN_ATTACK_MS
    while (during.length < HONEST_N || performance.now() < until) {
      const s = await complete(net.http, 'none', expected, c.prompt)
      during.push(s)
      const switches: Array<{ failed: string }> = s.body?.tessera?.route?.switches ?? []
      if (JSON.stringify(s.body ?? {}).includes(id)) tried++
      if (switches.some((w) => w.failed === id)) caught++
    }
  } finally {
    staller.proc.kill('SIGKILL')
  }
  const lag = await eventLoopLagMs(net.http)
  const after = await slashes(net.http)
  const o = {
    tried,
    caught,
    notes: {
      relayLagMaxMs: lag,
      slowMs: SLOW_MS,
      generationsThroughStaller: tried,
      failedOver: caught,
      stallerSlashed: after.get(id)?.slashed ?? 0,
      stallerReputation: (await api(net.http, '/api/ledger')).standings.find((x: { peer: string }) => x.peer === id)?.reputation
    }
  }
  return row(`slow peer (${SLOW_MS / 1000} s a step)`, { idle, during, honestSlashed: slashedOf(after, honest) - slashedOf(before, honest) }, o)
}

// ---------------------------------------------------------------------------------------------

async function ensureStories(cacheDir: string): Promise<string> {
  const dir = join(cacheDir, `stories260K-cuts-2-4-${kvLayout()}`) // the default layout in the name: a build made under another default must not stand in
  const built = await access(join(dir, MANIFEST_FILE)).then(
    () => true,
    () => false
  )
  if (!built) {
    console.error(`building stories260K (cuts 2, 4) into ${dir} …`)
    await buildModel(await stories(), dir, { source: 'stories260K.bin', cuts: [2, 4] })
  }
  return dir
}

/** Waits until the relay lists exactly the honest nodes (an attack's leftovers gone). */
async function settled(http: string, honest: string[]): Promise<void> {
  await waitFor(async () => {
    const ids = (await capabilities(http)).map((c) => c.peer)
    return honest.every((p) => ids.includes(p)) && ids.length === honest.length
  }, 20_000).catch(() => console.error('chaos: the network did not settle to its honest nodes in 20 s; measuring anyway'))
}

function print(r: ChaosRow): void {
  const cell = (s: string | number, n: number): string => String(s).padStart(n)
  console.log(
    `${r.attack.padEnd(30)}${cell(r.tried, 6)}${cell(r.caught, 7)}${cell(r.honestSlashed, 9)}${cell(r.wrongTokens, 7)}` +
      `${cell(`${r.honestOk}/${r.honestOk + r.honestFailed}`, 9)}${cell(r.idleP50.toFixed(0), 9)}${cell(r.p50.toFixed(0), 7)}${cell(r.p50Ratio.toFixed(2), 7)}` +
      `${cell(r.idleP99.toFixed(0), 9)}${cell(r.p99.toFixed(0), 7)}${cell(r.p99Ratio.toFixed(2), 7)}`
  )
  console.log(`${''.padEnd(4)}${JSON.stringify(r.notes)}`)
}

function header(): void {
  console.log(
    `${'attack'.padEnd(30)}${'tried'.padStart(6)}${'caught'.padStart(7)}${'h.slash'.padStart(9)}${'wrong'.padStart(7)}${'ok'.padStart(9)}` +
      `${'idle p50'.padStart(9)}${'p50'.padStart(7)}${'×'.padStart(7)}${'idle p99'.padStart(9)}${'p99'.padStart(7)}${'×'.padStart(7)}`
  )
}

export async function benchChaos(cacheDir: string): Promise<Record<string, unknown>> {
  if (!existsSync(STORIES)) {
    console.log(`chaos: skipped, ${STORIES} is missing`)
    return { skipped: `${STORIES} missing` }
  }
  const t0 = performance.now()
  const dir = await ensureStories(cacheDir)
  const width = (await readManifest(dir)).config.dim
  console.log(
    `stories260K in 3 shards, real processes on loopback; per measurement ${HONEST_N} honest /v1/completions of ${TOKENS} greedy tokens` +
      ' (reference case 0), sequential, idle first then beside the attack; latencies in ms (nearest rank)'
  )
  const rows: ChaosRow[] = []
  const started = (s: number): string => `${((performance.now() - s) / 1000).toFixed(1)} s`

  // Network A: one honest node per shard, mode none.
  let s = performance.now()
  let net = await startNetwork(dir, ['0-2', '2-4', '4-5'])
  try {
    console.log(`network A up in ${started(s)}: relay + nodes 0-2, 2-4, 4-5; honest load verification "none"`)
    const honest = net.nodes.map((n) => n.ready.peer as string)
    await honestLoad(net.http, 3, 'none') // warm-up: first sessions, speed measurements
    header()
    for (const attack of [
      sessionHog(net.http, honest, width),
      registryFlood(net.http, net.relayAddr),
      malformedFrames(net.http, honest, width),
      httpLimits(net.http),
      framing(net.http, honest)
    ]) {
      await settled(net.http, honest)
      const r = await measure(net.http, honest, attack)
      rows.push(r)
      print(r)
    }
    await settled(net.http, honest)
    const r = await slowPeer(net, honest)
    rows.push(r)
    print(r)
  } finally {
    await net.stop()
  }

  // Network B: three honest nodes on each slot, so k = 3 has an honest route; a colluding pair joins [0, 2) per mode.
  s = performance.now()
  net = await startNetwork(dir, ['0-2', '0-2', '0-2', '2-5', '2-5', '2-5'])
  try {
    console.log(`network B up in ${started(s)}: relay + nodes 0-2 ×3, 2-5 ×3; + 2 nodes --fault wrong-weights=7 on 0-2 per row (fresh keys)`)
    const honest = net.nodes.map((n) => n.ready.peer as string)
    await honestLoad(net.http, 3, { mode: 'redundant', k: 2 })
    header()
    for (const [label, v] of [
      ['collusion redundant k=2 audit=1', { mode: 'redundant', k: 2, audit: 1 }],
      ['collusion redundant k=3', { mode: 'redundant', k: 3 }],
      ['collusion spot p=0.2', { mode: 'spot', p: 0.2 }]
    ] as Array<[string, Verification]>) {
      await settled(net.http, honest)
      const r = await collusion(net, honest, label, v)
      r.notes = { verification: v, ...r.notes }
      rows.push(r)
      print(r)
    }
  } finally {
    await net.stop()
  }
  const wallS = Math.round((performance.now() - t0) / 100) / 10
  console.log(`chaos: ${rows.length} attacks in ${wallS} s`)
  return { honestRequests: HONEST_N, tokens: TOKENS, wallS, attacks: rows }
}
