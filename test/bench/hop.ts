/**
 * Where a hop's time goes, apart from the node's compute: each of our per-step stages timed on
 * its own at the hop's width (the very functions the client and serve.ts call, Node's native
 * crypto installed), and the transport floor: a bare libp2p echo between two processes, tight
 * and at the hop's own cadence (each round after the idle gap a node sees in a 2-node pipeline).
 */
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { lpStream } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import { nativeSigner } from '../../host/native-crypto.js'
import { createPeer } from '../../host/libp2p.js'
import { bytesOf, decodeClientMsg, decodeNodeMsg, encodeMsg } from '../../shared/protocol/infer.js'
import { lpLimits } from '../../shared/protocol/limits.js'
import { firstNonFinite } from '../../shared/protocol/infer.js'
import { chainRows, EMPTY_CHAIN, signReceipt, verifyReceipt } from '../../shared/verify/receipt.js'
import { encodeFingerprint, fingerprint } from '../../shared/verify/fingerprint.js'
import { layerLeaf, merkleRoot } from '../../shared/verify/merkle.js'
import { median } from './median.js'
import { ECHO_PROTOCOL, echo } from './echo-peer.js'
import { HOP_MARK_PREFIX, type HopMarkRecord } from '../../host/hop-marks.js'
import type { HopMark } from '../../shared/hop-marks.js'

export interface HopStage {
  side: 'client' | 'node'
  stage: string
  us: number
  /**
   * Whether it is on the hop's critical path (the overhead: round trip minus the node's compute): the
   * client hashes its input while the peer computes, and checks the receipt after the round trip is timed.
   */
  inOverhead?: false
}

/** Median µs of `f` over `n` calls after a warm-up. */
async function usOf(f: () => unknown, n = 2000): Promise<number> {
  const times: number[] = []
  for (let i = 0; i < n + 200; i++) {
    const t = performance.now()
    await f()
    if (i >= 200) times.push((performance.now() - t) * 1000)
  }
  return median(times)
}

/** Our stages of one decode step through a hop of `width` hidden values, in the order they run. */
export async function hopStages(width: number): Promise<HopStage[]> {
  const hidden = Float32Array.from({ length: width }, (_, i) => Math.sin(i * 0.37) * 3)
  const key = await generateKeyPair('Ed25519')
  const peer = peerIdFromPrivateKey(key).toString()
  const sign = nativeSigner(key)
  const fwd = encodeMsg({ t: 'forward', step: 3, start: 20, seq: 1, hidden: bytesOf(hidden) })
  const fp = encodeFingerprint(fingerprint(hidden, 1, width))
  const body = { peer, session: 'bench-session', step: 3, root: 'ab'.repeat(32), layers: [0, 1] as [number, number], start: 20, input: EMPTY_CHAIN, output: fp }
  const receipt = await signReceipt({ ...body, trace: merkleRoot([layerLeaf(0, fp)]) }, sign)
  const result = encodeMsg({ t: 'result', step: 3, seq: 1, width, kind: 'hidden', data: bytesOf(hidden), ms: 1, receipt })
  const expected = { ...body, output: { data: hidden, seq: 1, width } }
  return [
    { side: 'client', stage: 'encode the step (CBOR)', us: await usOf(() => encodeMsg({ t: 'forward', step: 3, start: 20, seq: 1, hidden: bytesOf(hidden) })) },
    {
      side: 'client',
      stage: 'input chain (sha256 of the row, while the peer computes)',
      us: await usOf(() => chainRows(EMPTY_CHAIN, bytesOf(hidden), 1)),
      inOverhead: false
    },
    { side: 'node', stage: 'decode the step', us: await usOf(() => decodeClientMsg(fwd)) },
    { side: 'node', stage: 'check the input is finite', us: await usOf(() => firstNonFinite(hidden)) },
    // The per-layer fingerprints' Merkle root is made inside the node's timed compute, so it is not here.
    { side: 'node', stage: "the output's fingerprint", us: await usOf(() => encodeFingerprint(fingerprint(hidden, 1, width))) },
    { side: 'node', stage: 'input chain (sha256 of the row)', us: await usOf(() => chainRows(EMPTY_CHAIN, bytesOf(hidden), 1)) },
    { side: 'node', stage: 'receipt (CBOR + Ed25519 signature)', us: await usOf(async () => await signReceipt(body, sign)) },
    {
      side: 'node',
      stage: 'encode the result',
      us: await usOf(() => encodeMsg({ t: 'result', step: 3, seq: 1, width, kind: 'hidden', data: bytesOf(hidden), ms: 1, receipt }))
    },
    { side: 'client', stage: 'decode the result', us: await usOf(() => decodeNodeMsg(result)) },
    {
      side: 'client',
      stage: 'check the receipt (after the round trip is timed)',
      us: await usOf(async () => await verifyReceipt(receipt, expected), 1000),
      inOverhead: false
    }
  ]
}

/** The receipt's signature back to back and after `gapMs` idle before each: what waking up costs a stage here. */
export async function signAfterIdle(gapMs: number, n = 200): Promise<{ hotUs: number; idleUs: number; gapMs: number }> {
  const key = await generateKeyPair('Ed25519')
  const sign = nativeSigner(key)
  const body = new Uint8Array(300).fill(3) // about a receipt body's size
  const times = async (gap: number): Promise<number> => {
    const t: number[] = []
    for (let i = 0; i < n; i++) {
      if (gap > 0) await new Promise((r) => setTimeout(r, gap))
      const s = performance.now()
      await sign(body)
      t.push((performance.now() - s) * 1000)
    }
    return median(t)
  }
  return { hotUs: await times(0), idleUs: await times(gapMs), gapMs }
}

export interface EchoFloor {
  /** Two peers in this process, back to back. */
  inProcessMs: number
  /** Two processes, back to back. */
  crossProcessMs: number
  /** Two processes, each round after `gapMs` idle. */
  cadenceMs: number
  gapMs: number
}

/** Median round trip of `bytes` over `lp`, after `gapMs` idle before each round. */
async function roundTrips(lp: ReturnType<typeof lpStream>, bytes: number, gapMs: number, rounds: number): Promise<number> {
  const msg = new Uint8Array(bytes).fill(7)
  const times: number[] = []
  for (let i = 0; i < rounds + 30; i++) {
    if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs))
    const t = performance.now()
    await lp.write(msg)
    await lp.read()
    if (i >= 30) times.push(performance.now() - t)
  }
  return median(times)
}

/** The transport's floor for a `bytes` message each way, measured three ways (see EchoFloor). */
export async function echoFloor(bytes: number, gapMs: number): Promise<EchoFloor> {
  const a = await createPeer({ listen: ['/ip4/127.0.0.1/tcp/0'] })
  const b = await createPeer({ listen: ['/ip4/127.0.0.1/tcp/0'] })
  await b.handle(ECHO_PROTOCOL, async (s: Stream) => await echo(s, 2 * bytes))
  const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'echo-peer.ts')], { stdio: ['ignore', 'pipe', 'inherit'] })
  try {
    const addr = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout }).once('line', resolve)
      child.once('exit', (code) => reject(new Error(`the echo peer exited (${code}) before it was ready`)))
    })
    const local = lpStream(await a.dialProtocol(b.getMultiaddrs()[0], ECHO_PROTOCOL), lpLimits(2 * bytes))
    const remote = lpStream(await a.dialProtocol(multiaddr(addr), ECHO_PROTOCOL), lpLimits(2 * bytes))
    return {
      inProcessMs: await roundTrips(local, bytes, 0, 300),
      crossProcessMs: await roundTrips(remote, bytes, 0, 300),
      cadenceMs: await roundTrips(remote, bytes, gapMs, 150),
      gapMs
    }
  } finally {
    child.kill('SIGTERM')
    await Promise.all([a.stop(), b.stop()])
  }
}

/** A hop's stages where they really run (host/hop-marks.ts marks), medians over a generation's decode steps, in ms. */
export interface HopInPlace {
  steps: number
  /** Client's hashing and encoding, the step's way to the node, the node's decode. */
  toNodeMs: number
  /** The node's checks before compute. */
  checksMs: number
  computeMs: number
  /** The output's fingerprint and the signed receipt. */
  receiptMs: number
  /** The node's encoding and write of the result, until the stream takes it. */
  writeMs: number
  /** From the signed receipt to the client holding the decoded result (the write included). */
  toClientMs: number
  roundTripMs: number
}

/**
 * The in-place anatomy of the decode steps (each hop's step 0, the prefill, left out) the client
 * started at `sinceUs` or later, from the client's and the nodes' marks, all on one monotonic
 * clock. Every hop of a session has its own session id (picker.ts), so the id tells hops apart.
 */
export function hopInPlace(marks: HopMarkRecord[], sinceUs: number): HopInPlace {
  const at = new Map<string, number>()
  for (const m of marks) at.set(`${m.session}/${m.hop}/${m.step}/${m.mark}`, m.us)
  const parts: Record<Exclude<keyof HopInPlace, 'steps'>, number[]> = {
    toNodeMs: [],
    checksMs: [],
    computeMs: [],
    receiptMs: [],
    writeMs: [],
    toClientMs: [],
    roundTripMs: []
  }
  for (const m of marks) {
    if (m.mark !== 'client:send' || m.us < sinceUs || m.step === 0) continue
    const t = (mark: HopMark): number | undefined => at.get(`${m.session}/${m.hop}/${m.step}/${mark}`)
    const [send, read, start, computed, signed, sent, reply] = (
      ['client:send', 'node:read', 'node:start', 'node:computed', 'node:signed', 'node:sent', 'client:reply'] as const
    ).map(t)
    if ([send, read, start, computed, signed, sent, reply].some((x) => x === undefined)) continue
    const ms = (a: number | undefined, b: number | undefined): number => (b! - a!) / 1000
    parts.toNodeMs.push(ms(send, read))
    parts.checksMs.push(ms(read, start))
    parts.computeMs.push(ms(start, computed))
    parts.receiptMs.push(ms(computed, signed))
    parts.writeMs.push(ms(signed, sent))
    parts.toClientMs.push(ms(signed, reply))
    parts.roundTripMs.push(ms(send, reply))
  }
  if (parts.roundTripMs.length === 0) throw new Error('no complete marks for the measured steps: were the nodes started with TESSERA_HOP_MARKS=1?')
  return {
    steps: parts.roundTripMs.length,
    ...(Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, median(v)])) as Omit<HopInPlace, 'steps'>)
  }
}

/** The marks a node wrote on stderr (TESSERA_HOP_MARKS=1). */
export function marksFromLog(log: string[]): HopMarkRecord[] {
  return log.filter((l) => l.startsWith(HOP_MARK_PREFIX)).map((l) => JSON.parse(l.slice(HOP_MARK_PREFIX.length)) as HopMarkRecord)
}
