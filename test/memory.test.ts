/**
 * Import is lazy: building one shard of the `medium` preset (~220M parameters) from a
 * safetensors directory reads only that shard's tensors, so the builder's peak memory stays
 * well under the checkpoint's size. Measured in a child process (its own peak RSS).
 */
import { describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { preset } from '../shared/model/config.js'
import { randomWeights } from '../shared/model/random.js'
import { writeHfDir } from '../shared/model/hf.js'
import { REPO, tempDir } from './helpers/paths.js'

describe('building one shard of the medium preset', () => {
  it('peaks well under the checkpoint size', async () => {
    const hf = tempDir('medium-hf')
    let checkpointBytes = 0
    for (const [name, bytes] of Object.entries(await writeHfDir(randomWeights(preset('medium'), 1), { dtype: 'F16', permute: true }))) {
      await writeFile(join(hf, name), bytes)
      checkpointBytes += bytes.byteLength
    }
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', join(REPO, 'test/helpers/build-shard-child.ts'), hf, tempDir('medium-out'), '8', '3'],
      { cwd: REPO, maxBuffer: 1 << 20 }
    )
    const { maxRssBytes, shard } = JSON.parse(stdout.trim().split('\n').pop()!)
    expect(shard.layers).toEqual([6, 8])
    const ratio = maxRssBytes / checkpointBytes
    console.log(
      `medium: checkpoint ${(checkpointBytes / 2 ** 20).toFixed(0)} MiB (fp16), building shard [6,8)` +
        ` peaked at ${(maxRssBytes / 2 ** 20).toFixed(0)} MiB RSS (${(ratio * 100).toFixed(0)}%)`
    )
    expect(ratio).toBeLessThan(0.5)
  }, 300_000)
})
