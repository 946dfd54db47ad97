import { Template } from '@huggingface/jinja'
import { InputError, ModelFormatError } from '../errors.js'
import { tokenText } from '../tokenizer.js'

/**
 * Chat templates: the Jinja program in a model's tokenizer_config.json that turns messages into
 * the exact text the model was trained on, rendered with @huggingface/jinja (what transformers.js
 * uses), so an instruct model sees the prompt its authors meant, in Node and in the browser.
 */

export interface ChatMessage {
  role: string
  content: string
}

export interface ChatTemplate {
  /**
   * The prompt text for `messages`. `addGenerationPrompt` (default true) ends it with the
   * assistant's header, so the model answers instead of continuing the last message. The text
   * carries the template's own special tokens (BOS included where the template writes it):
   * encode it without adding any.
   */
  render(messages: ChatMessage[], opts?: { addGenerationPrompt?: boolean }): string
}

// biome-ignore lint/suspicious/noExplicitAny: tokenizer_config.json as its authors wrote it; each field read is checked.
type Json = Record<string, any>

/**
 * The template of a tokenizer_config.json, or undefined when it has none. `chat_template` is a
 * string, or (newer files) a list of named templates of which "default" is the chat one.
 */
export function chatTemplate(config: Json): ChatTemplate | undefined {
  let source: unknown = config.chat_template
  if (Array.isArray(source)) source = source.find((t: Json) => t?.name === 'default')?.template
  if (source === undefined || source === null) return undefined
  if (typeof source !== 'string') throw new ModelFormatError('tokenizer_config.json: chat_template must be a string or a list of { name, template }')
  let template: Template
  try {
    template = new Template(source)
  } catch (err) {
    throw new ModelFormatError(`tokenizer_config.json: the chat template does not parse (${(err as Error).message})`)
  }
  // What transformers puts in a template's context besides the messages (the renderer itself
  // provides raise_exception and strftime_now).
  const context = {
    bos_token: tokenText(config.bos_token) ?? '',
    eos_token: tokenText(config.eos_token) ?? '',
    pad_token: tokenText(config.pad_token) ?? '',
    unk_token: tokenText(config.unk_token) ?? ''
  }
  return {
    render(messages, opts = {}) {
      try {
        return template.render({ ...context, messages, add_generation_prompt: opts.addGenerationPrompt !== false })
      } catch (err) {
        // The renderer's own raise_exception (roles out of order, …) lands here too: the caller's to fix.
        throw new InputError(`the model's chat template refused these messages: ${(err as Error).message}`)
      }
    }
  }
}
