import { stat } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { preset } from '../shared/model/config.js'
import { openLlama2c } from '../shared/model/llama2c.js'
import { openHfDir } from '../shared/model/hf.js'
import { randomWeights } from '../shared/model/random.js'
import type { WeightSource } from '../shared/model/weights.js'
import { ConfigError } from '../shared/errors.js'
import { fileBlobs } from './fs-blob.js'

export interface OpenedSource {
  weights: WeightSource
  /** A tokenizer.json that comes with the source, to copy into the built model. */
  tokenizer?: string
  /** A short name for the manifest. */
  name: string
}

/**
 * Opens what `tessera build-model --from` names:
 *   random:PRESET[:SEED]  seeded random weights (tiny, small, medium, llama-2-70b)
 *   FILE                  a llama2.c checkpoint (.bin)
 *   DIR                   a Hugging Face directory (config.json + *.safetensors [+ tokenizer.json])
 */
export async function openSource(from: string): Promise<OpenedSource> {
  if (from.startsWith('random:')) {
    const [, name, seed = '0'] = from.split(':')
    if (!/^\d+$/.test(seed)) throw new ConfigError(`seed in "${from}" must be a non-negative integer`)
    return { weights: randomWeights(preset(name), Number(seed)), name: `${name}-seed${seed}` }
  }
  const info = await stat(from).catch(() => {
    throw new ConfigError(`--from ${from}: no such file or directory (expected a llama2.c .bin, a Hugging Face directory, or random:PRESET[:SEED])`)
  })
  if (info.isDirectory()) {
    const blobs = fileBlobs(from)
    const weights = await openHfDir(blobs)
    return { weights, name: basename(from), tokenizer: (await blobs.has('tokenizer.json')) ? join(from, 'tokenizer.json') : undefined }
  }
  return { weights: await openLlama2c(fileBlobs(dirname(from)), basename(from)), name: basename(from).replace(/\.bin$/, '') }
}
