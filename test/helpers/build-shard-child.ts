/**
 * Child process for the memory test: builds only shard ONLY of a Hugging Face directory cut
 * into SHARDS, then prints its peak resident memory. Run: tsx build-shard-child.ts DIR OUT SHARDS ONLY
 */
import { openHfDir } from '../../shared/model/hf.js'
import { fileBlobs } from '../../host/fs-blob.js'
import { buildModel } from '../../host/model-store.js'
import { readFileSync } from 'node:fs'

/**
 * Peak RSS of this process. VmHWM belongs to this process's own memory map; getrusage's maxRSS
 * would carry over the parent's peak across fork+exec on Linux.
 */
function peakRss(): number {
  const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))
  return hwm !== null ? Number(hwm[1]) * 1024 : process.resourceUsage().maxRSS * 1024
}

const [dir, out, shards, only] = process.argv.slice(2)
const weights = await openHfDir(fileBlobs(dir))
const manifest = await buildModel(weights, out, { source: dir, shards: Number(shards), only: [Number(only)] })
console.log(JSON.stringify({ maxRssBytes: peakRss(), shard: manifest.shards[0] }))
