/**
 * `POST /v1/completions` and `POST /v1/chat/completions`: validate, tokenize, run one generation
 * on the network, answer as JSON or as OpenAI's SSE stream. A client that goes away aborts the
 * generation, so its peers stop spending compute on it.
 */
import type { Context } from 'hono'
import { streamSSE } from 'hono/streaming'
import type { GenerationRequest, GenerationResult, Generator, NetworkView, TokenEvent } from '../shared/client/types.js'
import type { ClaimBoard } from '../shared/optimistic/board.js'
import type { Manifest } from '../shared/manifest.js'
import { chooseModel } from '../shared/route/model.js'
import { TesseraError } from '../shared/errors.js'
import { logger } from '../shared/log.js'
import type { RelayMetrics } from './metrics.js'
import { BadRequest, errorReply } from './errors.js'
import type { ModelText } from '../shared/text/model-text.js'
import { TextStream } from '../shared/text/stream.js'
import {
  finalChunk,
  fullResponse,
  logprobsJson,
  newIds,
  parseChat,
  parseCompletion,
  parseJson,
  tokenChunk,
  usageChunk,
  type Kind,
  type StreamHead,
  type TokenLogprob
} from './openai.js'

const log = logger('tessera:relay:http')

export interface CompletionDeps {
  generator: Generator
  network: () => NetworkView
  /** A model's tokenizer, chat template and EOS ids, by name or root: text prompts need it. */
  text?: (model: string) => ModelText | undefined
  /** Sends optimistic settlements to webhooks, and remembers them across restarts. */
  board?: Pick<ClaimBoard, 'notify'>
  /** Manifests of the models this relay serves: their context bounds max_tokens. */
  models?: Array<{ manifest: Manifest }>
}

export function errorResponse(c: Context, err: unknown): Response {
  const { status, body, retryAfter } = errorReply(err)
  // 503 (no route, busy, circuit open) is the network's state, not a fault of the relay: no warning, but when to retry.
  if (status >= 500 && status !== 503) log.warn(`${c.req.method} ${c.req.path}: ${body.error.message}`, status === 500 ? err : '')
  return c.json(body, status as 500, retryAfter !== undefined ? { 'Retry-After': String(retryAfter) } : {})
}

/** A request ready for the generator, and what answering it needs. */
interface Prepared {
  req: GenerationRequest
  stream: boolean
  text?: ModelText
  model: string
  webhook?: string
  stop?: string[]
  includeUsage: boolean
}

/**
 * The model whose tokenizer reads the prompt: the one the request names, else the one the client
 * will route to (chooseModel, the client's own rule). When no model is fully served there is none,
 * and `unavailable` says why, for a prompt that cannot be read without one.
 */
function promptModel(view: NetworkView, want: string | undefined): { name?: string; root?: string; unavailable?: TesseraError } {
  if (want !== undefined) return { name: want, root: view.models.find((m) => m.name === want || m.root === want)?.root ?? want }
  try {
    const m = chooseModel(view.models)
    return { name: m.name, root: m.root }
  } catch (err) {
    if (err instanceof TesseraError) return { unavailable: err }
    throw err
  }
}

/**
 * OpenAI's length semantics: prompt and completion share the model's context, so a max_tokens
 * past it stops there (finish_reason "length") instead of computing to the end and failing; a
 * prompt that leaves no room is refused before anything runs. A model this relay does not serve
 * has no manifest here: its nodes enforce the context.
 */
function boundedMaxTokens(deps: CompletionDeps, root: string | undefined, prompt: number[], asked: number): number {
  const context = deps.models?.find((m) => m.manifest.root === root)?.manifest.config.maxSeqLen
  if (context === undefined) return asked
  if (prompt.length >= context) {
    throw new BadRequest(
      `the prompt is ${prompt.length} tokens and the model's context is ${context}: no room for a completion; send a shorter prompt`,
      'context_length_exceeded'
    )
  }
  return Math.min(asked, context - prompt.length)
}

/** Validates the body, picks the tokenizer and turns the prompt into ids. */
function prepare(deps: CompletionDeps, kind: Kind, body: unknown): Prepared {
  const p = kind === 'chat' ? parseChat(body) : parseCompletion(body)
  const chosen = promptModel(deps.network(), p.model)
  const model = chosen.name ?? 'default'
  const text = chosen.name === undefined ? undefined : deps.text?.(chosen.name)
  // Text without a tokenizer: the network's state when no model is served, else this relay lacks it.
  const unreadable = (why: string): TesseraError => chosen.unavailable ?? new BadRequest(why, 'no_tokenizer')
  let prompt: number[]
  if ('messages' in p) {
    if (text === undefined) {
      throw unreadable(`chat needs text, and this relay has no tokenizer for model ${model}: use /v1/completions with prompt as an array of token ids`)
    }
    if (text.chat === undefined) {
      throw new BadRequest(
        `model ${model} has no chat template (its tokenizer_config.json has none): use /v1/completions with a plain prompt`,
        'no_chat_template'
      )
    }
    prompt = text.encodeChat(p.messages)
  } else if (typeof p.prompt === 'string') {
    if (text === undefined) {
      throw unreadable(`this relay has no tokenizer for model ${model}, so it cannot read a text prompt: send prompt as an array of token ids`)
    }
    prompt = text.encode(p.prompt)
  } else {
    prompt = p.prompt
  }
  if (prompt.length === 0) throw new BadRequest('the prompt encodes to no tokens')
  // OpenAI's answers end at the model's end of turn; tessera_stop_ids add ids of the caller's own.
  const eos = p.ignoreEos ? [] : (text?.eosIds ?? eosOf(deps, chosen.root))
  const stopIds = [...new Set([...(p.stopIds ?? []), ...eos])]
  const req: GenerationRequest = {
    prompt,
    maxTokens: boundedMaxTokens(deps, chosen.root, prompt, p.maxTokens),
    temperature: p.temperature,
    topP: p.topP,
    seed: p.seed,
    ...(stopIds.length > 0 ? { stopIds } : {}),
    ...(p.logprobs !== undefined ? { logprobs: p.logprobs } : {}),
    model: p.model,
    verification: p.verification,
    proveSampling: p.proveSampling
  }
  return { req, stream: p.stream, text, model, webhook: p.webhook, stop: p.stop, includeUsage: p.includeUsage }
}

/** The EOS of a model served here without a tokenizer, from its manifest. */
function eosOf(deps: CompletionDeps, root: string | undefined): number[] {
  const eos = deps.models?.find((m) => m.manifest.root === root)?.manifest.config.eosId
  return eos === undefined ? [] : [eos]
}

export function completionHandler(deps: CompletionDeps, metrics: RelayMetrics, kind: Kind) {
  const record = (r: GenerationResult): void => {
    metrics.tokens.inc({ model: r.model }, r.tokens.length)
    metrics.generation.observe({ model: r.model }, r.timings.totalMs / 1000)
    if (r.tokens.length > 0) metrics.firstToken.observe({ model: r.model }, r.timings.firstTokenMs / 1000)
  }

  return async (c: Context): Promise<Response> => {
    let prepared: Prepared
    try {
      prepared = prepare(deps, kind, parseJson(await c.req.text()))
    } catch (err) {
      return errorResponse(c, err)
    }
    const { req, stream, text, model, webhook } = prepared

    const ac = new AbortController()
    // The standard abort reason: nobody reads it (an aborted request answers 499), peers see an abort.
    const clientGone = (): void => {
      ac.abort(new DOMException('the client disconnected', 'AbortError'))
    }
    const signal = c.req.raw.signal
    if (signal.aborted) clientGone()
    else signal.addEventListener('abort', clientGone, { once: true })
    const done = (): void => {
      signal.removeEventListener('abort', clientGone)
    }
    const ids = newIds(kind)
    const head: StreamHead = { kind, ids, model }
    // Streamed or not, the text comes from the same deltas: the plain answer is the streamed one joined.
    const out = text?.stream(prepared.stop) ?? new TextStream(undefined, prepared.stop)
    req.until = () => out.stopped
    const tokenText = (id: number): string => (text === undefined ? String(id) : text.tokenizer.decode([id], { keepSpecial: true }))
    const logprobs: TokenLogprob[] = []
    const take = (ev: TokenEvent): string => {
      if (ev.logprob !== undefined) logprobs.push({ id: ev.id, logprob: ev.logprob, top: ev.top ?? [] })
      return out.push(ev.id)
    }

    // Waiting for the first token before answering lets a request that cannot be routed at all
    // get a real status (503) instead of a 200 stream that fails.
    let it: AsyncGenerator<TokenEvent, GenerationResult>
    let r: IteratorResult<TokenEvent, GenerationResult>
    try {
      it = deps.generator.generate(req, ac.signal)
      r = await it.next()
    } catch (err) {
      done()
      return ac.signal.aborted ? new Response(null, { status: 499 }) : errorResponse(c, err)
    }

    if (!stream) {
      try {
        while (r.done !== true) {
          take(r.value)
          r = await it.next()
        }
        out.end()
      } catch (err) {
        // Nobody reads this answer; 499 (nginx's "client closed request") keeps it out of the 5xx counts.
        return ac.signal.aborted ? new Response(null, { status: 499 }) : errorResponse(c, err)
      } finally {
        done()
      }
      record(r.value)
      notifyWebhook(deps, webhook, r.value)
      const lp = req.logprobs === undefined ? null : logprobsJson(kind, logprobs, tokenText)
      return c.json(fullResponse(kind, ids, r.value, out.text, lp))
    }

    return streamSSE(c, async (s) => {
      s.onAbort(clientGone)
      try {
        while (r.done !== true && !ac.signal.aborted) {
          const before = out.text.length
          const delta = take(r.value)
          const lp = req.logprobs === undefined ? null : logprobsJson(kind, logprobs.slice(-1), tokenText, before)
          await s.writeSSE({ data: JSON.stringify(tokenChunk(head, delta, r.value, lp)) })
          r = await it.next()
        }
        if (r.done === true) {
          record(r.value)
          notifyWebhook(deps, webhook, r.value)
          await s.writeSSE({ data: JSON.stringify(finalChunk(kind, ids, r.value, out.end())) })
          if (prepared.includeUsage) await s.writeSSE({ data: JSON.stringify(usageChunk(kind, ids, r.value)) })
          await s.writeSSE({ data: '[DONE]' })
        }
      } catch (err) {
        // Headers are gone: report in-band, as OpenAI does, unless nobody is listening.
        if (!ac.signal.aborted) await s.writeSSE({ data: JSON.stringify(errorResponseBody(c, err)) })
      } finally {
        done()
        if (r.done !== true) await it.return(undefined as unknown as GenerationResult).catch(() => {})
      }
    })
  }
}

/** Once an optimistic claim settles, the board POSTs the settlement to the caller's webhook (a failure is logged, not retried). */
function notifyWebhook(deps: CompletionDeps, url: string | undefined, r: GenerationResult): void {
  const claim = r.verification.claim
  if (url === undefined || claim === undefined) return
  try {
    deps.board?.notify(claim, url)
  } catch (err) {
    log.warn(`webhook ${url} for claim ${claim}: ${(err as Error).message}`)
  }
}

function errorResponseBody(c: Context, err: unknown): object {
  const { status, body } = errorReply(err)
  if (status >= 500 && status !== 503) log.warn(`${c.req.method} ${c.req.path} (stream): ${body.error.message}`)
  return body
}
