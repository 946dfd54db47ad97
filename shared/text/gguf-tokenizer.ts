import { ConfigError, ModelFormatError } from '../errors.js'

/**
 * A model's tokenizer rebuilt from GGUF metadata (tokenizer.ggml.*) as the tokenizer.json and
 * tokenizer_config.json that transformers would have shipped, so shared/tokenizer.ts (and
 * chat.ts) load it like any Hugging Face tokenizer. Two GGUF tokenizer models:
 *
 *   "gpt2"   byte-level BPE: tokens (already in GPT-2's byte→unicode alphabet) + merges; the
 *            pre-tokenizer is named by tokenizer.ggml.pre, and only names whose HF setup is
 *            known here are accepted (Llama 3's "llama-bpe", Qwen2's "qwen2").
 *   "llama"  SentencePiece BPE: tokens + scores, byte fallback (<0xXX> tokens); merges are
 *            derived from the scores as transformers' SentencePiece converter does.
 *
 * Anything else is refused by name: guessing a pre-tokenizer gives a tokenizer that runs but
 * splits text differently from the one the model was trained with.
 */

/** tokenizer.ggml.token_type values (llama.cpp's llama_token_type). */
export const TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const

export interface RebuiltTokenizer {
  /** tokenizer.json */
  tokenizer: Record<string, unknown>
  /** tokenizer_config.json: bos/eos tokens, chat template */
  config: Record<string, unknown>
}

// Llama 3 (tiktoken cl100k-style) and Qwen2 splits; Qwen2 takes digits one at a time.
const LLAMA3_SPLIT = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
const QWEN2_SPLIT = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

const byteLevel = (addPrefixSpace: boolean, trimOffsets: boolean, useRegex: boolean): object => ({
  type: 'ByteLevel',
  add_prefix_space: addPrefixSpace,
  trim_offsets: trimOffsets,
  use_regex: useRegex
})
const split = (regex: string): object => ({ type: 'Split', pattern: { Regex: regex }, behavior: 'Isolated', invert: false })

interface BpePre {
  normalizer: object | null
  preTokenizer: object
  /** The post-processor before BOS/EOS are added (a template is appended when they are). */
  post: object
  decoder: object
  ignoreMerges: boolean
  /** What the model's own tokenizer_config.json says: Llama 3's decode turns " ." into ".", Qwen2's does not (llama.cpp's clean_spaces agrees). */
  cleanUp: boolean
  /** llama.cpp's add_bos when the file does not say. */
  addBos: boolean
}

/** tokenizer.ggml.pre → the HF pipeline it stands for (llama.cpp's llama-vocab.cpp lists the same splits). */
const BPE_PRE: Record<string, BpePre> = {
  'llama-bpe': {
    normalizer: null,
    preTokenizer: { type: 'Sequence', pretokenizers: [split(LLAMA3_SPLIT), byteLevel(false, true, false)] },
    post: byteLevel(true, false, true),
    decoder: byteLevel(true, true, true),
    ignoreMerges: true,
    cleanUp: true,
    addBos: true
  },
  qwen2: {
    normalizer: { type: 'NFC' },
    preTokenizer: { type: 'Sequence', pretokenizers: [split(QWEN2_SPLIT), byteLevel(false, false, false)] },
    post: byteLevel(false, false, false),
    decoder: byteLevel(false, false, false),
    ignoreMerges: false,
    cleanUp: false,
    addBos: false
  }
}
// Older llama.cpp conversions of Llama 3 wrote these names for the same pre-tokenizer.
BPE_PRE.llama3 = BPE_PRE['llama-bpe']
BPE_PRE['llama-v3'] = BPE_PRE['llama-bpe']

export const SUPPORTED_TOKENIZERS = `supported: tokenizer.ggml.model "gpt2" with tokenizer.ggml.pre ${Object.keys(BPE_PRE)
  .map((p) => `"${p}"`)
  .join(', ')}, and "llama" (SentencePiece BPE)`

const strings = (meta: Record<string, unknown>, key: string): string[] => {
  const v = meta[key]
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new ModelFormatError(`GGUF: ${key} is missing or not a list of strings`)
  return v as string[]
}
const numbers = (meta: Record<string, unknown>, key: string, n: number): number[] | undefined => {
  const v = meta[key]
  if (v === undefined) return undefined
  if (!Array.isArray(v) || v.length !== n) throw new ModelFormatError(`GGUF: ${key} must list one number per token (${n})`)
  return v.map(Number)
}
const int = (v: unknown): number | undefined => (typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : undefined)

/** The tokenizer files of a GGUF file's metadata, or undefined when it carries no vocabulary. */
export function ggufTokenizer(meta: Record<string, unknown>): RebuiltTokenizer | undefined {
  const model = meta['tokenizer.ggml.model']
  if (model === undefined || model === 'no_vocab') return undefined
  if (model !== 'gpt2' && model !== 'llama')
    throw new ConfigError(`GGUF: tokenizer.ggml.model ${JSON.stringify(model)} is not supported; ${SUPPORTED_TOKENIZERS}`)
  const tokens = strings(meta, 'tokenizer.ggml.tokens')
  const types = numbers(meta, 'tokenizer.ggml.token_type', tokens.length) ?? tokens.map(() => TOKEN_TYPE.normal)
  const special = (key: string): string | undefined => {
    const id = int(meta[`tokenizer.ggml.${key}`])
    if (id === undefined) return undefined
    if (id < 0 || id >= tokens.length) throw new ModelFormatError(`GGUF: tokenizer.ggml.${key} ${id} is not a token id (${tokens.length} tokens)`)
    return tokens[id]
  }
  const bos = special('bos_token_id')
  const eos = special('eos_token_id')
  const addEos = meta['tokenizer.ggml.add_eos_token'] === true
  // Control and user-defined tokens are matched in the raw text before the model sees it, as HF's added tokens are.
  const added = tokens.flatMap((content, id) =>
    types[id] === TOKEN_TYPE.control || types[id] === TOKEN_TYPE.userDefined || types[id] === TOKEN_TYPE.unknown
      ? [{ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: types[id] !== TOKEN_TYPE.userDefined }]
      : []
  )
  const built = model === 'gpt2' ? byteLevelBpe(meta, tokens, types) : sentencePiece(meta, tokens, types)
  // When the file does not say, llama.cpp's defaults: SentencePiece adds BOS; byte-level BPE as its pre-tokenizer says.
  const addBos = (meta['tokenizer.ggml.add_bos_token'] ?? built.addBos) === true
  const template = bosEosTemplate(addBos ? bos : undefined, addEos ? eos : undefined, tokens)
  const post = template === undefined ? built.post : built.post === null ? template : { type: 'Sequence', processors: [built.post, template] }

  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: built.normalizer,
    pre_tokenizer: built.preTokenizer,
    post_processor: post,
    decoder: built.decoder,
    model: built.model
  }
  const config: Record<string, unknown> = {
    tokenizer_class: 'PreTrainedTokenizerFast',
    clean_up_tokenization_spaces: built.cleanUp,
    add_bos_token: addBos,
    add_eos_token: addEos
  }
  if (bos !== undefined) config.bos_token = bos
  if (eos !== undefined) config.eos_token = eos
  const unk = special('unknown_token_id')
  const pad = special('padding_token_id')
  if (unk !== undefined) config.unk_token = unk
  if (pad !== undefined) config.pad_token = pad
  const chat = meta['tokenizer.chat_template']
  if (typeof chat === 'string') config.chat_template = chat
  return { tokenizer, config }
}

interface Built {
  normalizer: object | null
  preTokenizer: object | null
  post: object | null
  decoder: object
  model: object
  cleanUp: boolean
  addBos: boolean
}

function byteLevelBpe(meta: Record<string, unknown>, tokens: string[], types: number[]): Built {
  const pre = meta['tokenizer.ggml.pre']
  const setup = typeof pre === 'string' && Object.hasOwn(BPE_PRE, pre) ? BPE_PRE[pre] : undefined
  if (setup === undefined)
    throw new ConfigError(`GGUF: byte-level BPE pre-tokenizer (tokenizer.ggml.pre) ${JSON.stringify(pre)} is not supported; ${SUPPORTED_TOKENIZERS}`)
  const vocab: Record<string, number> = {}
  tokens.forEach((t, id) => {
    // HF keeps added tokens out of the model's vocabulary; ids stay what GGUF says.
    if (types[id] !== TOKEN_TYPE.control && types[id] !== TOKEN_TYPE.userDefined && !Object.hasOwn(vocab, t)) vocab[t] = id
  })
  return {
    normalizer: setup.normalizer,
    preTokenizer: setup.preTokenizer,
    post: setup.post,
    decoder: setup.decoder,
    cleanUp: setup.cleanUp,
    addBos: setup.addBos,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: setup.ignoreMerges,
      vocab,
      merges: strings(meta, 'tokenizer.ggml.merges')
    }
  }
}

/**
 * SentencePiece BPE as transformers' LlamaConverter writes it: "▁" for spaces (and one in front
 * unless add_space_prefix is false), merges ranked by the merged piece's score (SentencePiece
 * merges the best-scoring adjacent pair first, which is the same order), byte fallback.
 */
function sentencePiece(meta: Record<string, unknown>, tokens: string[], types: number[]): Built {
  const scores = numbers(meta, 'tokenizer.ggml.scores', tokens.length)
  if (scores === undefined) throw new ModelFormatError('GGUF: a SentencePiece ("llama") tokenizer needs tokenizer.ggml.scores')
  const vocab: Record<string, number> = {}
  tokens.forEach((t, id) => {
    if (!Object.hasOwn(vocab, t)) vocab[t] = id
  })
  // Only ordinary pieces are merged into; control, unknown and byte tokens are never built from text.
  const mergeable = (id: number): boolean => types[id] === TOKEN_TYPE.normal || types[id] === TOKEN_TYPE.userDefined
  const merges: Array<{ pair: string; score: number }> = []
  tokens.forEach((piece, id) => {
    if (!mergeable(id)) return
    const chars = [...piece]
    const local: Array<[number, number, string]> = []
    for (let i = 1; i < chars.length; i++) {
      const l = chars.slice(0, i).join('')
      const r = chars.slice(i).join('')
      if (Object.hasOwn(vocab, l) && Object.hasOwn(vocab, r)) local.push([vocab[l], vocab[r], `${l} ${r}`])
    }
    local.sort((a, b) => a[0] - b[0] || a[1] - b[1])
    for (const [, , pair] of local) merges.push({ pair, score: scores[id] })
  })
  merges.sort((a, b) => b.score - a.score) // stable: ties keep vocabulary order, as Python's sort does
  const unkId = int(meta['tokenizer.ggml.unknown_token_id']) ?? types.indexOf(TOKEN_TYPE.unknown)
  const prefix = meta['tokenizer.ggml.add_space_prefix'] !== false
  const replace = { type: 'Replace', pattern: { String: ' ' }, content: '▁' }
  return {
    normalizer: prefix ? { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, replace] } : replace,
    preTokenizer: null,
    post: null,
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        ...(prefix ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : [])
      ]
    },
    cleanUp: false,
    addBos: true,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: unkId >= 0 ? tokens[unkId] : null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges: merges.map((m) => m.pair)
    }
  }
}

/** TemplateProcessing that puts BOS before (and EOS after) each sequence, as add_bos/eos_token ask. */
function bosEosTemplate(bos: string | undefined, eos: string | undefined, tokens: string[]): object | undefined {
  if (bos === undefined && eos === undefined) return undefined
  const tok = (t: string | undefined, typeId: number): object[] => (t === undefined ? [] : [{ SpecialToken: { id: t, type_id: typeId } }])
  const seq = (id: string, typeId: number): object => ({ Sequence: { id, type_id: typeId } })
  const specials: Record<string, object> = {}
  for (const t of [bos, eos]) if (t !== undefined) specials[t] = { id: t, ids: [tokens.indexOf(t)], tokens: [t] }
  return {
    type: 'TemplateProcessing',
    single: [...tok(bos, 0), seq('A', 0), ...tok(eos, 0)],
    pair: [...tok(bos, 0), seq('A', 0), ...tok(eos, 0), ...tok(bos, 1), seq('B', 1), ...tok(eos, 1)],
    special_tokens: specials
  }
}
