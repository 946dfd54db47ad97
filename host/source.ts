import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { preset } from '../shared/model/config.js'
import { openLlama2c } from '../shared/model/llama2c.js'
import { openHfDir } from '../shared/model/hf.js'
import { randomWeights } from '../shared/model/random.js'
import type { WeightSource } from '../shared/model/weights.js'
import { ConfigError } from '../shared/errors.js'
import { ggufTokenizer } from '../shared/text/gguf-tokenizer.js'
import { fileBlobs } from './fs-blob.js'
import { isGgufFile, openGgufFile } from './gguf.js'
import { presetTokenizer } from './tokenizers.js'

export interface OpenedSource {
  weights: WeightSource
  /** A tokenizer.json that comes with the source, to copy into the built model. */
  tokenizer?: string
  /** Its tokenizer_config.json (special tokens, chat template), when there is one. */
  tokenizerConfig?: string
  /** A short name for the manifest. */
  name: string
  /** Removes what opening made (a GGUF's rebuilt tokenizer files), once the build has copied it. */
  dispose?: () => Promise<void>
}

/**
 * Opens what `tessera build-model --from` names:
 *   random:PRESET[:SEED]  seeded random weights (tiny, tiny-llama3, small, medium, llama-2-70b); tiny-llama3
 *                         comes with the real Llama 3.1 tokenizer and chat template (host/tokenizers.ts)
 *   FILE                  a GGUF file (llama.cpp, or an Ollama blob: recognised by its "GGUF" magic bytes), its
 *                         tokenizer rebuilt from the metadata; else a llama2.c checkpoint (.bin)
 *   DIR                   a Hugging Face directory (config.json + *.safetensors [+ tokenizer.json, tokenizer_config.json])
 */
export async function openSource(from: string, opts: { maxSeqLen?: number } = {}): Promise<OpenedSource> {
  if (from.startsWith('random:')) {
    const [, name, seed = '0'] = from.split(':')
    if (!/^\d+$/.test(seed)) throw new ConfigError(`seed in "${from}" must be a non-negative integer`)
    return { weights: randomWeights(preset(name), Number(seed)), name: `${name}-seed${seed}`, ...presetTokenizer(name) }
  }
  const info = await stat(from).catch(() => {
    throw new ConfigError(
      `--from ${from}: no such file or directory (expected a GGUF file, a llama2.c .bin, a Hugging Face directory, or random:PRESET[:SEED])`
    )
  })
  if (info.isDirectory()) {
    const blobs = fileBlobs(from)
    const weights = await openHfDir(blobs, opts)
    const has = async (file: string): Promise<string | undefined> => ((await blobs.has(file)) ? join(from, file) : undefined)
    return { weights, name: basename(from), tokenizer: await has('tokenizer.json'), tokenizerConfig: await has('tokenizer_config.json') }
  }
  if (from.endsWith('.gguf') || (await isGgufFile(from))) return await openGgufSource(from, opts)
  return { weights: await openLlama2c(fileBlobs(dirname(from)), basename(from)), name: basename(from).replace(/\.bin$/, '') }
}

/** A GGUF file: weights read lazily from it; its tokenizer rebuilt into a fresh temp dir, as the build copies files by path. */
async function openGgufSource(from: string, opts: { maxSeqLen?: number }): Promise<OpenedSource> {
  const { weights, metadata } = await openGgufFile(from, opts)
  const general = metadata['general.name']
  const name = typeof general === 'string' && general !== '' ? general : basename(from).replace(/\.gguf$/, '')
  const rebuilt = ggufTokenizer(metadata)
  if (rebuilt === undefined) return { weights, name }
  const dir = await mkdtemp(join(tmpdir(), 'tessera-gguf-tokenizer-'))
  const tokenizer = join(dir, 'tokenizer.json')
  const tokenizerConfig = join(dir, 'tokenizer_config.json')
  await writeFile(tokenizer, JSON.stringify(rebuilt.tokenizer))
  await writeFile(tokenizerConfig, JSON.stringify(rebuilt.config, null, 2) + '\n')
  return { weights, name, tokenizer, tokenizerConfig, dispose: async () => await rm(dir, { recursive: true, force: true }) }
}
