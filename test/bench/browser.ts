/**
 * Browser benchmarks (measure only): one shard's ms per layer per decode step on WASM and on
 * WebGPU (software adapter) in Chromium, divided by onnxruntime-node on the same machine and
 * files; and the time from the "Contribute" click to the first request served.
 */
import { join } from 'node:path'
import { buildModel } from '../../host/model-store.js'
import { loadModel } from '../../native-node/store.js'
import { measureMsPerLayer } from '../../shared/node/speed.js'
import { randomWeights } from '../../shared/model/random.js'
import { preset } from '../../shared/model/config.js'
import { REPO, tempDir } from '../helpers/paths.js'
import { api, spawnTessera, waitFor, type Proc } from '../helpers/network.js'
import { context, hasChromium, launch } from '../helpers/browser.js'

export async function benchBrowser(cacheDir: string): Promise<Record<string, unknown>> {
  if (!hasChromium()) return { skipped: 'no Chromium at /usr/bin/chromium (apt-get install chromium)' }
  const dir = join(cacheDir, 'small-fp32-cut2')
  const manifest = await buildModel(randomWeights(preset('small'), 1), dir, { source: 'random:small:1', cuts: [2] })
  const c = manifest.config

  // onnxruntime-node on the same shard [0,2), same measurement as the tab's.
  const { runners } = await loadModel(dir, { device: 'cpu' })
  const nodeMs = await measureMsPerLayer([runners[0]], 2, { dim: c.dim, vocabSize: c.vocabSize, steps: 2, context: 8 })
  for (const r of runners) await r.dispose()

  const procs: Proc[] = []
  const relay = await spawnTessera([
    'relay',
    '--port',
    '0',
    '--p2p-port',
    '0',
    '--model',
    dir,
    '--web',
    join(REPO, 'dist', 'web'),
    '--ledger-file',
    join(tempDir('bench-ledger'), 'ledger.sqlite')
  ])
  procs.push(relay)
  procs.push(await spawnTessera(['node', '--relay', relay.ready.relay, '--model', dir, '--layers', '2-8']))
  const http = relay.ready.http
  const browser = await launch()
  const rows: Record<string, unknown> = { nodeMsPerLayer: nodeMs }
  try {
    for (const backend of ['wasm', 'webgpu'] as const) {
      const ctx = await context(browser, http)
      const page = await ctx.newPage()
      await page.goto(`${http}/contribute.html?layers=0-2&backend=${backend}`)
      await page.waitForSelector('#start:not([disabled])')
      const clicked = Date.now()
      await page.click('#start')
      await page.waitForFunction(() => document.querySelector('#status')?.getAttribute('data-state') === 'serving', undefined, { timeout: 600_000 })
      const servingMs = Date.now() - clicked
      let peer: { msPerLayer: number } | undefined
      await waitFor(async () => {
        peer = (await api(http, '/api/network')).peers.find((p: { device: string }) => p.device === backend)
        return peer !== undefined
      })
      if (peer === undefined) throw new Error('the tab never appeared in the network view')
      // The first request: a generation through the tab as soon as it serves.
      await api(http, '/v1/completions', { prompt: [1, 2, 3], max_tokens: 1 })
      await waitFor(async () => Number(await page.getAttribute('#stats', 'data-requests')) >= 1, 60_000)
      const firstRequestMs = Date.now() - clicked
      rows[backend] = { msPerLayer: peer.msPerLayer, ratioToNode: peer.msPerLayer / nodeMs, clickToServingMs: servingMs, clickToFirstRequestMs: firstRequestMs }
      console.log(
        `${backend} in Chromium: ${peer.msPerLayer.toFixed(2)} ms/layer/step vs onnxruntime-node ${nodeMs.toFixed(2)}` +
          ` → ${(peer.msPerLayer / nodeMs).toFixed(1)}×` +
          `; click → serving ${servingMs} ms, → first request ${firstRequestMs} ms`
      )
      await page.close({ runBeforeUnload: true })
      await ctx.close()
      await waitFor(async () => !(await api(http, '/api/network')).peers.some((p: { device: string }) => p.device === backend), 30_000)
    }
  } finally {
    await browser.close()
    for (const p of procs) p.proc.kill('SIGKILL')
  }
  return { preset: 'small', shard: [0, 2], ...rows }
}
