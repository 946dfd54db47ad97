import type { FileEntry, Manifest } from '../manifest.js'
import { ModelFormatError, InputError, ShardHashError } from '../errors.js'
import { sha256Hex } from '../hash.js'
import { loadTokenizer, type Tokenizer } from '../tokenizer.js'
import { chatTemplate, type ChatMessage, type ChatTemplate } from './chat.js'
import { TextStream } from './stream.js'

/**
 * Everything about a model's text in one place, the same for the relay, the CLI and a browser:
 * its tokenizer, its chat template, and the ids that end an answer.
 */
export interface ModelText {
  tokenizer: Tokenizer
  /** Undefined when the model's tokenizer_config.json has no chat template. */
  chat?: ChatTemplate
  /** The ids that end an answer: the tokenizer's EOS and every EOS the model's config names. */
  eosIds: number[]
  /** A completion prompt: the tokenizer adds BOS where the model wants one. */
  encode(text: string): number[]
  /** A chat prompt, through the template (which writes its own special tokens). */
  encodeChat(messages: ChatMessage[]): number[]
  decode(ids: number[]): string
  /** Deltas of text for streamed ids, ended by any of `stop`. */
  stream(stop?: string[]): TextStream
}

/** Reads a file the manifest names, whole (the caller's disk, a relay over HTTP, a cache). */
export type ReadEntry = (entry: FileEntry) => Promise<Uint8Array>

/**
 * The model's text, from the tokenizer files its manifest names, each checked against the
 * manifest's hash as a shard is. Undefined when the model ships no tokenizer (ids only).
 */
export async function loadModelText(manifest: Manifest, read: ReadEntry): Promise<ModelText | undefined> {
  if (manifest.tokenizer === null || manifest.tokenizer === undefined) return undefined
  const json = new TextDecoder().decode(await checked(manifest.tokenizer, read))
  const cfgEntry = manifest.tokenizerConfig
  let config: Record<string, unknown> = {}
  if (cfgEntry !== undefined && cfgEntry !== null) {
    try {
      config = JSON.parse(new TextDecoder().decode(await checked(cfgEntry, read)))
    } catch (err) {
      if (err instanceof ShardHashError) throw err
      throw new ModelFormatError(`${cfgEntry.name}: not valid JSON (${(err as Error).message})`)
    }
  }
  return modelText(loadTokenizer(json, config), chatTemplate(config), manifest)
}

async function checked(entry: FileEntry, read: ReadEntry): Promise<Uint8Array> {
  const bytes = await read(entry)
  const actual = sha256Hex(bytes)
  if (bytes.byteLength !== entry.bytes || actual !== entry.sha256) throw new ShardHashError(entry.name, entry.sha256, actual)
  return bytes
}

export function modelText(tokenizer: Tokenizer, chat: ChatTemplate | undefined, manifest: Pick<Manifest, 'name' | 'config'>): ModelText {
  const c = manifest.config
  // A tokenizer with ids past the model's vocabulary would send ids no shard can embed.
  if (tokenizer.size > c.vocabSize) {
    throw new ModelFormatError(`the tokenizer of ${manifest.name} knows ${tokenizer.size} ids but the model's vocabulary has ${c.vocabSize}`)
  }
  const eosIds = [...new Set([tokenizer.eosId, c.eosId, ...(c.eosIds ?? [])].filter((x): x is number => x !== undefined))]
  return {
    tokenizer,
    chat,
    eosIds,
    encode: (text) => tokenizer.encode(text),
    encodeChat(messages) {
      if (chat === undefined) {
        throw new InputError(
          `model ${manifest.name} has no chat template (its tokenizer_config.json has no chat_template): use a completion with a plain prompt`
        )
      }
      return tokenizer.encode(chat.render(messages), { special: false })
    },
    decode: (ids) => tokenizer.decode(ids),
    stream: (stop) => new TextStream(tokenizer, stop)
  }
}
