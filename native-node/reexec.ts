/**
 * The relay's arbiter on onnxruntime-node: re-runs a disputed hop (shared/verify/reexec.ts) over
 * the shard files the relay already serves. The relay may not import native-node/, so the CLI
 * composes this and hands it to startRelay. Shards load on first use, verified against their
 * manifest, and a few stay loaded; runs go one at a time on the CPU with no spinning threads (the
 * relay's event loop and network share the machine), and a short queue beyond which a report is refused.
 */
import type { Manifest, ShardEntry } from '../shared/manifest.js'
import { ProtocolError } from '../shared/errors.js'
import { shardsFor } from '../shared/node/select.js'
import type { HopOutput, ShardRunner } from '../shared/runner.js'
import type { Reexecute } from '../shared/verify/reexec.js'
import { readManifest } from '../host/model-store.js'
import { loadShard } from './store.js'
import type { OrtNodeOptions } from './ort.js'

export interface ReexecutorOptions {
  /** Shards kept loaded between re-executions (least recently used goes first). */
  keep?: number
  /** Re-executions waiting behind the running one; more are refused (BUSY). */
  queue?: number
  ort?: OrtNodeOptions
}

export const REEXECUTOR_DEFAULTS = { keep: 4, queue: 8, ort: { device: 'cpu', threads: 2, spin: false } as OrtNodeOptions }

export interface Reexecutor {
  reexecute: Reexecute
  /** Whether `reexecute` can run these layers of this model (they fall on its shard boundaries). */
  serves: (root: string, layers: [number, number]) => boolean
  dispose: () => Promise<void>
}

export function shardReexecutor(models: Array<{ dir: string; manifest: Manifest }>, o: ReexecutorOptions = {}): Reexecutor {
  const keep = o.keep ?? REEXECUTOR_DEFAULTS.keep
  const maxQueue = o.queue ?? REEXECUTOR_DEFAULTS.queue
  const ort = o.ort ?? REEXECUTOR_DEFAULTS.ort
  const byRoot = new Map(models.map((m) => [m.manifest.root, m]))
  const loaded = new Map<string, Promise<ShardRunner>>()
  let tail: Promise<unknown> = Promise.resolve()
  let pending = 0 // the running re-execution and those queued behind it

  const runner = async (m: { dir: string; manifest: Manifest }, s: ShardEntry): Promise<ShardRunner> => {
    const key = `${m.manifest.root}:${s.index}`
    let r = loaded.get(key)
    if (r === undefined) {
      r = loadShard(m.dir, m.manifest, s.index, ort)
      r.catch(() => loaded.delete(key))
    }
    loaded.delete(key)
    loaded.set(key, r) // most recently used last
    return await r
  }
  // After a run, never during one: a run over more than `keep` shards still holds each it opened.
  const trim = (): void => {
    while (loaded.size > keep) {
      const [oldest, p] = loaded.entries().next().value!
      loaded.delete(oldest)
      void p.then(async (x) => await x.dispose()).catch(() => {})
    }
  }

  const run: Reexecute = async ({ root, layers, inputs }) => {
    const m = byRoot.get(root)
    if (m === undefined) return undefined
    let shards: ShardEntry[]
    try {
      shards = shardsFor(m.manifest, layers)
    } catch {
      return undefined // layers no node serves here: this relay cannot say
    }
    const sessions: Array<ReturnType<ShardRunner['open']>> = []
    try {
      for (const s of shards) sessions.push((await runner(m, s)).open())
      let out: HopOutput = await sessions[0].forward(inputs)
      for (const s of sessions.slice(1)) out = await s.forward({ hidden: out.data, seq: out.seq })
      return out
    } finally {
      for (const s of sessions) s.close()
      trim()
    }
  }

  return {
    serves: (root, layers) => {
      const m = byRoot.get(root)
      if (m === undefined) return false
      try {
        shardsFor(m.manifest, layers)
        return true
      } catch {
        return false
      }
    },
    reexecute: async (job) => {
      if (pending > maxQueue) throw new ProtocolError('BUSY', `${pending - 1} re-executions are waiting already; report again later`)
      pending++
      const mine = tail.then(async () => await run(job))
      tail = mine.catch(() => {})
      try {
        return await mine
      } finally {
        pending--
      }
    },
    dispose: async () => {
      await tail
      for (const p of loaded.values()) await p.then(async (r) => await r.dispose()).catch(() => {})
      loaded.clear()
    }
  }
}

/** The arbiter over model directories (the relay's --model): manifests read now, shards loaded on first use. */
export async function reexecutorFor(dirs: string[], o: ReexecutorOptions = {}): Promise<Reexecutor> {
  return shardReexecutor(await Promise.all(dirs.map(async (dir) => ({ dir, manifest: await readManifest(dir) }))), o)
}
