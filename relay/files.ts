/**
 * The relay's side of /tessera/files/1.0.0: every file of the models it hosts, manifests by name
 * or root, and a short-lived list of the peers downloading each model (so that nodes joining at
 * once fetch from each other, not all from here). A peer can only list itself (the stream's
 * remote peer is authenticated), entries expire, and each model's list is bounded: a flood of
 * fresh identities costs each asker at most a few failed or bad chunks before it drops them.
 */
import { open } from 'node:fs/promises'
import type { Manifest } from '../shared/manifest.js'
import { TesseraError } from '../shared/errors.js'
import type { FileCatalog } from '../shared/files/serve.js'
import type { FileHolder } from '../shared/files/protocol.js'
import type { ServedFile } from './shards.js'

export const TRACKER_DEFAULTS = {
  /** A downloading peer re-announces every few seconds; one that stops is forgotten after this. */
  ttlMs: 30_000,
  /** Peers listed per model; the oldest announce goes first. */
  perModel: 256,
  /** Holders a `sources` reply names, the freshest first. */
  reply: 32
}

interface Entry extends FileHolder {
  at: number
}

export function relayCatalog(models: Array<{ manifest: Manifest }>, files: Map<string, ServedFile>, o: Partial<typeof TRACKER_DEFAULTS> = {}): FileCatalog {
  const limits = { ...TRACKER_DEFAULTS, ...o }
  const byRoot = new Map(models.map((m) => [m.manifest.root, m.manifest]))
  const holders = new Map<string, Map<string, Entry>>() // root → peer → entry
  const live = (root: string): Entry[] => {
    const list = holders.get(root)
    if (list === undefined) return []
    const now = Date.now()
    for (const [peer, e] of list) if (now - e.at > limits.ttlMs) list.delete(peer)
    return [...list.values()]
  }
  return {
    have: (sha256) => (files.has(sha256) ? 'all' : undefined),
    covered: (sha256, offset, length) => {
      const f = files.get(sha256)
      return f !== undefined && offset + length <= f.bytes
    },
    async read(sha256, offset, length) {
      const f = files.get(sha256)
      if (f === undefined) throw new TesseraError('NOT_FOUND', `no file ${sha256}`)
      const fh = await open(f.path, 'r')
      try {
        const out = new Uint8Array(length)
        const { bytesRead } = await fh.read(out, 0, length, offset)
        if (bytesRead !== length) throw new TesseraError('INTERNAL', `the relay's copy of ${sha256.slice(0, 12)}… is shorter than its manifest says`)
        return out
      } finally {
        await fh.close()
      }
    },
    manifest(model) {
      const m = byRoot.get(model.toLowerCase()) ?? [...byRoot.values()].find((x) => x.name === model)
      if (m !== undefined) return m
      const known = [...byRoot.values()].map((x) => `${x.name} (${x.root.slice(0, 12)}…)`).join(', ')
      throw new TesseraError('NOT_FOUND', `this relay hosts no model named ${model}${known === '' ? '' : `; it hosts ${known}`}`)
    },
    sources: (root, asker) =>
      live(root)
        .filter((e) => e.peer !== asker)
        .sort((a, b) => b.at - a.at)
        .slice(0, limits.reply)
        .map(({ peer, addrs, files: f }) => ({ peer, addrs, files: f })),
    fetching(from, root, list, addrs) {
      if (!byRoot.has(root)) throw new TesseraError('NOT_FOUND', `this relay hosts no model of root ${root}`)
      const mine = new Set(byRoot.get(root)?.shards.flatMap((s) => s.files.map((f) => f.sha256)))
      const entries = holders.get(root) ?? new Map<string, Entry>()
      holders.set(root, entries)
      entries.delete(from) // re-inserted last: Map order is the eviction order
      entries.set(from, { peer: from, addrs, files: list.filter((f) => mine.has(f)), at: Date.now() })
      while (entries.size > limits.perModel) entries.delete(entries.keys().next().value as string)
    }
  }
}
