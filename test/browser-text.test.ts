/**
 * Text in the browser, end to end in Debian's Chromium: the default network's model
 * (random:tiny-llama3:1, the real Llama 3.1 tokenizer and chat template) served by two native
 * nodes; the playground and a page using /sdk.js read and write text with the tokenizer the tab
 * fetched from the relay, and it must agree with the relay's own, id for id and character for
 * character. The weights are random, so the words are noise: the text path is what is checked.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import type { Browser, BrowserContext, Page } from 'playwright-core'
import { buildModel, readManifest, readModelText } from '../host/model-store.js'
import { openSource } from '../host/source.js'
import type { ModelText } from '../shared/text/model-text.js'
import { REPO, tempDir } from './helpers/paths.js'
import { api, spawnTessera, waitFor, type Proc } from './helpers/network.js'
import { consoleOf, context, hasChromium, launch, screenshot } from './helpers/browser.js'

const WEB = join(REPO, 'dist', 'web')
const SOURCE = 'random:tiny-llama3:1'
let text: ModelText
let browser: Browser
let ctx: BrowserContext
let http: string
const procs: Proc[] = []

/** What #output showed each time it changed, and whether the generation had ended by then. */
interface Snapshot {
  text: string
  done: boolean
}

/** Runs the playground's form as it stands; returns the ids, the final text and every state the output went through. */
async function playground(page: Page): Promise<{ tokens: number[]; text: string; shown: string; snapshots: Snapshot[] }> {
  await page.evaluate(() => {
    const out = document.querySelector('#output') as HTMLElement
    const seen: Snapshot[] = []
    ;(window as unknown as { seen: Snapshot[] }).seen = seen
    new MutationObserver(() => {
      seen.push({ text: out.textContent ?? '', done: out.dataset.done === 'true' })
    }).observe(out, { childList: true, subtree: true, characterData: true, attributes: true })
  })
  await page.click('#generate')
  await page.waitForFunction(
    () => {
      const o = document.querySelector('#output')
      return o?.getAttribute('data-done') === 'true' || o?.hasAttribute('data-error') === true
    },
    undefined,
    { timeout: 120_000 }
  )
  const error = await page.getAttribute('#output', 'data-error')
  if (error !== null) throw new Error(`playground: ${error}`)
  return {
    tokens: JSON.parse((await page.getAttribute('#output', 'data-tokens'))!),
    text: (await page.getAttribute('#output', 'data-text'))!,
    shown: (await page.textContent('#output'))!,
    snapshots: await page.evaluate(() => (window as unknown as { seen: Snapshot[] }).seen)
  }
}

// CI installs Chromium (.ci/run), so there a missing browser fails rather than skips.
describe.skipIf(!hasChromium() && process.env.CI !== 'true')('text in the browser', () => {
  beforeAll(async () => {
    if (!existsSync(join(WEB, 'playground.html'))) throw new Error('dist/web is missing: npm test builds it (vite build) first')
    const model = tempDir('browser-text-model')
    const src = await openSource(SOURCE)
    await buildModel(src.weights, model, { source: SOURCE, name: src.name, shards: 2, tokenizer: src.tokenizer, tokenizerConfig: src.tokenizerConfig })
    const read = await readModelText(model, await readManifest(model))
    if (read === undefined) throw new Error(`${SOURCE} was built without its tokenizer`)
    text = read
    const relay = await spawnTessera([
      'relay',
      '--port',
      '0',
      '--p2p-port',
      '0',
      '--model',
      model,
      '--web',
      WEB,
      '--ledger-file',
      join(tempDir('browser-text-ledger'), 'ledger.sqlite')
    ])
    procs.push(relay)
    http = relay.ready.http
    for (const layers of ['0-2', '2-4']) procs.push(await spawnTessera(['node', '--relay', relay.ready.relay, '--model', model, '--layers', layers]))
    await waitFor(async () => (await api(http, '/api/network')).models[0]?.coverage.every((c: number) => c > 0))
    browser = await launch()
    ctx = await context(browser, http)
  }, 180_000)
  afterAll(async () => {
    await browser?.close()
    for (const p of procs) p.proc.kill('SIGKILL')
  })

  it('the playground streams text for a text prompt and for a chat, and it is the relay tokenizer’s decode of the ids', async () => {
    const page = await ctx.newPage()
    const log = consoleOf(page)
    await page.goto(`${http}/playground.html`)
    // The chat box opens once the tab has the model's tokenizer and found a chat template in it.
    await page.waitForSelector('#chat:not([disabled])', { timeout: 60_000 })
    expect(await page.textContent('#text-note')).toContain('own tokenizer')
    await page.fill('#prompt-ids', '')
    await page.fill('#prompt', 'Once upon a time')
    await page.fill('#max-tokens', '12')
    const r = await playground(page).catch((err: Error) => {
      throw new Error(`${err.message}\n${log.join('\n')}`)
    })
    expect(r.tokens.length).toBeGreaterThan(0)
    expect(r.text).toBe(text.decode(r.tokens))
    expect(r.text).not.toBe('')
    expect(r.shown).toBe(r.text)
    // Streamed: text was on the page before the generation ended, growing, each state a beginning of the answer.
    const partial = [...new Set(r.snapshots.filter((s) => !s.done && s.text !== '').map((s) => s.text))]
    expect(partial.length, JSON.stringify(r.snapshots)).toBeGreaterThanOrEqual(2)
    for (const p of partial) expect(r.text.startsWith(p), `${JSON.stringify(p)} begins ${JSON.stringify(r.text)}`).toBe(true)
    await screenshot(page, 'playground-text')

    await page.check('#chat')
    const c = await playground(page)
    expect(c.text).toBe(text.decode(c.tokens))
    expect(c.shown).toBe(c.text)
    await screenshot(page, 'playground-chat')
  }, 180_000)

  it('the SDK: generate() from text and chat() stream text deltas that join to the result’s text, with the relay tokenizer’s ids', async () => {
    const page = await ctx.newPage()
    const log = consoleOf(page)
    await page.goto(`${http}/index.html`)
    // A string, as a third-party page's script would be (vitest would rewrite import() in a function).
    const script = `(async () => {
      const { connect } = await import('/sdk.js')
      const tessera = await connect()
      const run = async (gen) => {
        const deltas = []
        for await (const t of gen) deltas.push(t.text)
        const r = await gen.result
        return { deltas, text: r.text, tokens: r.tokens, prompt: r.prompt, finishReason: r.finishReason }
      }
      const completion = await run(tessera.generate({ prompt: 'Once upon a time', maxTokens: 8 }))
      const chat = await run(tessera.chat({ messages: [{ role: 'user', content: 'Hi' }], maxTokens: 8 }))
      const encoded = (await tessera.text()).encode('Once upon a time')
      await tessera.close()
      return { completion, chat, encoded }
    })()`
    type Run = { deltas: string[]; text: string; tokens: number[]; prompt: number[]; finishReason: string }
    const out = (await page.evaluate(script).catch((err: Error) => {
      throw new Error(`${err.message}\n${log.join('\n')}`)
    })) as { completion: Run; chat: Run; encoded: number[] }

    const prompt = text.encode('Once upon a time')
    expect(prompt[0]).toBe(128000) // Llama 3's <|begin_of_text|>, added by the tokenizer
    expect(out.encoded).toEqual(prompt)
    expect(out.completion.prompt).toEqual(prompt)
    expect(out.completion.deltas).toHaveLength(out.completion.tokens.length)
    expect(out.completion.deltas.join('')).toBe(out.completion.text)
    expect(out.completion.text).toBe(text.decode(out.completion.tokens))

    expect(out.chat.prompt).toEqual(text.encodeChat([{ role: 'user', content: 'Hi' }]))
    expect(out.chat.deltas.join('')).toBe(out.chat.text)
    expect(out.chat.text).toBe(text.decode(out.chat.tokens))
  }, 120_000)

  it('the SDK: a stop string ends the answer just before it, as it does on the relay', async () => {
    const page = await ctx.newPage()
    const log = consoleOf(page)
    await page.goto(`${http}/index.html`)
    const greedy = await api(http, '/v1/completions', { prompt: 'Once upon a time', max_tokens: 12, temperature: 0 })
    const full: string = greedy.choices[0].text
    // A piece from the middle of the relay's answer: the tab's answer must end right before it.
    const stop = full.slice(Math.floor(full.length / 2), Math.floor(full.length / 2) + 3)
    expect(stop.length, `the relay's answer ${JSON.stringify(full)} is too short to cut`).toBe(3)
    const script = `(async () => {
      const { connect } = await import('/sdk.js')
      const tessera = await connect()
      const gen = tessera.generate({ prompt: 'Once upon a time', maxTokens: 12, stop: ${JSON.stringify([stop])} })
      const deltas = []
      for await (const t of gen) deltas.push(t.text)
      const r = await gen.result
      await tessera.close()
      return { deltas, text: r.text, finishReason: r.finishReason }
    })()`
    const out = (await page.evaluate(script).catch((err: Error) => {
      throw new Error(`${err.message}\n${log.join('\n')}`)
    })) as { deltas: string[]; text: string; finishReason: string }
    expect(out.text).toBe(full.slice(0, full.indexOf(stop)))
    expect(out.deltas.join('')).toBe(out.text)
    expect(out.finishReason).toBe('stop')
  }, 120_000)
})
