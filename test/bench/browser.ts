/**
 * Browser benchmarks (measure only): one shard's ms per layer per decode step on WASM (one
 * thread, and as many as the tab may take) and on WebGPU (software adapter) in Chromium, divided by onnxruntime-node on the same machine and
 * files, as the tab measures itself on starting (context 32) and over a long generation through it
 * (context 3 → 259); WebGPU twice, its KV cache kept on the GPU and in the tab's memory; and the time
 * from the "Contribute" click to the first request served. A backend whose step fails gets
 * `{ error }` for its row and the next one still runs.
 */
import { join } from 'node:path'
import { cpus } from 'node:os'
import { buildModel } from '../../host/model-store.js'
import { loadModel } from '../../native-node/store.js'
import { measureMsPerLayer } from '../../shared/node/speed.js'
import type { ShardRunner } from '../../shared/runner.js'
import { randomWeights } from '../../shared/model/random.js'
import { preset } from '../../shared/model/config.js'
import { REPO, tempDir } from '../helpers/paths.js'
import { api, spawnTessera, waitFor, type Proc } from '../helpers/network.js'
import type { Browser } from 'playwright-core'
import { context, hasChromium, launch } from '../helpers/browser.js'

export async function benchBrowser(cacheDir: string): Promise<Record<string, unknown>> {
  if (!hasChromium()) return { skipped: 'no Chromium at /usr/bin/chromium (apt-get install chromium)' }
  const dir = join(cacheDir, 'small-fp32-cut2')
  const manifest = await buildModel(randomWeights(preset('small'), 1), dir, { source: 'random:small:1', cuts: [2] })
  const c = manifest.config

  // onnxruntime-node on the same shard [0,2), same measurement as the tab's.
  const { runners } = await loadModel(dir, { device: 'cpu' })
  const nodeMs = await measureMsPerLayer([runners[0]], 2, { dim: c.dim, vocabSize: c.vocabSize, steps: 2, context: 8 })
  const nodeLongMs = await longMsPerLayer(runners[0])
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
  const http = relay.ready.http
  const rows: Record<string, unknown> = { nodeMsPerLayer: nodeMs, nodeLongMsPerLayer: nodeLongMs }
  let browser: Browser | undefined
  try {
    procs.push(await spawnTessera(['node', '--relay', relay.ready.relay, '--model', dir, '--layers', '2-8']))
    browser = await launch()
    // One backend's failure is its row ({ error }), not the section's: the others are still measured.
    // WASM on one thread and on as many as the machine has (at most 4: the tab's default cap), WebGPU.
    const threads = Math.min(4, cpus().length)
    const runs: Array<[string, 'wasm' | 'webgpu', number, 'device' | 'memory']> = [
      ['wasm', 'wasm', 1, 'memory'],
      ['wasmThreads', 'wasm', threads, 'memory'],
      ['webgpu', 'webgpu', 1, 'device'],
      ['webgpuMemoryKv', 'webgpu', 1, 'memory']
    ]
    for (const [name, backend, n, kv] of runs) {
      try {
        rows[name] = await benchTab(browser, http, backend, n, kv, nodeMs, nodeLongMs)
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err)
        rows[name] = { error: message }
        console.error(`${name} in Chromium failed: ${message}`)
      }
    }
  } finally {
    await browser?.close()
    for (const p of procs) p.proc.kill('SIGKILL')
  }
  return { preset: 'small', shard: [0, 2], ...rows }
}

interface TabRow {
  /** WASM threads the tab used (its page shows them). */
  threads: number
  /** The tab's own measurement on starting (context 32), which the relay lists. */
  msPerLayer: number
  ratioToNode: number
  /** Its busy time per step over a 256-token generation (LONG) through it, per layer. */
  longMsPerLayer: number
  /** ÷ onnxruntime-node's over the same steps. */
  longRatioToNode: number
  /** Where its KV cache lived (the page says). */
  kv: 'device' | 'memory'
  clickToServingMs: number
  clickToFirstRequestMs: number
}

/**
 * One tab on `backend`: Contribute clicked, serving, listed by the relay under the peer id the
 * page shows, one request through it; the tab is closed and gone from the relay's view before
 * this returns (or throws), so the next backend starts from the same network.
 */
/** Tokens of the long generation each tab serves. */
const LONG = 256

/** onnxruntime-node's compute per step per layer over the tabs' long generation: prompt [1, 2, 3], then LONG one-token steps. */
async function longMsPerLayer(runner: ShardRunner): Promise<number> {
  const s = runner.open()
  try {
    await s.forward({ tokens: [1, 2, 3] })
    let ms = 0
    for (let i = 0; i < LONG; i++) {
      const t = performance.now()
      await s.forward({ tokens: [1 + (i % 64)] })
      ms += performance.now() - t
    }
    return ms / LONG / (runner.shard.layers[1] - runner.shard.layers[0])
  } finally {
    s.close()
  }
}

async function benchTab(
  browser: Browser,
  http: string,
  backend: 'wasm' | 'webgpu',
  threads: number,
  kv: 'device' | 'memory',
  nodeMs: number,
  nodeLongMs: number
): Promise<TabRow> {
  const ctx = await context(browser, http)
  let peerId: string | undefined
  try {
    const page = await ctx.newPage()
    await page.goto(`${http}/contribute.html?layers=0-2&backend=${backend}&threads=${threads}${kv === 'memory' ? '&kv=memory' : ''}`)
    await page.waitForSelector('#start:not([disabled])')
    const clicked = Date.now()
    await page.click('#start')
    // Serving, or the reason it never will be (the page's error state says why).
    await page.waitForFunction(() => ['serving', 'error', 'refused'].includes(document.querySelector('#status')?.getAttribute('data-state') ?? ''), undefined, {
      timeout: 600_000
    })
    const state = await page.getAttribute('#status', 'data-state')
    if (state !== 'serving') throw new Error(`the tab did not serve (${state}): ${(await page.textContent('#error'))?.trim() ?? ''}`)
    const servingMs = Date.now() - clicked
    peerId = (await page.textContent('#stat-peer'))?.trim()
    const chosen = (await page.textContent('#stat-backend'))?.trim()
    if (chosen !== backend) throw new Error(`asked for ${backend}, the tab runs ${chosen} (${(await page.textContent('#backend'))?.trim() ?? ''})`)
    // The relay lists this very tab (by the peer id it shows), and with it a route over the whole model, before it is asked.
    let peer: { msPerLayer: number } | undefined
    await waitFor(async () => {
      const view = await api(http, '/api/network')
      peer = view.peers.find((p: { peer: string }) => p.peer === peerId)
      return peer !== undefined && view.models.some((m: { coverage: number[] }) => m.coverage.length > 0 && m.coverage.every((c) => c > 0))
    }).catch(() => {
      throw new Error(`the tab (${peerId}) serves but the relay never listed it with the whole model covered`)
    })
    // The first request: a generation through the tab as soon as it serves.
    await api(http, '/v1/completions', { prompt: [1, 2, 3], max_tokens: 1 })
    await waitFor(async () => Number(await page.getAttribute('#stats', 'data-requests')) >= 1, 60_000)
    const firstRequestMs = Date.now() - clicked
    // The long generation: the tab's busy time over its steps, from its counters before and after (they tick each second).
    const counters = async (): Promise<{ steps: number; busyMs: number }> => ({
      steps: Number(await page.getAttribute('#stats', 'data-steps')),
      busyMs: Number(await page.getAttribute('#stats', 'data-busy-ms'))
    })
    const before = await counters()
    await api(http, '/v1/completions', { prompt: [1, 2, 3], max_tokens: LONG })
    await waitFor(async () => (await counters()).steps >= before.steps + LONG, 60_000)
    const after = await counters()
    const longMsPerLayer = (after.busyMs - before.busyMs) / (after.steps - before.steps) / 2
    const msPerLayer = peer!.msPerLayer
    const used = Number(await page.getAttribute('#stat-threads', 'data-threads'))
    const place = await page.getAttribute('#stat-kv', 'data-place')
    if (place !== kv) throw new Error(`asked for the KV cache in ${kv}, the tab keeps it in ${place}`)
    console.log(
      `${backend} (${used} thread(s), KV cache in ${kv}) in Chromium: ${msPerLayer.toFixed(2)} ms/layer/step vs onnxruntime-node ${nodeMs.toFixed(2)}` +
        ` → ${(msPerLayer / nodeMs).toFixed(1)}×; over a ${LONG}-token generation ${longMsPerLayer.toFixed(2)} vs ${nodeLongMs.toFixed(2)} → ${(longMsPerLayer / nodeLongMs).toFixed(1)}×` +
        `; click → serving ${servingMs} ms, → first request ${firstRequestMs} ms`
    )
    await page.close({ runBeforeUnload: true })
    return {
      threads: used,
      kv,
      msPerLayer,
      ratioToNode: msPerLayer / nodeMs,
      longMsPerLayer,
      longRatioToNode: longMsPerLayer / nodeLongMs,
      clickToServingMs: servingMs,
      clickToFirstRequestMs: firstRequestMs
    }
  } finally {
    await ctx.close()
    // Gone from the relay's view (its withdraw, or its connection closing), however this tab's run ended.
    if (peerId !== undefined) {
      await waitFor(async () => !(await api(http, '/api/network')).peers.some((p: { peer: string }) => p.peer === peerId), 30_000).catch(() => {
        console.error(`the ${backend} tab (${peerId}) was still listed 30 s after it closed`)
      })
    }
  }
}
