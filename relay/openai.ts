/**
 * The OpenAI-compatible surface: request validation (by hand, so messages name the field and
 * what was sent), the chat template and the response/chunk shapes (errors: errors.ts). No I/O here.
 */
import type { GenerationResult, RouteTrace, TokenEvent, VerificationOptions, VerificationReport } from '../shared/client/types.js'
import { normalizeVerification } from '../shared/client/client.js'
import { samplingToJson, type SamplingProofJson } from '../shared/zk/argmax.js'
import { HTTP_DEFAULTS } from './config.js'
import { BadRequest } from './errors.js'
import type { ChatMessage } from '../shared/text/chat.js'

export interface CommonParams {
  model?: string
  maxTokens: number
  temperature: number
  topP?: number
  seed?: number
  stream: boolean
  stopIds?: number[]
  /** OpenAI's `stop`: the answer ends before the first of these strings. */
  stop?: string[]
  /** Keep generating past the model's EOS (vLLM's `ignore_eos`; off: an answer ends at EOS, as OpenAI's do). */
  ignoreEos: boolean
  /** How many alternatives to report per token, when the caller asked for logprobs. */
  logprobs?: number
  /** stream_options.include_usage: one more chunk, with usage and no choices, before [DONE]. */
  includeUsage: boolean
  verification?: VerificationOptions
  /** optimistic: where to POST the settlement (JSON) once the claim is final or overturned. */
  webhook?: string
  /** Prove each greedy token is the argmax of the logits the last hop signed (zk/argmax.ts). */
  proveSampling?: boolean
}
export interface CompletionParams extends CommonParams {
  prompt: string | number[]
}
export interface ChatParams extends CommonParams {
  messages: ChatMessage[]
}

/** Roles a chat template knows; `developer` is OpenAI's newer name for `system`. */
const ROLES = ['system', 'user', 'assistant', 'developer', 'tool']
/** OpenAI's own bounds. */
const MAX_STOPS = 4
const MAX_TOP_LOGPROBS = 20
const MAX_COMPLETION_LOGPROBS = 5

/** A value as the caller sent it, cut to 60 characters for a message. */
const show = (v: unknown): string => {
  let s: string
  try {
    s = JSON.stringify(v) ?? String(v)
  } catch {
    s = Array.isArray(v) ? 'an array' : typeof v // nested too deep to print (parseJson refuses those first)
  }
  return s.length > 60 ? `${s.slice(0, 57)}…` : s
}
/** Largest token id: ids travel packed in an Int32Array, where 2^32 + 1 would silently become 1. */
const MAX_TOKEN_ID = 2 ** 31 - 1
const ID_RANGE = `integers from 0 to ${MAX_TOKEN_ID}`
const isId = (x: unknown): boolean => Number.isInteger(x) && (x as number) >= 0 && (x as number) <= MAX_TOKEN_ID
const isIds = (v: unknown): v is number[] => Array.isArray(v) && v.every(isId)
/** Why `v` is not an array of token ids: the first bad id as sent, or the whole value when it is no array. */
function notIds(field: string, v: unknown, want = 'an array of token ids'): string {
  const i = Array.isArray(v) ? v.findIndex((x) => !isId(x)) : -1
  return `${field} must be ${want} (${ID_RANGE}), ${i < 0 ? `got ${show(v)}` : `but ${field}[${i}] is ${show((v as unknown[])[i])}`}`
}
const present = (v: unknown): boolean => v !== undefined && v !== null

/**
 * Deepest nesting a request body may have. OpenAI's bodies are four levels deep (messages, parts),
 * a claim or evidence a few more; a body nested 10^5 deep parses, but overflows the stack of
 * whatever walks it next (JSON.stringify in a message, a ledger writing it down).
 */
const MAX_JSON_DEPTH = 64

/** A request body as JSON, refused (400) when it is not JSON or is nested deeper than MAX_JSON_DEPTH. */
export function parseJson(text: string): unknown {
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch (err) {
    throw new BadRequest(`the request body is not valid JSON (${(err as Error).message})`, 'invalid_json')
  }
  // Iterative, so the check itself cannot overflow: each array or object with its depth.
  const stack: Array<[object, number]> = typeof v === 'object' && v !== null ? [[v, 1]] : []
  while (stack.length > 0) {
    const [x, depth] = stack.pop()!
    if (depth > MAX_JSON_DEPTH) throw new BadRequest(`the request body is nested more than ${MAX_JSON_DEPTH} levels deep: send a flatter body`, 'invalid_json')
    for (const y of Array.isArray(x) ? x : Object.values(x)) if (typeof y === 'object' && y !== null) stack.push([y, depth + 1])
  }
  return v
}

function object(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new BadRequest(`the request body must be a JSON object, got ${show(body)}`)
  return body as Record<string, unknown>
}

function common(b: Record<string, unknown>, maxTokensField: unknown): CommonParams {
  const bad = (field: string, want: string, got: unknown): never => {
    throw new BadRequest(`${field} must be ${want}, got ${show(got)}`)
  }
  if (present(b.model) && typeof b.model !== 'string') bad('model', 'a string', b.model)
  const positiveInt = (v: unknown): boolean => Number.isSafeInteger(v) && (v as number) >= 1
  if (present(maxTokensField) && !positiveInt(maxTokensField)) bad('max_tokens', 'a positive integer', maxTokensField)
  const temperatureOk = typeof b.temperature === 'number' && b.temperature >= 0 && Number.isFinite(b.temperature)
  if (present(b.temperature) && !temperatureOk) bad('temperature', 'a number ≥ 0', b.temperature)
  if (present(b.top_p) && !(typeof b.top_p === 'number' && b.top_p > 0 && b.top_p <= 1)) bad('top_p', 'a number in (0, 1]', b.top_p)
  if (present(b.seed) && !Number.isSafeInteger(b.seed)) bad('seed', 'an integer', b.seed)
  if (present(b.stream) && typeof b.stream !== 'boolean') bad('stream', 'true or false', b.stream)
  if (present(b.n) && b.n !== 1) throw new BadRequest(`n must be 1: one choice per request is supported, got ${show(b.n)}`)
  if (present(b.tessera_stop_ids) && !isIds(b.tessera_stop_ids)) throw new BadRequest(notIds('tessera_stop_ids', b.tessera_stop_ids))
  const verification = parseVerification(b.verification)
  if (present(b.tessera_webhook)) {
    let url: URL | undefined
    try {
      url = new URL(String(b.tessera_webhook))
    } catch {}
    const httpUrl = typeof b.tessera_webhook === 'string' && url !== undefined && ['http:', 'https:'].includes(url.protocol)
    if (!httpUrl) bad('tessera_webhook', 'an http(s) URL', b.tessera_webhook)
    if (verification?.mode !== 'optimistic') throw new BadRequest('tessera_webhook is for optimistic verification: it receives the settlement')
  }
  if (present(b.tessera_prove_sampling) && typeof b.tessera_prove_sampling !== 'boolean') {
    bad('tessera_prove_sampling', 'true or false', b.tessera_prove_sampling)
  }
  const stop = parseStop(b.stop)
  if (present(b.ignore_eos) && typeof b.ignore_eos !== 'boolean') bad('ignore_eos', 'true or false', b.ignore_eos)
  const streamOptions = b.stream_options
  if (present(streamOptions) && (typeof streamOptions !== 'object' || Array.isArray(streamOptions))) bad('stream_options', 'an object', streamOptions)
  const includeUsage = (streamOptions as { include_usage?: unknown } | undefined)?.include_usage
  if (present(includeUsage) && typeof includeUsage !== 'boolean') bad('stream_options.include_usage', 'true or false', includeUsage)
  return {
    stop,
    ignoreEos: b.ignore_eos === true,
    includeUsage: includeUsage === true,
    model: present(b.model) ? (b.model as string) : undefined,
    maxTokens: present(maxTokensField) ? (maxTokensField as number) : HTTP_DEFAULTS.maxTokens,
    // Greedy unless asked (config.ts says why).
    temperature: present(b.temperature) ? (b.temperature as number) : HTTP_DEFAULTS.temperature,
    topP: present(b.top_p) ? (b.top_p as number) : undefined,
    seed: present(b.seed) ? (b.seed as number) : undefined,
    stream: b.stream === true,
    stopIds: present(b.tessera_stop_ids) ? (b.tessera_stop_ids as number[]) : undefined,
    verification,
    webhook: present(b.tessera_webhook) ? (b.tessera_webhook as string) : undefined,
    proveSampling: b.tessera_prove_sampling === true
  }
}

/** `stop`: a string or up to four, none empty (an empty one would end every answer at once). */
function parseStop(v: unknown): string[] | undefined {
  if (!present(v)) return undefined
  const list = typeof v === 'string' ? [v] : v
  if (!Array.isArray(list) || list.length > MAX_STOPS || !list.every((s) => typeof s === 'string' && s.length > 0)) {
    throw new BadRequest(`stop must be a non-empty string or an array of at most ${MAX_STOPS} of them, got ${show(v)}`)
  }
  return list.length === 0 ? undefined : (list as string[])
}

/** `verification`: "none" | "redundant" | "spot", or { mode, k?, p?, audit?, window?, fallback? }. */
function parseVerification(v: unknown): VerificationOptions | undefined {
  if (!present(v)) return undefined
  const o = typeof v === 'string' ? { mode: v } : v
  if (typeof o !== 'object' || o === null || Array.isArray(o)) {
    throw new BadRequest(`verification must be "none", "redundant", "spot" or { mode, k?, p?, audit?, window?, fallback? }, got ${show(v)}`)
  }
  const { mode, k, p, audit, window, fallback } = o as Record<string, unknown>
  // normalizeVerification compares numbers: "0.5" would pass its range checks as a string.
  for (const [field, x] of [
    ['k', k],
    ['p', p],
    ['audit', audit],
    ['window', window]
  ] as const) {
    if (present(x) && typeof x !== 'number') throw new BadRequest(`verification.${field} must be a number, got ${show(x)}`, 'invalid_verification')
  }
  try {
    if (present(fallback) && typeof fallback !== 'boolean')
      throw new BadRequest(`verification.fallback must be a boolean, got ${show(fallback)}`, 'invalid_verification')
    const asked = {
      mode: mode as VerificationOptions['mode'],
      k: k as number | undefined,
      p: p as number | undefined,
      audit: audit as number | undefined,
      window: window as number | undefined
    }
    // Every field the client takes, audit and fallback too: dropping one silently weakens the check the caller paid for.
    return { ...normalizeVerification(asked), ...(fallback === true ? { fallback: true } : {}) }
  } catch (err) {
    throw new BadRequest((err as Error).message, 'invalid_verification')
  }
}

/** `POST /v1/completions`: a string or one array of ids (a batch of one is unwrapped). */
export function parseCompletion(body: unknown): CompletionParams {
  const b = object(body)
  let prompt = b.prompt
  if (Array.isArray(prompt) && prompt.length === 1 && (typeof prompt[0] === 'string' || Array.isArray(prompt[0]))) prompt = prompt[0]
  if (!present(prompt)) throw new BadRequest('prompt is required: a string, or an array of token ids')
  if (Array.isArray(prompt) && prompt.some((p) => typeof p === 'string' || Array.isArray(p))) {
    throw new BadRequest(`batched prompts are not supported: send one prompt per request (got ${prompt.length})`)
  }
  if (typeof prompt !== 'string' && !isIds(prompt)) throw new BadRequest(notIds('prompt', prompt, 'a string or an array of token ids'))
  if (prompt.length === 0) throw new BadRequest("prompt is empty: send at least one token (e.g. the model's BOS id)")
  if (present(b.logprobs) && !(Number.isInteger(b.logprobs) && (b.logprobs as number) >= 0 && (b.logprobs as number) <= MAX_COMPLETION_LOGPROBS)) {
    throw new BadRequest(`logprobs must be an integer from 0 to ${MAX_COMPLETION_LOGPROBS}, got ${show(b.logprobs)}`)
  }
  if (b.echo === true) throw new BadRequest('echo is not supported: the answer carries the completion only')
  return { ...common(b, b.max_tokens), prompt, logprobs: present(b.logprobs) ? (b.logprobs as number) : undefined }
}

/** `POST /v1/chat/completions`: content is a string or OpenAI's text parts. */
export function parseChat(body: unknown): ChatParams {
  const b = object(body)
  if (!Array.isArray(b.messages) || b.messages.length === 0) {
    throw new BadRequest(`messages must be a non-empty array of { role, content }, got ${show(b.messages)}`)
  }
  const messages = b.messages.map((m: unknown, i) => {
    const msg = object(m)
    if (typeof msg.role !== 'string' || !ROLES.includes(msg.role)) {
      throw new BadRequest(`messages[${i}].role must be one of ${ROLES.join(', ')}, got ${show(msg.role)}`)
    }
    let content = msg.content
    // An assistant turn that only called tools has no content; its text is empty.
    if (content === null && msg.role === 'assistant') content = ''
    if (Array.isArray(content)) {
      content = content
        .map((p: unknown, j) => {
          const part = object(p)
          if (part.type !== 'text' || typeof part.text !== 'string') {
            throw new BadRequest(`messages[${i}].content[${j}] must be { type: 'text', text }: only text is supported`)
          }
          return part.text
        })
        .join('')
    }
    if (typeof content !== 'string') throw new BadRequest(`messages[${i}].content must be a string, got ${show(msg.content)}`)
    return { role: msg.role === 'developer' ? 'system' : msg.role, content }
  })
  if (present(b.logprobs) && typeof b.logprobs !== 'boolean') throw new BadRequest(`logprobs must be true or false, got ${show(b.logprobs)}`)
  const top = b.top_logprobs
  if (present(top) && !(Number.isInteger(top) && (top as number) >= 0 && (top as number) <= MAX_TOP_LOGPROBS)) {
    throw new BadRequest(`top_logprobs must be an integer from 0 to ${MAX_TOP_LOGPROBS}, got ${show(top)}`)
  }
  if (present(top) && b.logprobs !== true) throw new BadRequest('top_logprobs needs logprobs: true')
  const logprobs = b.logprobs === true ? ((top as number | undefined) ?? 0) : undefined
  return { ...common(b, b.max_completion_tokens ?? b.max_tokens), messages, logprobs }
}

export type Kind = 'completion' | 'chat'
export interface Ids {
  id: string
  created: number
}

export function newIds(kind: Kind): Ids {
  const hex = Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, '0')).join('')
  return { id: `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${hex}`, created: Math.floor(Date.now() / 1000) }
}

export interface TesseraInfo {
  tokens: number[]
  prompt: number[]
  route: RouteTrace
  verification: VerificationReport
  root: string
  timings: GenerationResult['timings']
  sampling?: SamplingProofJson[]
}
const tesseraInfo = (r: GenerationResult): TesseraInfo => ({
  tokens: r.tokens,
  prompt: r.prompt,
  route: r.route,
  verification: r.verification,
  root: r.root,
  timings: r.timings,
  ...(r.sampling !== undefined ? { sampling: r.sampling.map(samplingToJson) } : {})
})
const usage = (r: GenerationResult): object => ({
  prompt_tokens: r.prompt.length,
  completion_tokens: r.tokens.length,
  total_tokens: r.prompt.length + r.tokens.length
})
const objectOf = (kind: Kind, chunk: boolean): string => (kind === 'chat' ? (chunk ? 'chat.completion.chunk' : 'chat.completion') : 'text_completion')

/** One token's log probability and its most likely alternatives, as the client computed them. */
export interface TokenLogprob {
  id: number
  logprob: number
  top: Array<{ id: number; logprob: number }>
}

/** What a token looks like as text (its own decode, special tokens shown). */
export type TokenText = (id: number) => string

/**
 * OpenAI's logprobs object for these tokens: chat's `{ content: [{ token, logprob, bytes,
 * top_logprobs }] }`, or the legacy completions' parallel arrays. `offset`: where the first token's
 * text starts in the answer (completions' text_offset).
 */
export function logprobsJson(kind: Kind, items: TokenLogprob[], text: TokenText, offset = 0): object {
  const bytes = (s: string): number[] => Array.from(new TextEncoder().encode(s))
  if (kind === 'chat') {
    const entry = (id: number, logprob: number): { token: string; logprob: number; bytes: number[] } => ({ token: text(id), logprob, bytes: bytes(text(id)) })
    return { content: items.map((t) => ({ ...entry(t.id, t.logprob), top_logprobs: t.top.map((a) => entry(a.id, a.logprob)) })), refusal: null }
  }
  const offsets: number[] = []
  for (const t of items) {
    offsets.push(offset)
    offset += text(t.id).length
  }
  return {
    tokens: items.map((t) => text(t.id)),
    token_logprobs: items.map((t) => t.logprob),
    top_logprobs: items.map((t) => Object.fromEntries(t.top.map((a) => [text(a.id), a.logprob]))),
    text_offset: offsets
  }
}

/** The whole (non-streamed) response. */
export function fullResponse(kind: Kind, ids: Ids, r: GenerationResult, text: string, logprobs: object | null = null): object {
  const choice =
    kind === 'chat'
      ? { index: 0, message: { role: 'assistant', content: text, refusal: null }, finish_reason: r.finishReason, logprobs }
      : { index: 0, text, finish_reason: r.finishReason, logprobs }
  return { ...ids, object: objectOf(kind, false), model: r.model, choices: [choice], usage: usage(r), tessera: tesseraInfo(r) }
}

/** What every chunk of one streamed answer repeats. */
export interface StreamHead {
  kind: Kind
  ids: Ids
  model: string
}

/** One streamed token. The first chat chunk also carries the role, as OpenAI's does. */
export function tokenChunk({ kind, ids, model }: StreamHead, text: string, ev: TokenEvent, logprobs: object | null = null): object {
  const choice =
    kind === 'chat'
      ? { index: 0, delta: ev.index === 0 ? { role: 'assistant', content: text } : { content: text }, finish_reason: null, logprobs }
      : { index: 0, text, finish_reason: null, logprobs }
  return { ...ids, object: objectOf(kind, true), model, choices: [choice], tessera: { token: ev.id, index: ev.index, hops: ev.hops } }
}

/**
 * The last chunk with a choice: the finish reason, the text held back to the end, and the full
 * trace. Usage comes in a chunk of its own (usageChunk) when the caller asked for it.
 */
export function finalChunk(kind: Kind, ids: Ids, r: GenerationResult, rest = ''): object {
  const choice =
    kind === 'chat'
      ? { index: 0, delta: rest === '' ? {} : { content: rest }, finish_reason: r.finishReason, logprobs: null }
      : { index: 0, text: rest, finish_reason: r.finishReason, logprobs: null }
  return { ...ids, object: objectOf(kind, true), model: r.model, choices: [choice], tessera: tesseraInfo(r) }
}

/** stream_options.include_usage: the chunk after the last choice, with no choices and the usage. */
export function usageChunk(kind: Kind, ids: Ids, r: GenerationResult): object {
  return { ...ids, object: objectOf(kind, true), model: r.model, choices: [], usage: usage(r) }
}
