/**
 * `tessera doctor`'s look at the shard cache (native-node/weights.ts): which models' shards a
 * node joining by name has downloaded, how much they take, downloads stopped part-way (they
 * resume on the next start), and the free space left for more.
 */
import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { freeBytes } from '../../host/file-store.js'
import { readManifest } from '../../host/model-store.js'
import { fmt, msg, type Check } from './doctor-checks.js'

export async function cacheCheck(cache: string): Promise<Check> {
  const models = join(cache, 'models')
  const roots = await readdir(models).catch(() => [] as string[])
  const free = fmt(await freeBytes(cache))
  if (roots.length === 0) return { name: 'cache', status: 'ok', value: `${cache}: empty (nodes joining by name download their shards here); ${free} free` }
  const parts: string[] = []
  let total = 0
  let partial = 0
  for (const root of roots) {
    const dir = join(models, root)
    const names = await readdir(dir).catch(() => [] as string[])
    for (const n of names) total += (await stat(join(dir, n)).catch(() => undefined))?.size ?? 0
    partial += names.filter((n) => n.endsWith('.part')).length
    try {
      const m = await readManifest(dir)
      const held = m.shards.filter((s) => s.files.every((f) => names.includes(f.name))).length
      parts.push(`${m.name}: ${held} of ${m.shards.length} shards`)
    } catch (err) {
      parts.push(`${root.slice(0, 12)}…: ${msg(err)}`)
    }
  }
  const value = `${cache}: ${parts.join('; ')}; ${fmt(total)} in all; ${free} free`
  if (partial > 0) {
    return { name: 'cache', status: 'warn', value, fix: `${partial} file(s) stopped part-way: the next tessera node --model NAME resumes them` }
  }
  return { name: 'cache', status: 'ok', value }
}
