/**
 * Tabs over a federation, in Debian's Chromium: two relays (B configured with A), two native
 * nodes announcing to both, a contributing tab and an SDK page both loaded from relay A. After
 * kill -9 of A: the SDK's next generation reads its peers from B and returns the reference ids;
 * an SDK whose first relay is already gone connects through the next; the contributing tab,
 * which took a reservation on B too and announces to it, stays listed and serves B's clients.
 */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Browser, BrowserContext } from 'playwright-core'
import { buildModel } from '../host/model-store.js'
import { reference, stories } from './helpers/reference.js'
import { REPO, tempDir } from './helpers/paths.js'
import { api, spawnRelay, spawnTessera, waitFor, type Proc } from './helpers/network.js'
import { consoleOf, context, hasChromium, launch, screenshot } from './helpers/browser.js'

const WEB = join(REPO, 'dist', 'web')
const procs: Proc[] = []
let browser: Browser | undefined
let ctx: BrowserContext
let a: Proc
let b: Proc
const nodes: Proc[] = []

describe.skipIf(!hasChromium() && process.env.CI !== 'true')('the SDK with several relays', () => {
  beforeAll(async () => {
    if (!existsSync(join(WEB, 'index.html'))) throw new Error('dist/web is missing: npm test builds it (vite build) first')
    const model = tempDir('browser-relays-model')
    await buildModel(await stories(), model, { source: 'stories260K.bin', cuts: [2] })
    a = await spawnRelay(model, { extra: ['--web', WEB] })
    procs.push(a)
    b = await spawnRelay(model, { extra: ['--web', WEB, '--peer-relay', a.ready.nodeRelay] })
    procs.push(b)
    for (const layers of ['0-2', '2-5'])
      nodes.push(await spawnTessera(['node', '--relay', a.ready.nodeRelay, '--relay', b.ready.nodeRelay, '--model', model, '--layers', layers]))
    procs.push(...nodes)
    for (const r of [a, b]) await waitFor(async () => (await api(r.ready.http, '/api/network')).peers.length === 2)
    browser = await launch()
    ctx = await context(browser, a.ready.http)
  }, 180_000)
  afterAll(async () => {
    await browser?.close()
    for (const p of procs) if (p.proc.exitCode === null) p.proc.kill('SIGKILL')
  })

  it("after kill -9 of the relay the pages came from: the SDK's next generation reads its peers from the next relay; the contributing tab stays listed there and serves", async () => {
    // A contributing tab on [0,2), from relay A's page: it learns of B from A's /api/relay.
    const tab = await ctx.newPage()
    const tabLog = consoleOf(tab)
    await tab.goto(`${a.ready.http}/contribute.html?layers=0-2&backend=wasm&autostart=1`)
    await tab.waitForFunction(() => ['serving', 'refused', 'error'].includes(document.querySelector('#status')?.getAttribute('data-state') ?? ''), undefined, {
      timeout: 120_000
    })
    expect(await tab.getAttribute('#status', 'data-state'), tabLog.join('\n')).toBe('serving')
    const wasm = async (r: Proc) => (await api(r.ready.http, '/api/network')).peers.find((p: { device: string }) => p.device === 'wasm')
    await waitFor(async () => (await wasm(a)) !== undefined && (await wasm(b)) !== undefined)
    // Announced to B itself, not only relayed from A.
    expect((await wasm(b)).via).toBeUndefined()
    // B's network page names the federation it is part of.
    const net = await ctx.newPage()
    await net.goto(`${b.ready.http}/network.html`)
    await net.waitForFunction(() => document.querySelector('#updated')?.textContent?.includes('other relay') === true, undefined, { timeout: 10_000 })
    expect(await net.textContent('#updated')).toMatch(/one network with 1 other relay: …/)
    console.log(`screenshot: ${await screenshot(net, 'network-federation')}`)

    const page = await ctx.newPage()
    const log = consoleOf(page)
    await page.goto(`${a.ready.http}/index.html`)
    const c = reference()[0]
    const n = Math.min(12, c.decisive_prefix)
    const run = async (script: string): Promise<number[]> =>
      (await page.evaluate(script).catch((err: Error) => {
        throw new Error(`${err.message}\n${log.join('\n')}`)
      })) as number[]
    // A string, as a third-party page's script would be (vitest would rewrite import() in a function).
    const generate = `(async () => {
      const ids = []
      for await (const t of window.tessera.generate({ prompt: ${JSON.stringify(c.prompt)}, maxTokens: ${n} })) ids.push(t.id)
      return ids
    })()`
    const first = await run(`(async () => {
      const { connect } = await import('/sdk.js')
      window.tessera = await connect({ relays: [${JSON.stringify(b.ready.http)}] })
      return await ${generate}
    })()`)
    expect(first).toEqual(c.greedy.slice(0, n))
    a.proc.kill('SIGKILL')
    await new Promise((resolve) => setTimeout(resolve, 1500)) // past the directory's cache
    expect(await run(generate)).toEqual(c.greedy.slice(0, n))
    expect(log.join('\n')).toMatch(/reading peers from relay .* did not answer/)

    // A new SDK whose first relay is gone connects through the next (the module is cached from A).
    const fresh = await run(`(async () => {
      const { connect } = await import('/sdk.js')
      const t = await connect({ relay: ${JSON.stringify(a.ready.http)}, relays: [${JSON.stringify(b.ready.http)}] })
      const ids = []
      for await (const x of t.generate({ prompt: ${JSON.stringify(c.prompt)}, maxTokens: ${n} })) ids.push(x.id)
      await t.close()
      return ids
    })()`)
    expect(fresh).toEqual(c.greedy.slice(0, n))

    // Past the TTL, the tab is still listed by B (its own announces), and serves B's clients: the native [0,2) gone, it is the only one.
    await new Promise((resolve) => setTimeout(resolve, 32_000))
    expect(await wasm(b), tabLog.join('\n')).toBeDefined()
    nodes[0].proc.kill('SIGKILL')
    await waitFor(async () => (await api(b.ready.http, '/api/network')).peers.length === 2, 40_000)
    const r = await api(b.ready.http, '/v1/completions', { prompt: c.prompt, max_tokens: n, temperature: 0 })
    expect(r.tessera.tokens).toEqual(c.greedy.slice(0, n))
    expect(r.tessera.route.hops[0].device).toBe('wasm')
  }, 240_000)
})
