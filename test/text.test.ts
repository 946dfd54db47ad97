/**
 * Text: every shipped tokenizer round-trips multilingual and emoji text, streamed decoding equals
 * the full decode (byte-level and byte-fallback tokens cut characters in half), stop strings end
 * the text without showing it, the chat template renders what the model was trained on (its BOS
 * once), and a model's text files are checked against its manifest like shards.
 */
import { describe, it, expect } from 'vitest'
import { readFileSync } from 'node:fs'
import { presetTokenizer } from '../host/tokenizers.js'
import { preset } from '../shared/model/config.js'
import { loadTokenizer, type Tokenizer } from '../shared/tokenizer.js'
import { chatTemplate } from '../shared/text/chat.js'
import { loadModelText, modelText } from '../shared/text/model-text.js'
import { TextStream } from '../shared/text/stream.js'
import { mulberry32 } from '../shared/rng.js'
import { sha256Hex } from '../shared/hash.js'
import type { Manifest } from '../shared/manifest.js'
import { InputError, ModelFormatError, ShardHashError } from '../shared/errors.js'

const SAMPLES = [
  'Once upon a time, there was a little robot.',
  'naïve café — “quotes” and ½ × π ≈ 1.57',
  'Привет, мир! Ελληνικά. עברית. العربية.',
  '日本語のテキスト、中文文本，한국어 텍스트。',
  'emoji: 😀👍🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 and 🦙',
  '  leading spaces,\ttabs\nand\n\nnewlines  ',
  'code: const x = [1, 2, 3].map((n) => n ** 2) // ✓'
]

const read = (path: string): string => readFileSync(path, 'utf8')

/** The tokenizers that ship with the repository's presets (today Llama 3.1's). */
function shipped(): Array<{ name: string; tok: Tokenizer; config: Record<string, unknown> }> {
  const files = presetTokenizer('tiny-llama3')!
  const config = JSON.parse(read(files.tokenizerConfig!))
  return [{ name: 'llama3.1', tok: loadTokenizer(read(files.tokenizer), config), config }]
}

/**
 * A small SentencePiece-style tokenizer with byte fallback (Llama 2's decoder chain): characters
 * outside its vocabulary become <0xNN> byte tokens, so one emoji is four tokens.
 */
function byteFallback(): Tokenizer {
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 }
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = 3 + b
  const pieces = ['▁', ...'abcdefghijklmnopqrstuvwxyz,.!', '▁t', 'he', '▁the', 'on', '▁on', 'ce']
  for (const p of pieces) vocab[p] = Object.keys(vocab).length
  const merges = ['▁ t', 'h e', '▁t he', 'o n', '▁ on', 'c e']
  const json = {
    version: '1.0',
    added_tokens: [0, 1, 2].map((id) => ({
      id,
      content: ['<unk>', '<s>', '</s>'][id],
      special: true,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false
    })),
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: '▁' },
        { type: 'Replace', pattern: { String: ' ' }, content: '▁' }
      ]
    },
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 }
      ]
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      vocab,
      merges
    }
  }
  return loadTokenizer(json, { bos_token: '<s>', eos_token: '</s>' }, { addBos: false })
}

/** The text a stream shows for `ids`, delta by delta. */
function streamed(tok: Tokenizer, ids: number[], stops: string[] = []): { deltas: string[]; text: string; stopped: boolean } {
  const s = new TextStream(tok, stops)
  const deltas = ids.map((id) => s.push(id))
  deltas.push(s.end())
  return { deltas, text: deltas.join(''), stopped: s.stopped }
}

describe('tokenizers', () => {
  for (const { name, tok } of shipped()) {
    it(`${name}: every sample round-trips, and streaming it shows exactly the full decode`, () => {
      expect(tok.size).toBe(preset('tiny-llama3').vocabSize)
      for (const text of SAMPLES) {
        const ids = tok.encode(text, { special: false })
        expect(tok.decode(ids), text).toBe(text)
        expect(streamed(tok, ids).text, text).toBe(tok.decode(ids))
        // With BOS: the special token is dropped from the text.
        const withBos = tok.encode(text)
        expect(withBos[0]).toBe(tok.bosId)
        expect(tok.decode(withBos)).toBe(text)
      }
      // An emoji is several byte-level tokens: no delta ever shows half a character.
      const { deltas } = streamed(tok, tok.encode('🦙🦙 👨‍👩‍👧‍👦', { special: false }))
      for (const d of deltas) expect(d).not.toMatch(/\uFFFD/)
    })

    it(`${name}: random id sequences stream to their full decode`, () => {
      const rand = mulberry32(7)
      for (let trial = 0; trial < 40; trial++) {
        // Mostly ordinary ids, some from the byte range that splits characters.
        const ids = Array.from({ length: 1 + Math.floor(rand() * 30) }, () => (rand() < 0.3 ? Math.floor(rand() * 256) : Math.floor(rand() * 128000)))
        expect(streamed(tok, ids).text, JSON.stringify(ids)).toBe(tok.decode(ids))
      }
    })
  }

  it('byte fallback: characters outside the vocabulary are byte tokens, and streaming holds them until whole', () => {
    const tok = byteFallback()
    for (const text of ['the one', 'the café 😀 on', 'Привет the']) {
      const ids = tok.encode(text)
      expect(tok.decode(ids)).toBe(text)
      const { deltas, text: shown } = streamed(tok, ids)
      expect(shown).toBe(text)
      for (const d of deltas) expect(d).not.toMatch(/\uFFFD/)
    }
    // The emoji really is four byte tokens, emitted as one delta.
    const emoji = tok.encode('😀')
    expect(emoji.length).toBeGreaterThanOrEqual(4)
    expect(streamed(tok, emoji).deltas.filter((d) => d !== '')).toEqual(['😀'])
  })
})

describe('stop strings', () => {
  const [{ tok }] = shipped()
  it('end the text before the first stop string, across token boundaries, and never show part of one', () => {
    const ids = tok.encode('The cat sat. The end. More text', { special: false })
    const r = streamed(tok, ids, ['end.', 'zebra'])
    expect(r.text).toBe('The cat sat. The ')
    expect(r.stopped).toBe(true)
    // A prefix of a stop string is held back and shown once it cannot become one.
    const held = streamed(tok, tok.encode('a b c d', { special: false }), ['b c x'])
    expect(held.text).toBe('a b c d')
    expect(held.stopped).toBe(false)
    // The earliest stop wins, whichever is listed first.
    expect(streamed(tok, ids, ['More', 'cat']).text).toBe('The ')
  })
})

describe('chat templates', () => {
  const [{ tok, config }] = shipped()
  const manifest = { name: 'tiny-llama3', config: preset('tiny-llama3') }
  const text = modelText(tok, chatTemplate(config), manifest)
  const messages = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Hi there!' }
  ]

  it("render Llama 3.1's format with the generation prompt, and the ids carry BOS exactly once", () => {
    const rendered = text.chat!.render(messages)
    expect(rendered.startsWith('<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>')).toBe(true)
    expect(rendered.endsWith('<|start_header_id|>assistant<|end_header_id|>\n\n')).toBe(true)
    expect(text.chat!.render(messages, { addGenerationPrompt: false }).endsWith('Hi there!<|eot_id|>')).toBe(true)
    const ids = text.encodeChat(messages)
    expect(ids.filter((id) => id === tok.bosId)).toEqual([tok.bosId])
    expect(ids[0]).toBe(tok.bosId)
    // The headers are single special tokens, not text.
    expect(ids).toContain(tok.encode('<|start_header_id|>', { special: false })[0])
    expect(ids.length).toBeLessThan(30)
    // EOS: the tokenizer's end of turn and the config's ends of text.
    expect(text.eosIds).toEqual(expect.arrayContaining([128009, ...(preset('tiny-llama3').eosIds ?? [])]))
  })

  it('a model without a template refuses chat with an InputError; a broken template is a format error', () => {
    expect(() => modelText(tok, undefined, manifest).encodeChat(messages)).toThrow(InputError)
    expect(() => chatTemplate({ chat_template: '{% for m in messages %}' })).toThrow(ModelFormatError)
    const strict = chatTemplate({ chat_template: "{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}{% endif %}ok" })!
    expect(() => strict.render([{ role: 'assistant', content: 'x' }])).toThrow(/user first/)
  })
})

describe('model text from a manifest', () => {
  const files = presetTokenizer('tiny-llama3')!
  const bytes = { 'tokenizer.json': readFileSync(files.tokenizer), 'tokenizer_config.json': readFileSync(files.tokenizerConfig!) }
  const entry = (name: keyof typeof bytes) => ({ name, bytes: bytes[name].byteLength, sha256: sha256Hex(bytes[name]) })
  const manifest = {
    name: 'm',
    config: preset('tiny-llama3'),
    tokenizer: entry('tokenizer.json'),
    tokenizerConfig: entry('tokenizer_config.json')
  } as unknown as Manifest

  it('loads the tokenizer and template whose hashes match, and refuses a file that differs', async () => {
    const text = await loadModelText(manifest, async (f) => bytes[f.name as keyof typeof bytes])
    expect(text?.chat).toBeDefined()
    expect(text!.decode(text!.encode('hello'))).toBe('hello')
    const tampered = async (f: { name: string }): Promise<Uint8Array> =>
      f.name === 'tokenizer_config.json' ? new TextEncoder().encode(JSON.stringify({ chat_template: 'evil' })) : bytes[f.name as keyof typeof bytes]
    await expect(loadModelText(manifest, tampered)).rejects.toThrow(ShardHashError)
    expect(await loadModelText({ ...manifest, tokenizer: null }, async () => new Uint8Array())).toBeUndefined()
  })

  it("refuses a tokenizer with more ids than the model's vocabulary", () => {
    const [{ tok }] = shipped()
    expect(() => modelText(tok, undefined, { name: 'small', config: preset('tiny') })).toThrow(/knows 128256 ids but the model's vocabulary has 512/)
  })
})
