/**
 * The Tessera SDK for web apps, served by every relay at /sdk.js:
 *
 *   import { connect } from 'http://127.0.0.1:8080/sdk.js'
 *   const tessera = await connect()
 *   const gen = tessera.generate({ prompt: 'Once upon a time', maxTokens: 32, stop: ['\n\n'] })
 *   for await (const token of gen) out.append(token.text ?? '')
 *   console.log((await gen.result).text)
 *
 *   const chat = tessera.chat({ messages: [{ role: 'user', content: 'Hello!' }], maxTokens: 64 })
 *   for await (const token of chat) out.append(token.text ?? '')
 *
 *   // Token ids as they are (BOS included if the model wants one), with any verification mode:
 *   const ids = tessera.generate({ prompt: [1, 403], maxTokens: 32, verification: { mode: 'redundant', k: 2 } })
 *   for await (const token of ids) console.log(token.id, token.hops)
 *   console.log((await ids.result).verification)
 *
 * Same client, routing and failover as Node: this tab dials the peers itself (WebSockets to
 * native nodes, WebRTC to other tabs); the relay only introduces them. Text goes through the same
 * tokenizer, chat template and streaming decoder as the relay's API (shared/text), from the
 * model's own files on the relay, each checked against the model's manifest. Reputations and the
 * blacklist come from the relay's ledger (GET /api/ledger); evidence of a cheating peer goes
 * back to it (POST /api/evidence), where it is checked again before anyone is slashed; optimistic
 * claims go to its board (POST /api/claims) and `(await gen.result).settlement` says how they end.
 */
import { createClient, type Client } from '../../shared/client/client.js'
import { libp2pDialer, relayDirectory } from '../../shared/route/directory.js'
import { pickRelayAddr } from '../../shared/route/relay-addr.js'
import { chooseModel } from '../../shared/route/model.js'
import type { ZkResult } from '../../shared/client/zk.js'
import type { ZkModelEntry } from '../../shared/zk/types.js'
import type { SamplingEntry, SamplingProofJson } from '../../shared/zk/argmax.js'
import { httpLedgerLink } from '../../shared/client/ledger-link.js'
import { httpClaimSink } from '../../shared/optimistic/claim-sink.js'
import type { GenerationRequest, GenerationResult, NetworkView, TokenEvent, VerificationOptions } from '../../shared/client/types.js'
import { fetchModelText } from '../../shared/text/fetch.js'
import type { ModelText } from '../../shared/text/model-text.js'
import type { ChatMessage } from '../../shared/text/chat.js'
import { createTabPeer } from './p2p.js'
import { InputError, TesseraError } from '../../shared/errors.js'
import { type KeyPins, pinnedModel, pinnedSampling } from '../../shared/zk/pin.js'
import { useWebCryptoVerify } from './sign.js'

export type { GenerationRequest, GenerationResult, NetworkView, TokenEvent, VerificationOptions }
export type { ZkResult, SamplingProofJson, KeyPins }
export type { ModelText, ChatMessage }
export { verificationKeyHash } from '../../shared/zk/pin.js'

export interface ConnectOptions {
  /** The relay's HTTP origin. Default: where this module was loaded from. */
  relay?: string
  /**
   * Other relays of the same federation (HTTP origins): tried in order when `relay` does not
   * answer, and the peer list is read from them when it fails later, so a generation outlives the
   * relay it started from. Ledger, claims and tokenizers go to the first that answered.
   */
  relays?: string[]
  iceServers?: RTCIceServer[]
  /** Verification for requests that do not choose their own (default none). */
  verification?: VerificationOptions
  /**
   * sha256 of each verification key (verificationKeyHash, from the model owner, not the relay):
   * with pins, zk() and verifySampling() refuse a key the relay serves whose hash differs, or an
   * unpinned one. Without them the relay's keys are taken as served, so a hostile relay could
   * serve a key of its own setup and forge proofs.
   */
  keys?: KeyPins
}

/** What the app knows of a sampled answer without the relay: see Tessera.verifySampling. */
export interface SamplingKnown {
  prompt?: number[]
  root?: string
  nLayers?: number
  peers?: string[]
}

/** A generation's options besides its prompt: the client's, plus text's own. */
export interface TextOptions extends Omit<GenerationRequest, 'prompt'> {
  /** End the answer just before the first of these strings (which is not shown). Needs the model's tokenizer. */
  stop?: string[]
  /**
   * Text prompts and chats end at the model's end of sequence (its EOS ids, added to `stopIds`)
   * unless this is true. Id prompts end only where `stopIds` says, as they always have.
   */
  ignoreEos?: boolean
}

export interface GenerateRequest extends TextOptions {
  /** Text, encoded with the model's tokenizer (which adds BOS where the model wants one), or token ids as they are. */
  prompt: string | number[]
}

export interface ChatRequest extends TextOptions {
  /** The conversation, rendered through the model's chat template; the answer is the assistant's next turn. */
  messages: ChatMessage[]
}

export interface TextTokenEvent extends TokenEvent {
  /**
   * The text this token adds: '' while part of a character or of a possible stop string is held
   * back; what was held goes out with the last token. Absent when the model has no tokenizer.
   */
  text?: string
}

export interface TextResult extends GenerationResult {
  /** The whole answer, the events' text joined (without the stop string). Absent when the model has no tokenizer. */
  text?: string
}

export interface Generation extends AsyncIterable<TextTokenEvent> {
  /** The whole result (tokens, route, timings, text) once the generation ends. */
  result: Promise<TextResult>
}

export interface Tessera {
  peerId: string
  /** What checks peers' signatures here: the browser's Ed25519 (WebCrypto) where it has one, else libp2p's JavaScript. */
  signatures: 'webcrypto' | 'js'
  generate(req: GenerateRequest, signal?: AbortSignal): Generation
  /** A chat turn: `generate` with the prompt from the model's chat template. */
  chat(req: ChatRequest, signal?: AbortSignal): Generation
  /**
   * The model's tokenizer, chat template and EOS ids (for apps that encode or decode themselves):
   * of `model` (name or root), else of the model a generation would get. Undefined when the model
   * ships no tokenizer (ids only).
   */
  text(model?: string): Promise<ModelText | undefined>
  network(): Promise<NetworkView>
  /**
   * `verification: "zk"`: a peer proves one inference of a small ZK model (GET /api/zk/models
   * lists them); this tab verifies the Groth16 proof itself against the published verification
   * key and weight commitment, and returns the output only if it holds.
   */
  zk(model: string, input: ArrayLike<number>): Promise<ZkResult>
  /**
   * For an answer of the relay's HTTP API asked with `tessera_prove_sampling: true` (its `tessera`
   * field): checks here that each token is the argmax of the logits its last hop signed. That is
   * the sampling step only, not the layers. Throws on the first proof that does not hold.
   * `known` binds each proof to what this app knows, not to the relay's word: the prompt it sent
   * (each receipt's position, and its context when one hop ran the whole model), the model's
   * root and layer count (from the app's own pin), and the peers it accepts as last hops.
   */
  verifySampling(answer: { tokens: number[]; sampling?: SamplingProofJson[] }, known?: SamplingKnown): Promise<{ tokens: number; ms: number }>
  close(): Promise<void>
}

/** A request ready for the client, and the model text that reads its answer (if any). */
interface Prepared {
  req: GenerationRequest
  text?: ModelText
  stop?: string[]
}

/**
 * Follows a generation's text. The held-back tail (a character cut short, the start of a
 * possible stop string) goes out with the last token rather than after it, so the events' text
 * joined is the result's: hence the client's own end rule (maxTokens, stopIds, a stop string)
 * is mirrored here. A caller's own `until` is only asked by the client, after the caller has
 * taken the token, as it expects; what such an end holds back is in the result's text only.
 */
function follow(p: Prepared): { req: GenerationRequest; take: (ev: TokenEvent) => TextTokenEvent; finish: (r: GenerationResult) => TextResult } {
  const stream = p.text?.stream(p.stop)
  const asked = p.req.until
  const req: GenerationRequest = { ...p.req, until: () => stream?.stopped === true || asked?.() === true }
  return {
    req,
    take(ev) {
      if (stream === undefined) return ev
      let text = stream.push(ev.id)
      if (stream.stopped || ev.index + 1 >= req.maxTokens || req.stopIds?.includes(ev.id) === true) text += stream.end()
      return { ...ev, text }
    },
    finish(r) {
      if (stream === undefined) return r
      stream.end()
      return { ...r, text: stream.text }
    }
  }
}

/** The caller's stop ids, plus the model's EOS unless `ignoreEos`. */
function textStopIds(o: TextOptions, text: ModelText): number[] | undefined {
  const ids = [...new Set([...(o.stopIds ?? []), ...(o.ignoreEos === true ? [] : text.eosIds)])]
  return ids.length > 0 ? ids : undefined
}

/** The client's request: the options without the SDK's own fields. */
function clientRequest(
  o: TextOptions & { prompt?: unknown; messages?: unknown },
  prompt: number[],
  model: string | undefined,
  stopIds: number[] | undefined
): GenerationRequest {
  const { stop: _stop, ignoreEos: _ignoreEos, stopIds: _stopIds, model: _model, prompt: _prompt, messages: _messages, ...rest } = o
  return { ...rest, prompt, ...(model !== undefined ? { model } : {}), ...(stopIds !== undefined ? { stopIds } : {}) }
}

export async function connect(o: ConnectOptions = {}): Promise<Tessera> {
  const origins = [o.relay ?? new URL(import.meta.url).origin, ...(o.relays ?? [])]
  const known = await relaysOf(origins)
  const { origin, addrs, iceServers } = known[0]
  const { node, relay } = await createTabPeer({ relayAddrs: addrs, listen: false, iceServers: o.iceServers ?? iceServers })
  // The others' libp2p addresses: where the peer list is read once this relay fails.
  const https = globalThis.location?.protocol === 'https:'
  const spare = known.slice(1).flatMap((k) => pickRelayAddr(k.addrs, https) ?? [])
  const webcrypto = await useWebCryptoVerify() // every hop's receipt is checked here: the browser's Ed25519, not JavaScript's
  const ledger = httpLedgerLink(origin, node.peerId.toString())
  await ledger.refresh()
  const refresh = setInterval(() => {
    void ledger.refresh()
  }, 5000)
  // Optimistic claims go to the relay's board; corrected tokens, if any, are generated here.
  const client: Client = createClient({
    dialer: libp2pDialer(node),
    directory: relayDirectory(node, [relay, ...spare]),
    ledger,
    board: httpClaimSink(origin),
    verification: o.verification
  })
  const texts = textCache(origin)

  /**
   * The root of the model a request gets, by the client's own rule (chooseModel); the request is
   * then pinned to it, so the tokenizer that reads the prompt is the routed model's.
   */
  const modelOf = async (want: string | undefined): Promise<{ name: string; root: string }> => chooseModel((await client.network()).models, want)

  async function withText(o: TextOptions, what: string): Promise<{ root: string; text: ModelText }> {
    const { name, root } = await modelOf(o.model)
    const text = await texts.get(root)
    if (text === undefined) throw new InputError(`model ${name} ships no tokenizer, so it cannot read ${what}: give the prompt as token ids`)
    return { root, text }
  }

  /** Id prompts run as given; their answer reads as text when the model has a tokenizer, which is never required. */
  async function idPrompt(o: GenerateRequest & { prompt: number[] }): Promise<Prepared> {
    let root: string | undefined
    let text: ModelText | undefined
    try {
      root = (await modelOf(o.model)).root
      text = await texts.get(root)
    } catch (err) {
      // No model to pick is the client's to report, and peers may serve a model the relay has no
      // files for; any other failure to get its tokenizer costs only the text, so say why.
      if (root !== undefined && !(err instanceof InputError)) console.warn(`tessera: the answer of model ${root} will have no text: ${(err as Error).message}`)
    }
    if (o.stop !== undefined && o.stop.length > 0 && text === undefined)
      throw new InputError("stop strings need the model's tokenizer, and this model has none: use stopIds")
    return { req: clientRequest(o, o.prompt, root ?? o.model, o.stopIds), text, stop: o.stop }
  }

  async function textPrompt(o: GenerateRequest & { prompt: string }): Promise<Prepared> {
    const { root, text } = await withText(o, 'a text prompt')
    return { req: clientRequest(o, text.encode(o.prompt), root, textStopIds(o, text)), text, stop: o.stop }
  }

  async function chatPrompt(o: ChatRequest): Promise<Prepared> {
    const { root, text } = await withText(o, 'a chat')
    return { req: clientRequest(o, text.encodeChat(o.messages), root, textStopIds(o, text)), text, stop: o.stop }
  }

  /** A Generation over `prepare` (which fetches the tokenizer once per model, so it runs on the first iteration). */
  function run(prepare: () => Promise<Prepared>, signal: AbortSignal | undefined): Generation {
    let settle!: { resolve: (r: TextResult) => void; reject: (e: unknown) => void }
    const result = new Promise<TextResult>((resolve, reject) => {
      settle = { resolve, reject }
    })
    result.catch(() => {}) // the iterator reports the same error
    return {
      result,
      async *[Symbol.asyncIterator]() {
        let gen: AsyncGenerator<TokenEvent, GenerationResult> | undefined
        let done = false
        try {
          const t = follow(await prepare())
          gen = client.generate(t.req, signal)
          for (let r = await gen.next(); ; r = await gen.next()) {
            if (r.done === true) {
              done = true
              settle.resolve(t.finish(r.value))
              return
            }
            yield t.take(r.value)
          }
        } catch (err) {
          done = true
          settle.reject(err)
          throw err
        } finally {
          // A caller that stops iterating early: close the session, so its peers stop computing.
          if (!done) {
            settle.reject(new DOMException('the caller stopped reading the generation', 'AbortError'))
            await gen?.return(undefined as unknown as GenerationResult).catch(() => {})
          }
        }
      }
    }
  }

  return {
    peerId: node.peerId.toString(),
    signatures: webcrypto ? 'webcrypto' : 'js',
    generate(req, signal) {
      const { prompt } = req
      return run(async () => (typeof prompt === 'string' ? await textPrompt({ ...req, prompt }) : await idPrompt({ ...req, prompt })), signal)
    },
    chat: (req, signal) => run(async () => await chatPrompt(req), signal),
    async text(model) {
      const models = (await client.network()).models
      if (model === undefined) return await texts.get(chooseModel(models).root)
      // A model the relay has files for may have no peers yet: then it is fetched by the name the app gave.
      return await texts.get(models.find((m) => m.name === model || m.root === model)?.root ?? model)
    },
    network: async () => await client.network(),
    async zk(model, input) {
      const res = await fetch(`${origin}/api/zk/models`)
      if (!res.ok) throw new TesseraError('BAD_REPLY', `GET /api/zk/models answered HTTP ${res.status}`)
      const { models } = (await res.json()) as { models: ZkModelEntry[] }
      // snarkjs (~1 MB) loads with the first proof, not with the SDK.
      const { zkInfer } = await import('../../shared/client/zk.js')
      // A directory of its own (its own cache), as the zk path always had.
      const directory = relayDirectory(node, relay)
      const deps = {
        dialer: libp2pDialer(node),
        peers: async () => await directory.list(),
        models: (n: string) => {
          const m = models.find((e) => e.name === n)
          return m === undefined || o.keys === undefined ? m : pinnedModel(m, o.keys)
        },
        ledger
      }
      return await zkInfer(deps, model, input)
    },
    async verifySampling(answer, known) {
      // What an app passes is often a whole HTTP answer's `tessera` field: say what is missing, not a TypeError.
      if (!Array.isArray(answer?.tokens)) throw new InputError("verifySampling needs the answer's `tessera` field ({ tokens, sampling }): no tokens given")
      if (!Array.isArray(answer.sampling) || answer.sampling.length !== answer.tokens.length) {
        throw new InputError(
          'this answer carries no sampling proof for every token: ask with "tessera_prove_sampling": true, of a relay started with --prove-sampling'
        )
      }
      const res = await fetch(`${origin}/api/zk/models`)
      if (!res.ok) throw new TesseraError('BAD_REPLY', `GET /api/zk/models answered HTTP ${res.status}`)
      const { sampling } = (await res.json()) as { sampling: SamplingEntry[] }
      const [{ verifySampledTokens }, { samplingFromJson }] = await Promise.all([
        import('../../shared/verify/sampling.js'),
        import('../../shared/zk/argmax.js')
      ])
      const each = (i: number) => ({
        root: known?.root,
        nLayers: known?.nLayers,
        peers: known?.peers,
        ...(known?.prompt !== undefined ? { context: [...known.prompt, ...answer.tokens.slice(0, i)] } : {})
      })
      const entries = o.keys === undefined ? sampling : pinnedSampling(sampling, o.keys)
      const { ms } = await verifySampledTokens(entries, answer.tokens, answer.sampling?.map(samplingFromJson), each)
      return { tokens: answer.tokens.length, ms }
    },
    close: async () => {
      clearInterval(refresh)
      await node.stop()
    }
  }
}

/**
 * What each relay that answers says of itself (GET /api/relay), in the order given; the first
 * origin's failure is the error when none answers.
 */
async function relaysOf(origins: string[]): Promise<Array<{ origin: string; addrs: string[]; iceServers?: RTCIceServer[] }>> {
  // Asked at once: a relay that does not answer holds connect up for its own time-out, not added to the others'.
  const tries = await Promise.allSettled(
    origins.map(async (origin) => {
      const res = await fetch(`${origin}/api/relay`).catch((err: Error) => {
        throw new TesseraError('UNREACHABLE', `cannot reach the Tessera relay at ${origin}: ${err.message}`)
      })
      if (!res.ok) throw new TesseraError('BAD_REPLY', `${origin} is not a Tessera relay (GET /api/relay answered HTTP ${res.status})`)
      // The relay names the STUN/TURN servers its network uses (tessera relay --ice-server); the app's own win.
      const r = (await res.json()) as { addrs: string[]; iceServers?: RTCIceServer[] }
      return { origin, addrs: r.addrs, iceServers: r.iceServers }
    })
  )
  const out = tries.flatMap((t) => (t.status === 'fulfilled' ? [t.value] : []))
  if (out.length === 0) throw (tries[0] as PromiseRejectedResult).reason
  return out
}

/**
 * Each model's text, fetched from the relay once per root and hash-checked against its manifest
 * (the Llama 3 tokenizer is ~9 MB). A failed fetch is forgotten, so the next request tries again.
 */
function textCache(origin: string): { get(root: string): Promise<ModelText | undefined> } {
  const cache = new Map<string, Promise<ModelText | undefined>>()
  return {
    get(root) {
      let p = cache.get(root)
      if (p === undefined) {
        p = fetchModelText(origin, root).then((r) => r.text)
        cache.set(root, p)
        p.catch(() => cache.delete(root))
      }
      return p
    }
  }
}
