/**
 * stories260K against llama2.c's reference output, whole and cut at arbitrary layers, on
 * onnxruntime-node and on onnxruntime-web's WASM backend (the browser build, run in Node),
 * from the same shard files.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildModel } from '../host/model-store.js'
import { loadModel } from '../native-node/store.js'
import { loadWasmRunners } from './helpers/wasm.js'
import type { ShardRunner } from '../shared/runner.js'
import type { KvLayout } from '../shared/shard/build.js'
import { checkCase, reference, stories } from './helpers/reference.js'
import { tempDir } from './helpers/paths.js'

// The default KV layout (append) in every cut, and the other two once each.
const CUTS: Record<string, [number[], KvLayout | undefined]> = {
  '1 shard': [[], undefined],
  '2 shards': [[3], undefined],
  '5 shards': [[1, 2, 3, 4], undefined],
  '2 shards, GroupQueryAttention KV cache': [[3], 'gqa'],
  '2 shards, concat KV cache': [[3], 'concat']
}

for (const [label, [cuts, kv]] of Object.entries(CUTS)) {
  describe(`stories260K, ${label}`, () => {
    const runtimes: Record<string, ShardRunner[]> = {}
    beforeAll(async () => {
      const dir = tempDir('ref')
      await buildModel(await stories(), dir, { source: 'stories260K.bin', cuts, kv })
      const { manifest, runners } = await loadModel(dir, { device: 'cpu' })
      expect(manifest.shards.map((s) => s.layers)).toHaveLength(cuts.length + 1)
      runtimes['onnxruntime-node'] = runners
      runtimes['onnxruntime-web wasm'] = await loadWasmRunners(dir, manifest)
    })
    afterAll(async () => {
      for (const rs of Object.values(runtimes)) for (const r of rs) await r.dispose()
    })

    for (const runtime of ['onnxruntime-node', 'onnxruntime-web wasm']) {
      it(`${runtime}: every reference case (prompt logits, teacher forcing, greedy ids)`, async () => {
        for (const c of reference()) await checkCase(runtimes[runtime], c)
      })
    }
  })
}
