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
import { firstNonFinite } from '../../shared/node/serve.js'
import { chainRows, EMPTY_CHAIN, signReceipt, verifyReceipt } from '../../shared/verify/receipt.js'
import { encodeFingerprint, fingerprint } from '../../shared/verify/fingerprint.js'
import { layerLeaf, merkleRoot } from '../../shared/verify/merkle.js'
import { median } from './median.js'
import { ECHO_PROTOCOL, echo } from './echo-peer.js'

export interface HopStage {
  side: 'client' | 'node'
  stage: string
  us: number
  /** Whether the hop's overhead (round trip minus the node's compute) includes it: the receipt check comes after the round trip is timed. */
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
    { side: 'client', stage: 'input chain (sha256 of the row)', us: await usOf(() => chainRows(EMPTY_CHAIN, bytesOf(hidden), 1)) },
    { side: 'client', stage: 'encode the step (CBOR)', us: await usOf(() => encodeMsg({ t: 'forward', step: 3, start: 20, seq: 1, hidden: bytesOf(hidden) })) },
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
