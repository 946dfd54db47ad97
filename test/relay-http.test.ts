import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { readFile, writeFile, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { Registry } from 'prom-client'
import { buildModel } from '../host/model-store.js'
import { randomWeights } from '../shared/model/random.js'
import { preset } from '../shared/model/config.js'
import type { Manifest } from '../shared/manifest.js'
import type { GenerationRequest, GenerationResult, Generator, NetworkView, TokenEvent } from '../shared/client/types.js'
import { NoRouteError, InputError, HopError } from '../shared/errors.js'
import { createHttpApp, serveHttp, type HttpDeps } from '../relay/http.js'
import { createMetricsRegistry } from '../relay/metrics.js'
import { startRelay } from '../relay/relay.js'
import { parseIceServer } from '../relay/config.js'
import { modelText, type ModelText } from '../shared/text/model-text.js'
import { chatTemplate } from '../shared/text/chat.js'
import type { Tokenizer } from '../shared/tokenizer.js'
import { tempDir } from './helpers/paths.js'
import { buildStories, modelRunners, type ModelRunners } from './helpers/memory-model.js'
import { memoryNet } from './helpers/memory-net.js'
import { generateAll, memoryClient } from './helpers/memory-client.js'

const HOPS = [
  { peer: 'peerA', device: 'cpu', layers: [0, 2] as [number, number], ms: 1 },
  { peer: 'peerB', device: 'webgpu', layers: [2, 4] as [number, number], ms: 2 }
]

/**
 * A unit-test fake: tokens are the prompt reversed (cut to maxTokens), so the test checks the
 * plumbing, not a model. Special first prompt ids make it fail or run until aborted.
 */
function fakeGenerator(): Generator & { calls: Array<{ req: GenerationRequest; signal?: AbortSignal }> } {
  const calls: Array<{ req: GenerationRequest; signal?: AbortSignal }> = []
  return {
    calls,
    async *generate(req, signal): AsyncGenerator<TokenEvent, GenerationResult> {
      calls.push({ req, signal })
      if (req.prompt[0] === 900) throw new NoRouteError('no peers serve layers 2-4')
      if (req.prompt[0] === 901) throw new InputError('token 9999 is outside the vocabulary')
      if (req.prompt[0] === 902) throw new HopError('peerA', 'TIMEOUT', 'timed out')
      if (req.prompt[0] === 903) throw new Error('boom')
      if (req.prompt[0] === 905) {
        yield { id: 1, index: 0, hops: HOPS }
        throw new HopError('peerB', 'RESET', 'stream reset')
      }
      const endless = req.prompt[0] === 904
      const tokens = endless ? [] : [...req.prompt].reverse().slice(0, req.maxTokens)
      for (let i = 0; endless || i < tokens.length; i++) {
        if (signal?.aborted === true) throw signal.reason
        if (endless) {
          await new Promise((resolve) => setTimeout(resolve, 10))
          tokens.push(7)
        }
        // With logprobs asked, a made-up but well-formed distribution: the chosen id at ln ½.
        const lp = req.logprobs === undefined ? {} : { logprob: Math.log(0.5), top: [{ id: tokens[i], logprob: Math.log(0.5) }] }
        yield { id: tokens[i], index: i, hops: HOPS, ...lp }
        if (req.stopIds?.includes(tokens[i]) === true || req.until?.() === true) {
          tokens.length = i + 1
          break
        }
      }
      return {
        model: 'tiny',
        root: 'r00t',
        prompt: req.prompt,
        tokens,
        finishReason: tokens.length < Math.min(req.prompt.length, req.maxTokens) ? 'stop' : 'length',
        route: { hops: HOPS, switches: [] },
        verification: { mode: req.verification?.mode ?? 'none', checks: 0, mismatches: 0, closest: { minOverlap: 1, maxRelErr: 0 }, hops: [], faults: [] },
        timings: { firstTokenMs: 5, totalMs: 20 }
      }
    }
  }
}

const NETWORK: NetworkView = {
  models: [{ name: 'tiny', root: 'r00t', layers: 4, coverage: [1, 1, 1, 1] }],
  peers: [
    { peer: 'peerA', device: 'cpu', model: 'tiny', root: 'r00t', layers: [0, 2], msPerLayer: 1, memory: 1e9, kvRoom: 8, sessions: 0, addrs: [], expires: 0 },
    { peer: 'peerB', device: 'webgpu', model: 'tiny', root: 'r00t', layers: [2, 4], msPerLayer: 2, memory: 1e9, kvRoom: 8, sessions: 0, addrs: [], expires: 0 }
  ]
}

let dir: string
let manifest: Manifest
let webRoot: string
const post = (path: string, body: unknown, init: RequestInit = {}): Request =>
  new Request(`http://relay${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    ...init
  })
function app(over: Partial<HttpDeps> = {}): { app: ReturnType<typeof createHttpApp>; gen: ReturnType<typeof fakeGenerator> } {
  const gen = fakeGenerator()
  return { gen, app: createHttpApp({ generator: gen, network: () => NETWORK, models: [{ dir, manifest }], webRoot, ...over }) }
}
/** The `data:` payloads of an SSE body, in order. */
const sseData = (text: string): string[] =>
  text
    .split('\n')
    .filter((l) => l.startsWith('data: '))
    .map((l) => l.slice(6))

beforeAll(async () => {
  dir = tempDir('relay-http')
  manifest = await buildModel(randomWeights(preset('tiny'), 1), dir, { source: 'x', shards: 2 })
  webRoot = tempDir('relay-web')
  await writeFile(join(webRoot, 'index.html'), '<!doctype html><title>tessera</title>')
  await mkdir(join(webRoot, 'assets'))
  await writeFile(join(webRoot, 'assets', 'app.js'), 'console.log(1)')
})

describe('OpenAI completions', () => {
  it('answers token ids with tokens, text and the route', async () => {
    const { app: a, gen } = app()
    const res = await a.request(post('/v1/completions', { prompt: [1, 5, 9], max_tokens: 2, seed: 3, tessera_stop_ids: [2] }))
    expect(res.status).toBe(200)
    const body = await res.json()
    expect(body).toMatchObject({
      object: 'text_completion',
      model: 'tiny',
      choices: [{ index: 0, text: '9 5', finish_reason: 'length', logprobs: null }],
      usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
      tessera: { tokens: [9, 5], prompt: [1, 5, 9], root: 'r00t', route: { hops: HOPS }, timings: { firstTokenMs: 5 } }
    })
    expect(body.id).toMatch(/^cmpl-/)
    // Greedy by default (temperature 0), fields mapped onto the GenerationRequest.
    expect(gen.calls[0].req).toMatchObject({ prompt: [1, 5, 9], maxTokens: 2, temperature: 0, seed: 3, stopIds: [2] })
    expect(gen.calls[0].signal).toBeInstanceOf(AbortSignal)
  })

  it('streams one SSE chunk per token, a final chunk, then [DONE]', async () => {
    const res = await app().app.request(post('/v1/completions', { prompt: [[4, 3, 2]], stream: true }))
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/)
    const data = sseData(await res.text())
    expect(data.at(-1)).toBe('[DONE]')
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d))
    expect(
      chunks
        .slice(0, 3)
        .map((c) => c.choices[0].text)
        .join('')
    ).toBe('2 3 4')
    expect(chunks.slice(0, 3).map((c) => c.tessera)).toEqual([2, 3, 4].map((token, index) => ({ token, index, hops: HOPS })))
    expect(chunks[0]).toMatchObject({ object: 'text_completion', choices: [{ finish_reason: null }] })
    expect(chunks[3]).toMatchObject({
      choices: [{ text: '', finish_reason: 'length' }],
      tessera: { tokens: [2, 3, 4], route: { hops: HOPS }, timings: { totalMs: 20 } }
    })
  })

  /** Characters as ids; `~` (126) is its EOS. With a chat template unless `template: false`. */
  const charText = (template = true): ModelText => {
    const tok: Tokenizer = {
      size: 128,
      eosId: 126,
      encode: (t: string) => [...t].map((ch) => ch.charCodeAt(0)),
      // Special tokens are not text, as a real tokenizer's decode drops them.
      decode: (ids: number[]) => String.fromCharCode(...ids.filter((id) => id !== 126))
    }
    const chat = template
      ? chatTemplate({ chat_template: '{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}' })
      : undefined
    return modelText(tok, chat, manifest)
  }

  it('uses the model text for text prompts and chat (through its template), and streams chat deltas', async () => {
    const text = charText()
    const { app: a, gen } = app({ text: (m) => (m === 'tiny' ? text : undefined) })
    const plain = await (await a.request(post('/v1/completions', { prompt: 'abc' }))).json()
    expect(plain.choices[0].text).toBe('cba')
    // The answer ends at the model's EOS by default (OpenAI's semantics), besides the model's own.
    expect(gen.calls[0].req.stopIds).toEqual(expect.arrayContaining([126]))
    const chat = await a.request(post('/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], max_completion_tokens: 50 }))
    expect(gen.calls[1].req.prompt).toEqual(text.tokenizer.encode('user: hi\nassistant:'))
    expect(await chat.json()).toMatchObject({
      object: 'chat.completion',
      choices: [{ message: { role: 'assistant', content: ':tnatsissa\nih :resu' }, finish_reason: 'length' }]
    })
    const streamed = sseData(
      await (await a.request(post('/v1/chat/completions', { messages: [{ role: 'user', content: 'yo' }], stream: true, max_tokens: 2 }))).text()
    )
    const chunks = streamed.slice(0, -1).map((d) => JSON.parse(d))
    expect(chunks.map((c) => c.object)).toEqual(['chat.completion.chunk', 'chat.completion.chunk', 'chat.completion.chunk'])
    expect(chunks[0].choices[0].delta).toEqual({ role: 'assistant', content: ':' })
    expect(chunks[1].choices[0].delta).toEqual({ content: 't' })
    expect(chunks[2].choices[0]).toMatchObject({ delta: {}, finish_reason: 'length' })
    // Usage only when asked (stream_options.include_usage), in a chunk of its own with no choices.
    expect(chunks.some((c) => 'usage' in c)).toBe(false)
  })

  it('ends at a stop string without showing it, streamed or not, and at EOS unless ignore_eos', async () => {
    const text = charText()
    const { app: a, gen } = app({ text: () => text })
    // The fake answers the prompt reversed: "hello world" → "dlrow olleh".
    const plain = await (await a.request(post('/v1/completions', { prompt: 'hello world', stop: ['ol', 'zz'] }))).json()
    expect(plain.choices[0]).toMatchObject({ text: 'dlrow ', finish_reason: 'stop' })
    expect(plain.usage.completion_tokens).toBe('dlrow ol'.length)
    const sse = sseData(await (await a.request(post('/v1/completions', { prompt: 'hello world', stop: 'ol', stream: true }))).text())
    const chunks = sse.slice(0, -1).map((d) => JSON.parse(d))
    expect(chunks.map((c) => c.choices[0].text).join('')).toBe('dlrow ')
    expect(chunks.at(-1).choices[0].finish_reason).toBe('stop')
    // A stop string that never completes is held back only while it might, then shown.
    const partial = await (await a.request(post('/v1/completions', { prompt: 'xyzo', stop: ['oz!'] }))).json()
    expect(partial.choices[0].text).toBe('ozyx')
    // EOS (~) ends the answer; ignore_eos runs past it.
    const eos = await (await a.request(post('/v1/completions', { prompt: 'ab~cd' }))).json()
    expect(eos.choices[0]).toMatchObject({ text: 'dc', finish_reason: 'stop' })
    await a.request(post('/v1/completions', { prompt: 'ab~cd', ignore_eos: true }))
    expect(gen.calls.at(-1)!.req.stopIds ?? []).not.toContain(126)
  })

  it('reports usage with include_usage and logprobs in OpenAI shapes', async () => {
    const text = charText()
    const a = app({ text: () => text }).app
    const sse = sseData(await (await a.request(post('/v1/completions', { prompt: 'abc', stream: true, stream_options: { include_usage: true } }))).text())
    const chunks = sse.slice(0, -1).map((d) => JSON.parse(d))
    expect(chunks.at(-1)).toMatchObject({ choices: [], usage: { prompt_tokens: 3, completion_tokens: 3, total_tokens: 6 } })
    const legacy = await (await a.request(post('/v1/completions', { prompt: 'abc', logprobs: 1 }))).json()
    expect(legacy.choices[0].logprobs).toEqual({
      tokens: ['c', 'b', 'a'],
      token_logprobs: [Math.log(0.5), Math.log(0.5), Math.log(0.5)],
      top_logprobs: [{ c: Math.log(0.5) }, { b: Math.log(0.5) }, { a: Math.log(0.5) }],
      text_offset: [0, 1, 2]
    })
    const chat = await (
      await a.request(post('/v1/chat/completions', { messages: [{ role: 'user', content: 'ab' }], logprobs: true, top_logprobs: 1, max_tokens: 1 }))
    ).json()
    expect(chat.choices[0].logprobs).toEqual({
      content: [{ token: ':', logprob: Math.log(0.5), bytes: [58], top_logprobs: [{ token: ':', logprob: Math.log(0.5), bytes: [58] }] }],
      refusal: null
    })
  })

  it('refuses chat for a model without a chat template, and wrong stop, logprobs and roles, with 400', async () => {
    const a = app({ text: () => charText(false) }).app
    const none = await a.request(post('/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }] }))
    expect(none.status).toBe(400)
    expect((await none.json()).error).toMatchObject({ code: 'no_chat_template', message: expect.stringMatching(/no chat template/) })
    const b = app({ text: () => charText() }).app
    const cases: Array<[string, unknown, RegExp]> = [
      ['/v1/completions', { prompt: 'a', stop: ['a', 'b', 'c', 'd', 'e'] }, /stop must be/],
      ['/v1/completions', { prompt: 'a', stop: [''] }, /stop must be/],
      ['/v1/completions', { prompt: 'a', logprobs: 6 }, /logprobs must be an integer from 0 to 5/],
      ['/v1/chat/completions', { messages: [{ role: 'user', content: 'a' }], top_logprobs: 2 }, /top_logprobs needs logprobs/],
      ['/v1/chat/completions', { messages: [{ role: 'wizard', content: 'a' }] }, /role must be one of/],
      ['/v1/completions', { prompt: 'a', stream_options: { include_usage: 'yes' } }, /include_usage must be true or false/]
    ]
    for (const [path, body, message] of cases) {
      const res = await b.request(post(path, body))
      expect(res.status, JSON.stringify(body)).toBe(400)
      expect((await res.json()).error.message).toMatch(message)
    }
    // Fields OpenAI has and Tessera does not use are ignored, as OpenAI ignores unknown ones.
    expect((await b.request(post('/v1/completions', { prompt: 'a', presence_penalty: 0.5, user: 'x', logit_bias: {} }))).status).toBe(200)
  })

  it('refuses text without a tokenizer, batches, bad JSON and wrong types with 400', async () => {
    const a = app().app
    const cases: Array<[unknown, RegExp]> = [
      [{ messages: [{ role: 'user', content: 'hi' }] }, /chat needs text/],
      ['{not json', /not valid JSON/],
      [[1, 2], /must be a JSON object/],
      [{ prompt: [[1], [2]] }, /batched prompts are not supported/],
      [{ prompt: [1, -2] }, /array of token ids/],
      [{ prompt: [1], max_tokens: 0 }, /max_tokens must be a positive integer/],
      [{ prompt: [1], temperature: 'hot' }, /temperature must be a number/],
      [{ prompt: [1], top_p: 2 }, /top_p/],
      [{ prompt: [1], stream: 'yes' }, /stream must be true or false/],
      [{ prompt: [1], n: 2 }, /n must be 1/],
      [{}, /prompt is required/]
    ]
    for (const [body, message] of cases) {
      const path = typeof body === 'object' && body !== null && 'messages' in body ? '/v1/chat/completions' : '/v1/completions'
      const res = await a.request(post(path, body))
      expect(res.status, JSON.stringify(body)).toBe(400)
      const err = (await res.json()).error
      expect(err.message).toMatch(message)
      expect(err.type).toBe('invalid_request_error')
    }
    const text = await a.request(post('/v1/completions', { prompt: 'hello' }))
    expect(text.status).toBe(400)
    expect((await text.json()).error.message).toMatch(/send prompt as an array of token ids/)
  })

  it('maps generator errors to 503, 400, 502 and 500, also when streaming', async () => {
    const a = app().app
    for (const [first, status, code] of [
      [900, 503, 'NO_ROUTE'],
      [901, 400, 'INPUT'],
      [902, 502, 'TIMEOUT'],
      [903, 500, 'internal_error']
    ] as const) {
      for (const stream of [false, true]) {
        const res = await a.request(post('/v1/completions', { prompt: [first], stream }))
        expect(res.status).toBe(status)
        expect((await res.json()).error).toMatchObject({ code })
      }
    }
    // After the first token the status is sent: the error travels in-band, then the stream ends.
    const mid = await a.request(post('/v1/completions', { prompt: [905], stream: true }))
    expect(mid.status).toBe(200)
    const data = sseData(await mid.text())
    expect(data).toHaveLength(2)
    expect(JSON.parse(data[1]).error).toMatchObject({ code: 'RESET', type: 'upstream_error' })
  })

  it('aborts the generation when the client goes away', async () => {
    for (const how of ['signal', 'cancel'] as const) {
      const { app: a, gen } = app()
      const ac = new AbortController()
      const res = await a.fetch(post('/v1/completions', { prompt: [904], stream: true, max_tokens: 1000 }, { signal: ac.signal }))
      const reader = res.body!.getReader()
      expect(new TextDecoder().decode((await reader.read()).value)).toMatch(/^data: /)
      const signal = gen.calls[0].signal!
      expect(signal.aborted).toBe(false)
      if (how === 'signal') ac.abort()
      else await reader.cancel()
      await expect.poll(() => signal.aborted).toBe(true)
    }
  })

  it("lists the network's models", async () => {
    const body = await (await app().app.request('/v1/models')).json()
    expect(body).toEqual({
      object: 'list',
      data: [{ id: 'tiny', object: 'model', created: 0, owned_by: 'tessera', tessera: { root: 'r00t', layers: 4, coverage: [1, 1, 1, 1] } }]
    })
  })
})

describe('model files', () => {
  const file = (): { sha256: string; name: string; bytes: number } => manifest.shards[1].files[1]

  it('serves a manifest by root and a shard file by hash, whole', async () => {
    const a = app().app
    const m = await a.request(`/models/${manifest.root}/manifest.json`)
    expect(m.status).toBe(200)
    expect(await m.json()).toEqual(manifest)
    const res = await a.request(`/shards/${file().sha256}`)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-length')).toBe(String(file().bytes))
    expect(res.headers.get('etag')).toBe(`"${file().sha256}"`)
    expect(res.headers.get('cache-control')).toBe('public, max-age=31536000, immutable')
    expect(res.headers.get('access-control-allow-origin')).toBe('*')
    expect(Buffer.from(await res.arrayBuffer()).equals(await readFile(join(dir, file().name)))).toBe(true)
  })

  it('answers byte ranges with 206 and the right bytes', async () => {
    const a = app().app
    const disk = await readFile(join(dir, file().name))
    const size = disk.byteLength
    for (const [range, start, end] of [
      ['bytes=0-99', 0, 99],
      ['bytes=100-', 100, size - 1],
      ['bytes=-50', size - 50, size - 1],
      [`bytes=10-${size + 100}`, 10, size - 1]
    ] as const) {
      const res = await a.request(`/shards/${file().sha256}`, { headers: { Range: range } })
      expect(res.status, range).toBe(206)
      expect(res.headers.get('content-range')).toBe(`bytes ${start}-${end}/${size}`)
      expect(res.headers.get('content-length')).toBe(String(end - start + 1))
      expect(Buffer.from(await res.arrayBuffer()).equals(disk.subarray(start, end + 1))).toBe(true)
    }
    const bad = await a.request(`/shards/${file().sha256}`, { headers: { Range: `bytes=${size}-` } })
    expect(bad.status).toBe(416)
    expect(bad.headers.get('content-range')).toBe(`bytes */${size}`)
    const cached = await a.request(`/shards/${file().sha256}`, { headers: { 'If-None-Match': `"${file().sha256}"` } })
    expect(cached.status).toBe(304)
    const head = await a.request(`/shards/${file().sha256}`, { method: 'HEAD' })
    expect(head.status).toBe(200)
    expect(head.headers.get('content-length')).toBe(String(size))
    expect(head.body).toBeNull()
  })

  it('404s unknown hashes and roots with a JSON error, and serves nothing else', async () => {
    const a = app().app
    for (const path of [`/shards/${'0'.repeat(64)}`, '/shards/..%2Fmanifest.json', `/models/${'1'.repeat(64)}/manifest.json`]) {
      const res = await a.request(path)
      expect(res.status, path).toBe(404)
      expect((await res.json()).error.message).toMatch(/no (shard file|model)/)
    }
    // A manifest is data: a file name escaping the model directory is never served.
    const evil: Manifest = { ...manifest, shards: [{ ...manifest.shards[0], files: [{ name: '../../etc/passwd', bytes: 1, sha256: 'a'.repeat(64) }] }] }
    const b = app({ models: [{ dir, manifest: evil }] }).app
    expect((await b.request(`/shards/${'a'.repeat(64)}`)).status).toBe(404)
  })
})

describe('the rest', () => {
  it('shows the network view', async () => {
    expect(await (await app().app.request('/api/network')).json()).toEqual(NETWORK)
  })

  it('exposes Prometheus metrics, including gauges read from the network', async () => {
    const registry = createMetricsRegistry(() => NETWORK)
    const a = app({ metrics: registry }).app
    await a.request(post('/v1/completions', { prompt: [1, 2, 3] }))
    await a.request(post('/v1/completions', { prompt: [900] }))
    const res = await a.request('/metrics')
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/)
    const text = await res.text()
    expect(text).toMatch(/tessera_http_requests_total\{method="POST",route="\/v1\/completions",status="200"\} 1/)
    expect(text).toMatch(/tessera_http_requests_total\{method="POST",route="\/v1\/completions",status="503"\} 1/)
    expect(text).toMatch(/tessera_generated_tokens_total\{model="tiny"\} 3/)
    expect(text).toMatch(/tessera_generation_seconds_count\{model="tiny"\} 1/)
    expect(text).toMatch(/tessera_first_token_seconds_bucket/)
    expect(text).toMatch(/tessera_peers 2/)
    expect(text).toMatch(/tessera_peers_by_device\{device="webgpu"\} 1/)
    expect(text).toMatch(/tessera_model_min_coverage\{model="tiny"\} 1/)
    // Any Registry works: the app adds its metrics to it.
    const plain = new Registry()
    await app({ metrics: plain }).app.request('/api/network')
    expect(await plain.metrics()).toMatch(/tessera_http_requests_total\{method="GET",route="\/api\/network",status="200"\} 1/)
  })

  it('serves the web root with cross-origin isolation headers everywhere, CORS on the API', async () => {
    const a = app().app
    for (const path of ['/', '/assets/app.js', '/api/network', '/nope']) {
      const res = await a.request(path)
      expect(res.headers.get('cross-origin-opener-policy'), path).toBe('same-origin')
      expect(res.headers.get('cross-origin-embedder-policy'), path).toBe('require-corp')
    }
    const index = await a.request('/')
    expect(index.status).toBe(200)
    expect(await index.text()).toMatch(/<title>tessera/)
    expect(index.headers.get('access-control-allow-origin')).toBeNull()
    const pre = await a.request('/v1/chat/completions', {
      method: 'OPTIONS',
      headers: { Origin: 'https://elsewhere.example', 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type' }
    })
    expect(pre.status).toBe(204)
    expect(pre.headers.get('access-control-allow-origin')).toBe('*')
    expect(pre.headers.get('access-control-allow-headers')).toMatch(/content-type/i)
  })

  it('listens on a real loopback port with serveHttp', async () => {
    const { app: a, gen } = app()
    const server = await serveHttp(a, { port: 0 })
    try {
      expect(server.port).toBeGreaterThan(0)
      const base = `http://127.0.0.1:${server.port}`
      expect(await (await fetch(`${base}/api/network`)).json()).toEqual(NETWORK)
      const sha = manifest.shards[0].files[0].sha256
      const part = await fetch(`${base}/shards/${sha}`, { headers: { Range: 'bytes=0-9' } })
      expect(part.status).toBe(206)
      expect(Buffer.from(await part.arrayBuffer()).equals((await readFile(join(dir, manifest.shards[0].files[0].name))).subarray(0, 10))).toBe(true)
      const sse = await fetch(`${base}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: [1, 2], stream: true }) })
      expect(sseData(await sse.text()).at(-1)).toBe('[DONE]')
      // A real socket closing must abort the generation too.
      const ac = new AbortController()
      const endless = await fetch(`${base}/v1/completions`, {
        method: 'POST',
        body: JSON.stringify({ prompt: [904], stream: true, max_tokens: 1000 }),
        signal: ac.signal
      })
      await endless.body!.getReader().read()
      const signal = gen.calls.at(-1)!.signal!
      ac.abort()
      await expect.poll(() => signal.aborted).toBe(true)
    } finally {
      await server.close()
    }
  })
})

describe('max_tokens past the context (OpenAI length semantics)', () => {
  let model: ModelRunners
  beforeAll(async () => {
    model = await modelRunners(await buildStories([2]))
  })
  afterAll(async () => {
    await model.dispose()
  })

  it('stops at the context with finish_reason length and returns what was generated; a prompt that fills the context is a 400', async () => {
    const net = memoryNet(model)
    await net.add({ layers: [0, 2] })
    await net.add({ layers: [2, 5] })
    const client = memoryClient(net)
    const view = await client.network()
    const context = model.manifest.config.maxSeqLen
    const a = createHttpApp({ generator: client, network: () => view, models: [{ dir: model.dir, manifest: model.manifest }] })
    try {
      // Without the bound, the client runs until the nodes refuse the step past the context, and the tokens are lost.
      await expect(generateAll(client, { prompt: [1, 2, 3], maxTokens: context + 50 })).rejects.toThrow(/exceeds the model's/)
      const res = await a.request(post('/v1/completions', { prompt: [1, 2, 3], max_tokens: context + 50 }))
      expect(res.status).toBe(200)
      const body = await res.json()
      expect(body.choices[0].finish_reason).toBe('length')
      expect(body.usage).toEqual({ prompt_tokens: 3, completion_tokens: context - 3, total_tokens: context })
      // The same tokens as a generation asked for exactly that many: nothing was cut or recomputed.
      expect(body.tessera.tokens).toEqual((await generateAll(client, { prompt: [1, 2, 3], maxTokens: context - 3 })).tokens)
      // Streamed too: the last chunk says length.
      const sse = sseData(await (await a.request(post('/v1/completions', { prompt: [1, 2, 3], max_tokens: context + 50, stream: true }))).text())
      expect(JSON.parse(sse.at(-2)!).choices[0].finish_reason).toBe('length')
      expect(sse.slice(0, -2)).toHaveLength(context - 3)
      // A prompt that leaves no room: refused before anything is computed.
      const dials = net.dials.length
      const full = await a.request(post('/v1/completions', { prompt: new Array(context).fill(1), max_tokens: 1 }))
      expect(full.status).toBe(400)
      expect((await full.json()).error).toMatchObject({ code: 'context_length_exceeded' })
      expect(net.dials.length).toBe(dials)
    } finally {
      net.stop()
    }
  }, 120_000)
})

describe('a public relay', () => {
  it('gives out its announced addresses and its STUN/TURN servers at /api/relay', async () => {
    const relay = await startRelay({
      httpPort: 0,
      p2pPort: 0,
      ledger: join(tempDir('relay-public'), 'ledger.sqlite'),
      announce: ['/dns4/relay.example.org/tcp/443/wss'],
      iceServers: [parseIceServer('stun:stun.example.org:3478'), parseIceServer('turn:alice:s%40cret@turn.example.org:3478')]
    })
    try {
      const info = await (await fetch(`${relay.httpUrl}/api/relay`)).json()
      expect(info.addrs).toEqual([`/dns4/relay.example.org/tcp/443/wss/p2p/${relay.libp2p.peerId.toString()}`])
      expect(info.iceServers).toEqual([{ urls: 'stun:stun.example.org:3478' }, { urls: 'turn:turn.example.org:3478', username: 'alice', credential: 's@cret' }])
    } finally {
      await relay.stop()
    }
    expect(() => parseIceServer('http://stun.example.org')).toThrow(/expected stun:HOST\[:PORT\] or turn:USER:PASS@HOST\[:PORT\]/)
  })
})
