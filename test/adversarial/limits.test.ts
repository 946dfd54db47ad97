/**
 * The HTTP API under abuse, in process (`app.request`, no server): what an attacker sends is refused
 * with the status and message it should get, before the generator (or the network) does any work.
 */
import { describe, it, expect } from 'vitest'
import type { GenerationRequest, GenerationResult, Generator, NetworkView, TokenEvent } from '../../shared/client/types.js'
import { createClient } from '../../shared/client/client.js'
import { CircuitOpenError, HopError, InputError } from '../../shared/errors.js'
import type { Ledger } from '../../shared/ledger/types.js'
import type { ClaimBoard } from '../../shared/optimistic/board.js'
import { MAX_STEP_TOKENS } from '../../shared/protocol/limits.js'
import { createHttpApp, type HttpDeps } from '../../relay/http.js'
import { HTTP_DEFAULTS } from '../../relay/config.js'
import { modelText } from '../../shared/text/model-text.js'
import { chatTemplate } from '../../shared/text/chat.js'
import { preset } from '../../shared/model/config.js'
import { RETRY_AFTER_S } from '../../relay/errors.js'

const NETWORK: NetworkView = { models: [{ name: 'tiny', root: 'r00t', layers: 4, coverage: [1, 1, 1, 1] }], peers: [] }

/** Echoes the prompt back as tokens; prompt [910] is every peer busy, [911] the circuit open for 2.5 s. */
function fakeGenerator(): Generator & { calls: GenerationRequest[] } {
  const calls: GenerationRequest[] = []
  return {
    calls,
    async *generate(req): AsyncGenerator<TokenEvent, GenerationResult> {
      calls.push(req)
      if (req.prompt[0] === 910) throw new HopError('peerA', 'BUSY', 'node is at its limit of 4 sessions')
      if (req.prompt[0] === 911) throw new CircuitOpenError('too many verification failures lately', 2500)
      const tokens = req.prompt.slice(0, req.maxTokens)
      for (const [index, id] of tokens.entries()) yield { id, index, hops: [] }
      return {
        model: 'tiny',
        root: 'r00t',
        prompt: req.prompt,
        tokens,
        finishReason: 'length',
        route: { hops: [], switches: [] },
        verification: { mode: 'none', checks: 0, mismatches: 0, closest: { minOverlap: 1, maxRelErr: 0 }, hops: [], faults: [] },
        timings: { firstTokenMs: 1, totalMs: 1 }
      }
    }
  }
}

function app(over: Partial<HttpDeps> = {}): { app: ReturnType<typeof createHttpApp>; gen: ReturnType<typeof fakeGenerator> } {
  const gen = fakeGenerator()
  return { gen, app: createHttpApp({ generator: gen, network: () => NETWORK, models: [], ...over }) }
}
const post = (path: string, body: unknown, headers: Record<string, string> = {}): Request =>
  new Request(`http://relay${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body)
  })
async function refused(res: Response, status: number): Promise<{ message: string; type: string; code: string }> {
  expect(res.status).toBe(status)
  return (await res.json()).error
}

describe('token ids', () => {
  it('refuses prompt ids and stop ids past 2^31 − 1, naming the value as sent', async () => {
    const { app: a, gen } = app()
    for (const [body, value] of [
      [{ prompt: [1, 2 ** 31] }, 'prompt[1] is 2147483648'],
      [{ prompt: [2 ** 32 + 1] }, 'prompt[0] is 4294967297'],
      [{ prompt: [1], tessera_stop_ids: [2, 2 ** 32 + 1] }, 'tessera_stop_ids[1] is 4294967297'],
      [{ prompt: [1], tessera_stop_ids: [2 ** 31] }, 'tessera_stop_ids[0] is 2147483648'],
      [{ prompt: [1.5] }, 'prompt[0] is 1.5']
    ] as const) {
      const err = await refused(await a.request(post('/v1/completions', body)), 400)
      expect(err.message, JSON.stringify(body)).toContain(value)
      expect(err.message).toMatch(/array of token ids \(integers from 0 to 2147483647\)/)
    }
    expect(gen.calls).toHaveLength(0)
    // The largest id still goes through.
    expect((await a.request(post('/v1/completions', { prompt: [2 ** 31 - 1], tessera_stop_ids: [2 ** 31 - 1] }))).status).toBe(200)
  })

  it('refuses such ids in the client too, for callers that are not the HTTP API', async () => {
    const client = createClient({ directory: { list: async () => [] }, dialer: { dial: async () => Promise.reject(new Error('dialled')) } })
    await expect(client.generate({ prompt: [2 ** 32 + 1], maxTokens: 1 }).next()).rejects.toThrow(/prompt\[0\] is 4294967297/)
    await expect(client.generate({ prompt: [1], maxTokens: Infinity }).next()).rejects.toThrow(InputError)
  })
})

describe('verification options', () => {
  it('refuses k, p, audit and window sent as strings, naming the field and what was sent; passes every option on', async () => {
    const { app: a, gen } = app()
    for (const [verification, message] of [
      [{ mode: 'spot', p: '0.5' }, 'verification.p must be a number, got "0.5"'],
      [{ mode: 'redundant', k: '3' }, 'verification.k must be a number, got "3"'],
      [{ mode: 'optimistic', window: '1000' }, 'verification.window must be a number, got "1000"'],
      [{ mode: 'spot', p: [0.5] }, 'verification.p must be a number, got [0.5]'],
      [{ mode: 'redundant', audit: '1' }, 'verification.audit must be a number, got "1"'],
      [{ mode: 'spot', fallback: 'yes' }, 'verification.fallback must be a boolean, got "yes"']
    ] as const) {
      const err = await refused(await a.request(post('/v1/completions', { prompt: [1], verification })), 400)
      expect(err.message).toBe(message)
      expect(err.code).toBe('invalid_verification')
    }
    expect(gen.calls).toHaveLength(0)
    expect((await a.request(post('/v1/completions', { prompt: [1], verification: { mode: 'spot', p: 0.5 } }))).status).toBe(200)
    // Every option reaches the client: an audit the API dropped would let k colluding lanes agree unseen.
    expect((await a.request(post('/v1/completions', { prompt: [1], verification: { mode: 'redundant', audit: 1, fallback: true } }))).status).toBe(200)
    expect(gen.calls[gen.calls.length - 1].verification).toMatchObject({ mode: 'redundant', audit: 1, fallback: true })
  })
})

describe('deeply nested bodies', () => {
  const N = 100_000
  const deepArray = '['.repeat(N) + ']'.repeat(N)
  const deepObject = '{"a":'.repeat(N) + '1' + '}'.repeat(N)

  it('answers 400 on every JSON route, not 500, and nothing behind them runs', async () => {
    let slashed = 0
    let submitted = 0
    let proved = 0
    const slash = async (): Promise<object> => {
      slashed++
      return { slashed: false, amount: 0, reason: '' }
    }
    const submit = async (): Promise<void> => {
      submitted++
    }
    const ledger = { slash } as unknown as Ledger
    const board = { get: () => undefined, submit } as unknown as ClaimBoard
    const zk = { models: () => [], infer: async () => Promise.reject(new Error(`proved ${++proved}`)) }
    const { app: a, gen } = app({ ledger, board, zk })
    const bodies = [
      ['/v1/completions', deepArray],
      ['/v1/completions', deepObject],
      ['/v1/completions', `{"prompt":${deepArray}}`],
      ['/v1/chat/completions', `{"messages":${deepArray}}`],
      ['/v1/completions', `{"prompt":[1],"verification":{"mode":${deepObject}}}`],
      // 10^4 levels fit under the 1 MiB body limit: the depth check refuses them, not the size.
      ['/api/evidence', `{"kind":"mismatch","accused":"x","receipts":[],"detail":${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}}`],
      ['/api/claims', deepObject],
      ['/api/zk/infer', `{"model":"m","input":[${deepArray}]}`]
    ]
    for (const [path, body] of bodies) {
      const err = await refused(await a.request(post(path, body)), 400)
      expect(err.message, `${path} ${body.slice(0, 30)}`).toMatch(/nested more than 64 levels deep/)
      expect(err.type).toBe('invalid_request_error')
    }
    expect({ calls: gen.calls.length, slashed, submitted, proved }).toEqual({ calls: 0, slashed: 0, submitted: 0, proved: 0 })
  })

  it('still takes a body nested as deep as a real one', async () => {
    const content = [{ type: 'text', text: 'hi' }]
    const tok = { size: 128, encode: (t: string) => [...t].map((ch) => ch.charCodeAt(0)), decode: (ids: number[]) => String.fromCharCode(...ids) }
    const text = modelText(tok, chatTemplate({ chat_template: '{% for m in messages %}{{ m.content }}{% endfor %}' }), { name: 'tiny', config: preset('tiny') })
    const res = await app({ text: () => text }).app.request(post('/v1/chat/completions', { messages: [{ role: 'user', content }] }))
    expect(res.status).toBe(200)
  })
})

describe('body limits', () => {
  const big = JSON.stringify({ prompt: [1], padding: 'x'.repeat(2 * 2 ** 20) })

  it('answers 413 to a 2 MiB body before the generator is called, saying the limit and how to raise it', async () => {
    const { app: a, gen } = app()
    // Without a Content-Length the body is counted as it streams; with one it is refused unread.
    for (const headers of [{}, { 'Content-Length': String(big.length) }] as Array<Record<string, string>>) {
      for (const path of ['/v1/completions', '/v1/chat/completions', '/api/evidence', '/api/zk/infer']) {
        const res = await a.request(post(path, big, headers))
        const err = await refused(res, 413)
        expect(err).toMatchObject({ code: 'too_large', type: 'invalid_request_error' })
        expect(err.message).toBe(`the request body is over 1 MiB (${HTTP_DEFAULTS.maxBodyBytes} bytes): send less, or start the relay with a larger --max-body`)
        expect(res.headers.get('access-control-allow-origin')).toBe('*')
        // The unread rest of the body leaves the connection unusable: the client is told to drop it.
        expect(res.headers.get('connection')).toBe('close')
      }
    }
    expect(gen.calls).toHaveLength(0)
    expect((await a.request(post('/v1/completions', { prompt: [1, 2] }))).status).toBe(200)
  })

  it('takes its limit from the deps, and lets a claim be as large as a claim may be', async () => {
    const board = { get: () => undefined, submit: async () => undefined } as unknown as ClaimBoard
    const { app: a, gen } = app({ maxBodyBytes: 1000, board })
    const err = await refused(await a.request(post('/v1/completions', { prompt: Array(600).fill(1) })), 413)
    expect(err.message).toMatch(/over 0\.00 MiB \(1000 bytes\)/)
    expect(gen.calls).toHaveLength(0)
    expect((await a.request(post('/v1/completions', { prompt: [1, 2] }))).status).toBe(200)
    // A claim carries a step's rows: 2 MiB reaches its parser (which refuses this one as no claim).
    const claim = await refused(await a.request(post('/api/claims', big)), 400)
    expect(claim.code).toBe('invalid_claim')
  })
})

describe('prompt length', () => {
  it('refuses a prompt of MAX_STEP_TOKENS + 1 ids at once, before the client asks for peers or dials', async () => {
    let listed = 0
    let dialled = 0
    const generator = createClient({
      directory: {
        list: async () => {
          listed++
          return []
        }
      },
      dialer: {
        dial: async () => {
          dialled++
          throw new Error('no dialling in this test')
        }
      }
    })
    const a = app({ generator }).app
    const err = await refused(await a.request(post('/v1/completions', { prompt: Array(MAX_STEP_TOKENS + 1).fill(1) })), 400)
    expect(err.code).toBe('INPUT')
    expect(err.message).toMatch(new RegExp(`${MAX_STEP_TOKENS + 1} tokens, and a step may carry at most ${MAX_STEP_TOKENS}`))
    expect({ listed, dialled }).toEqual({ listed: 0, dialled: 0 })
    // One id fewer is a prompt the client will route: with no peers, that is NO_ROUTE.
    const res = await a.request(post('/v1/completions', { prompt: Array(MAX_STEP_TOKENS).fill(1) }))
    expect((await refused(res, 503)).code).toBe('NO_ROUTE')
    expect(res.headers.get('retry-after')).toBe(String(RETRY_AFTER_S))
    expect(listed).toBeGreaterThan(0)
  })
})

describe('503 with Retry-After', () => {
  it('answers every peer busy with 503 and a short Retry-After, streamed or not', async () => {
    const a = app().app
    for (const stream of [false, true]) {
      const res = await a.request(post('/v1/completions', { prompt: [910], stream }))
      const err = await refused(res, 503)
      expect(err).toMatchObject({ code: 'BUSY', type: 'service_unavailable' })
      expect(res.headers.get('retry-after')).toBe(String(RETRY_AFTER_S))
      expect(Number.isInteger(RETRY_AFTER_S) && RETRY_AFTER_S >= 1).toBe(true)
    }
  })

  it("answers an open circuit with 503 and the breaker's own wait, rounded up to whole seconds", async () => {
    const res = await app().app.request(post('/v1/completions', { prompt: [911] }))
    expect((await refused(res, 503)).code).toBe('CIRCUIT_OPEN')
    expect(res.headers.get('retry-after')).toBe(String(Math.ceil(2500 / 1000)))
  })

  it('sends no Retry-After on other errors', async () => {
    const res = await app().app.request(post('/v1/completions', { prompt: [1, -1] }))
    expect(res.status).toBe(400)
    expect(res.headers.get('retry-after')).toBeNull()
  })
})
