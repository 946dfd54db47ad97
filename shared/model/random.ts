import { checkConfig, type LlamaConfig } from './config.js'
import { fillNormal, hash32, mulberry32 } from '../rng.js'
import { isBias, tensorShape, type TensorName, type WeightSource } from './weights.js'

const BIAS_STD = 0.3

/**
 * Seeded random weights for any config. Each tensor has its own stream derived from
 * (seed, name), so building layers [a, b) generates only those layers and the same tensor is
 * identical whichever shard asks for it.
 *
 * Scales keep activations near unit size (projections ~ N(0, 1/fan_in), embeddings ~ N(0, 1),
 * norms ~ 1 ± 0.1, q/k/v biases ~ N(0, 0.3²)) so logits have clear margins and greedy decoding
 * is stable across runtimes. Biases are nonzero so a test can tell whether they were applied.
 */
export function randomWeights(config: LlamaConfig, seed = 0): WeightSource {
  checkConfig(config)
  return {
    config,
    async tensor(name: TensorName) {
      const shape = tensorShape(config, name)
      const source = name === 'output' && config.tiedEmbeddings ? 'tok_embeddings' : name
      const rand = mulberry32(hash32(`${seed}:${source}`))
      const out = new Float32Array(shape.reduce((a, b) => a * b, 1))
      if (isBias(name)) return fillNormal(out, rand, BIAS_STD)
      if (shape.length === 1) {
        fillNormal(out, rand, 0.1)
        for (let i = 0; i < out.length; i++) out[i] += 1
        return out
      }
      const std = source === 'tok_embeddings' || source === 'output' ? 1 : 1 / Math.sqrt(shape[1])
      return fillNormal(out, rand, std)
    }
  }
}
