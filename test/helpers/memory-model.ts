/**
 * stories260K built into a temp dir and loaded on onnxruntime-node, once per shard and fault:
 * the runners an in-process network's peers share (a session is per open(), so sharing a
 * runner shares only its weights and its run queue).
 */
import { rm } from 'node:fs/promises'
import { dirname } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { buildModel, readManifest } from '../../host/model-store.js'
import { loadShard } from '../../native-node/store.js'
import { tamperShard } from '../../native-node/fault.js'
import { isWeightFault, parseFault, stepFault, type Fault, type StepFault } from '../../shared/node/fault.js'
import { shardsFor } from '../../shared/node/select.js'
import type { Manifest, ShardEntry } from '../../shared/manifest.js'
import type { ShardRunner } from '../../shared/runner.js'
import { stories } from './reference.js'
import { tempDir } from './paths.js'

/** One thread per session and no spinning: the suite shares two cores with itself. */
const ORT = { device: 'cpu', threads: 1, spin: false } as const

/** stories260K (5 layers) cut at `cuts`, e.g. [2] gives shards [0,2) [2,5). */
export async function buildStories(cuts: number[]): Promise<string> {
  const dir = tempDir('memnet-model')
  await buildModel(await stories(), dir, { source: 'stories260K.bin', cuts })
  return dir
}

export interface ModelRunners {
  dir: string
  manifest: Manifest
  /** The runners serving `layers` for a peer committing `fault` (a shared/node/fault.ts spec), and its serve-time part. */
  forPeer: (layers: [number, number], fault?: string) => Promise<{ shards: ShardEntry[]; runners: ShardRunner[]; step?: StepFault }>
  dispose: () => Promise<void>
}

export async function modelRunners(dir: string): Promise<ModelRunners> {
  const manifest = await readManifest(dir)
  const loaded = new Map<string, Promise<ShardRunner>>()
  const tampered: string[] = []
  const runner = async (s: ShardEntry, f: Fault | undefined, first: boolean): Promise<ShardRunner> => {
    const weights = f !== undefined && isWeightFault(f) && touches(f, s, first) ? f : undefined
    const key = `${s.index}:${weights === undefined ? '' : JSON.stringify(weights)}`
    let r = loaded.get(key)
    if (r === undefined) {
      r =
        weights === undefined
          ? loadShard(dir, manifest, s.index, ORT)
          : (async () => {
              const path = await tamperShard(dir, s, weights)
              tampered.push(dirname(path))
              const { loadShardNode } = await import('../../native-node/ort.js')
              return await loadShardNode(path, s, manifest.config, ORT)
            })()
      loaded.set(key, r)
    }
    return await r
  }
  return {
    dir,
    manifest,
    async forPeer(layers, spec) {
      const shards = shardsFor(manifest, layers)
      const fault = spec === undefined ? undefined : parseFault(spec)
      if (fault?.kind === 'skip-layer' && (fault.layer < layers[0] || fault.layer >= layers[1])) {
        throw new Error(`skip-layer=${fault.layer} on a peer of layers [${layers.join(',')})`)
      }
      const runners = await Promise.all(shards.map(async (s, i) => await runner(s, fault, i === 0)))
      return { shards, runners, step: fault === undefined ? undefined : stepFault(fault, fault.kind === 'copy-receipt' ? await otherIdentity() : undefined) }
    },
    async dispose() {
      for (const r of loaded.values()) await (await r).dispose()
      for (const d of tampered) await rm(d, { recursive: true, force: true })
    }
  }
}

/** Which of a peer's shards a weight fault tampers, as native-node/node.ts decides it: all of them, its first, or the skipped layer's. */
function touches(f: Extract<Fault, { kind: 'wrong-weights' | 'perturb' | 'skip-layer' }>, s: ShardEntry, first: boolean): boolean {
  if (f.kind === 'wrong-weights') return true
  if (f.kind === 'perturb') return first
  return f.layer >= s.layers[0] && f.layer < s.layers[1]
}

/** copy-receipt signs with an identity other than the peer's own. */
async function otherIdentity(): Promise<{ peer: string; sign: (b: Uint8Array) => Promise<Uint8Array> }> {
  const key = await generateKeyPair('Ed25519')
  return { peer: peerIdFromPrivateKey(key).toString(), sign: async (b) => await key.sign(b) }
}
