/** Shard files are checked against the manifest before anything runs them. */
import { describe, expect, it } from 'vitest'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createHash } from 'node:crypto'
import { buildModel, readManifest } from '../host/model-store.js'
import { loadModel } from '../native-node/store.js'
import { preset } from '../shared/model/config.js'
import { randomWeights } from '../shared/model/random.js'
import { checkManifest, verifyShard } from '../shared/manifest.js'
import { ShardHashError, ModelFormatError } from '../shared/errors.js'
import { tempDir } from './helpers/paths.js'

async function built(): Promise<string> {
  const dir = tempDir('manifest')
  await buildModel(randomWeights(preset('tiny'), 5), dir, { source: 'random:tiny:5', shards: 2 })
  return dir
}

describe('manifest', () => {
  it('lists every shard with its layers, bytes and hashes, under one root', async () => {
    const dir = await built()
    const m = await readManifest(dir)
    expect(m.shards.map((s) => s.layers)).toEqual([
      [0, 2],
      [2, 4]
    ])
    for (const s of m.shards) {
      expect(s.files.map((f) => f.name)).toEqual([`shard-${s.index}.onnx`, `shard-${s.index}.onnx.data`])
      for (const f of s.files) expect((await readFile(join(dir, f.name))).byteLength).toBe(f.bytes)
    }
    expect(m.root).toMatch(/^[0-9a-f]{64}$/)
  })

  it('is identical for the same source, seed and cuts (reproducible builds)', async () => {
    const [a, b] = [await readManifest(await built()), await readManifest(await built())]
    expect(a.root).toBe(b.root)
  })

  it('refuses a corrupted shard file, naming the file', async () => {
    const dir = await built()
    const data = join(dir, 'shard-1.onnx.data')
    const bytes = await readFile(data)
    bytes[bytes.length >> 1] ^= 0x40
    await writeFile(data, bytes)
    const err = await loadModel(dir, { device: 'cpu' }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ShardHashError)
    expect((err as ShardHashError).file).toBe(data)
    expect((err as Error).message).toContain('shard-1.onnx.data')
    expect((err as Error).message).toMatch(/corrupt or tampered/)
  })

  it('refuses the same corruption in the browser-side check (verifyShard over bytes)', async () => {
    const dir = await built()
    const m = await readManifest(dir)
    const read = async (name: string): Promise<Uint8Array> => {
      const b = new Uint8Array(await readFile(join(dir, name)))
      if (name === 'shard-0.onnx') b[10] ^= 1
      return b
    }
    await expect(verifyShard(m.shards[1], async (n) => new Uint8Array(await readFile(join(dir, n))))).resolves.toBeInstanceOf(Map)
    await expect(verifyShard(m.shards[0], read)).rejects.toThrow(/shard-0\.onnx is corrupt or tampered/)
  })

  it('rejects a manifest whose hashes or layers do not add up', async () => {
    const m = await readManifest(await built())
    expect(() => checkManifest({ ...m, root: '00'.repeat(32) })).toThrow(ModelFormatError)
    expect(() => checkManifest({ ...m, shards: [m.shards[1]] })).toThrow(/expected to start at 0/)
    const tampered = structuredClone(m)
    tampered.shards[0].files[1].sha256 = 'ab'.repeat(32)
    expect(() => checkManifest(tampered)).toThrow(/hash does not match/)
    expect(() => checkManifest({ tessera: 2 })).toThrow(/not a Tessera manifest/)
  })

  it('hashes every file by chunk too, and the root names those chunk hashes: none can be changed under it', async () => {
    const dir = await built()
    const m = await readManifest(dir)
    for (const f of m.shards.flatMap((s) => s.files)) {
      const bytes = await readFile(join(dir, f.name))
      const c = f.chunks!
      expect(c.sha256.length).toBe(Math.ceil(f.bytes / c.bytes))
      const actual = c.sha256.map((_, i) =>
        createHash('sha256')
          .update(bytes.subarray(i * c.bytes, (i + 1) * c.bytes))
          .digest('hex')
      )
      expect(actual).toEqual(c.sha256)
    }
    // A relay handing out other chunk hashes (to make honest bytes look bad) changes the shard's hash.
    const lying = structuredClone(m)
    lying.shards[1].files[1].chunks!.sha256[0] = 'cd'.repeat(32)
    expect(() => checkManifest(lying)).toThrow(/shard 1's hash does not match/)
    const resized = structuredClone(m)
    resized.shards[0].files[1].chunks!.bytes *= 2
    expect(() => checkManifest(resized)).toThrow(/expected \d+ chunk hashes/)
    const garbled = structuredClone(m)
    garbled.shards[0].files[0].chunks!.sha256[0] = 'not hex'
    expect(() => checkManifest(garbled)).toThrow(/64 hex digits/)
  })

  it('says what to do when a directory holds no model', async () => {
    await expect(readManifest(tempDir('empty'))).rejects.toThrow(/build a model there first/)
  })
})
