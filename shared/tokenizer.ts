import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers'
import { ModelFormatError } from './errors.js'

/**
 * Text ↔ token ids for a model, from its tokenizer.json (+ optional tokenizer_config.json),
 * offline, through @huggingface/tokenizers (pure JS, so it runs in browsers too).
 */
export interface Tokenizer {
  /**
   * Token ids of `text`, with BOS as the tokenizer (or `addBos`) wants it. `special: false`
   * adds no special tokens at all: for text a chat template rendered, which carries its own.
   */
  encode(text: string, opts?: { special?: boolean }): number[]
  /** Text of `ids`; special tokens (BOS, EOS, …) are dropped unless `keepSpecial`. */
  decode(ids: number[], opts?: { keepSpecial?: boolean }): string
  readonly bosId?: number
  readonly eosId?: number
  /** How many ids the tokenizer knows (its vocabulary plus added tokens). */
  readonly size: number
}

export interface TokenizerOptions {
  /**
   * Unset: follow the tokenizer's own post-processor (Llama's TemplateProcessing adds <s>;
   * byte-level GPT-style ones add nothing). true: make sure the ids start with BOS. false:
   * encode without any special tokens.
   */
  addBos?: boolean
}

// biome-ignore lint/suspicious/noExplicitAny: tokenizer.json as the library reads it; only the fields we use are looked at.
type Json = Record<string, any>

/** tokenizer_config.json writes special tokens as a string or as an AddedToken object. */
export const tokenText = (t: unknown): string | undefined =>
  typeof t === 'string' ? t : typeof (t as Json | null)?.content === 'string' ? (t as Json).content : undefined

export function loadTokenizer(json: string | object, config: object = {}, opts: TokenizerOptions = {}): Tokenizer {
  let spec: Json
  try {
    spec = typeof json === 'string' ? JSON.parse(json) : { ...json }
  } catch (err) {
    throw new ModelFormatError(`tokenizer.json: not valid JSON (${(err as Error).message})`)
  }
  // The library iterates these unconditionally; minimal tokenizer.json files omit them.
  spec.added_tokens ??= []
  for (const k of ['normalizer', 'pre_tokenizer', 'post_processor', 'decoder']) spec[k] ??= null
  let tok: HfTokenizer
  try {
    tok = new HfTokenizer(spec, config)
  } catch (err) {
    throw new ModelFormatError(`tokenizer.json cannot be loaded: ${(err as Error).message}`)
  }
  const cfg = config as Json
  const id = (t: unknown): number | undefined => {
    const s = tokenText(t)
    return s === undefined ? undefined : tok.token_to_id(s)
  }
  // BOS: tokenizer_config.json's bos_token, else the special token a template puts first.
  const template = spec.post_processor?.type === 'TemplateProcessing' ? spec.post_processor.single : undefined
  const lead = Array.isArray(template) ? template[0]?.SpecialToken?.id : undefined
  const bosId = id(cfg.bos_token) ?? id(lead)
  const eosId = id(cfg.eos_token)

  return {
    bosId,
    eosId,
    size: vocabSize(spec),
    encode(text, o = {}) {
      if (o.special === false) return tok.encode(text, { add_special_tokens: false }).ids
      const ids = tok.encode(text, { add_special_tokens: opts.addBos !== false }).ids
      if (opts.addBos === true && bosId !== undefined && ids[0] !== bosId) ids.unshift(bosId)
      return ids
    },
    decode(ids, o = {}) {
      if (ids.length === 0) return '' // the library throws on an empty list
      return tok.decode(ids, { skip_special_tokens: o.keepSpecial !== true })
    }
  }
}

/** One past the largest id the tokenizer can produce: the model's vocabulary must cover it. */
function vocabSize(spec: Json): number {
  const vocab = spec.model?.vocab
  // BPE and WordPiece keep token → id; Unigram keeps [token, score] pairs in id order.
  const ids: number[] = Array.isArray(vocab) ? [vocab.length - 1] : Object.values((vocab ?? {}) as Record<string, number>)
  for (const t of spec.added_tokens as Array<{ id: number }>) ids.push(t.id)
  return ids.reduce((a, b) => Math.max(a, b), -1) + 1
}
