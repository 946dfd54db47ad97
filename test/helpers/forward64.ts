/**
 * A second forward pass of the Llama family, in plain TypeScript and Float64, written from the
 * definitions rather than from the shard graph: RMSNorm, RoPE (either pairing, Llama 3's
 * frequency rule), grouped-query attention over a KV cache, SwiGLU, q/k/v biases and a tied or
 * separate classifier. It shares nothing with shared/shard/ beyond reading the WeightSource's
 * tensors and the LlamaConfig, so a mistake in the graph builder cannot hide in both.
 */
import type { LlamaConfig } from '../../shared/model/config.js'
import type { TensorName, WeightSource } from '../../shared/model/weights.js'

type Vec = Float64Array

interface Layer {
  attnNorm: Vec
  wq: Vec
  wk: Vec
  wv: Vec
  wo: Vec
  bq?: Vec
  bk?: Vec
  bv?: Vec
  ffnNorm: Vec
  w1: Vec
  w2: Vec
  w3: Vec
}

interface Weights {
  embed: Vec
  layers: Layer[]
  norm: Vec
  classifier: Vec
}

/** Head width: config.json's head_dim when given, else the residual width split across the heads. */
const headWidth = (c: LlamaConfig): number => c.headDim ?? c.dim / c.nHeads

/**
 * Inverse frequencies θ^(−2i/d) for i < d/2, then, for rope_type "llama3", transformers'
 * rule: wavelength λ = 2π/f; λ < L/high keeps f, λ > L/low gives f/factor, and between them
 * s = (L/λ − low)/(high − low) blends: (1 − s)·f/factor + s·f (L: the original context).
 */
export function inverseFrequencies64(c: LlamaConfig): Float64Array {
  const d = headWidth(c)
  const out = new Float64Array(d / 2)
  for (let i = 0; i < d / 2; i++) out[i] = c.ropeTheta ** (-(2 * i) / d)
  const s = c.ropeScaling
  if (s === undefined) return out
  const L = s.originalMaxPositionEmbeddings
  return out.map((f) => {
    const wavelength = (2 * Math.PI) / f
    if (wavelength < L / s.highFreqFactor) return f
    if (wavelength > L / s.lowFreqFactor) return f / s.factor
    const blend = (L / wavelength - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor)
    return (1 - blend) * (f / s.factor) + blend * f
  })
}

async function load(w: WeightSource): Promise<Weights> {
  const c = w.config
  const get = async (n: TensorName): Promise<Vec> => Float64Array.from(await w.tensor(n))
  const layers: Layer[] = []
  for (let l = 0; l < c.nLayers; l++) {
    const t = async (k: string): Promise<Vec> => await get(`layers.${l}.${k}` as TensorName)
    const layer: Layer = {
      attnNorm: await t('attention_norm'),
      wq: await t('wq'),
      wk: await t('wk'),
      wv: await t('wv'),
      wo: await t('wo'),
      ffnNorm: await t('ffn_norm'),
      w1: await t('w1'),
      w2: await t('w2'),
      w3: await t('w3')
    }
    if (c.qkvBias === true) Object.assign(layer, { bq: await t('bq'), bk: await t('bk'), bv: await t('bv') })
    layers.push(layer)
  }
  const embed = await get('tok_embeddings')
  // Tied: the classifier is the embedding table itself, whatever the source says about 'output'.
  return { embed, layers, norm: await get('norm'), classifier: c.tiedEmbeddings ? embed : await get('output') }
}

/** y = W·x (+ b) for W stored [rows, x.length], row-major. */
function matVec(w: Vec, x: Vec, rows: number, bias?: Vec): Vec {
  const n = x.length
  const y = new Float64Array(rows)
  for (let r = 0; r < rows; r++) {
    let acc = bias?.[r] ?? 0
    for (let i = 0; i < n; i++) acc += w[r * n + i] * x[i]
    y[r] = acc
  }
  return y
}

function rmsNorm(x: Vec, w: Vec, eps: number): Vec {
  let ss = 0
  for (const v of x) ss += v * v
  const inv = 1 / Math.sqrt(ss / x.length + eps)
  return x.map((v, i) => v * inv * w[i])
}

const silu = (v: number): number => v / (1 + Math.exp(-v))

/** The model, one token at a time over its own KV cache (keys already rotated). */
export class Forward64 {
  private keys: Vec[][] // [layer][position] → kvHeads·hd
  private values: Vec[][]
  private readonly freqs: Float64Array
  private readonly hd: number

  private constructor(
    readonly config: LlamaConfig,
    private readonly w: Weights
  ) {
    this.hd = headWidth(config)
    this.freqs = inverseFrequencies64(config)
    this.keys = w.layers.map(() => [])
    this.values = w.layers.map(() => [])
  }

  static async load(w: WeightSource): Promise<Forward64> {
    return new Forward64(w.config, await load(w))
  }

  get length(): number {
    return this.keys[0].length
  }

  reset(): void {
    this.keys = this.w.layers.map(() => [])
    this.values = this.w.layers.map(() => [])
  }

  /** Feeds `tokens` after the cache; returns each one's logits. */
  step(tokens: number[]): Vec[] {
    return tokens.map((t) => this.token(t))
  }

  /** Rotates each head of `x` (in place) by the angles of position `pos`, pairing dimensions per the layout. */
  private rotate(x: Vec, heads: number, pos: number): void {
    const hd = this.hd
    const half = hd / 2
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < half; i++) {
        const [a, b] = this.config.ropeLayout === 'half' ? [h * hd + i, h * hd + i + half] : [h * hd + 2 * i, h * hd + 2 * i + 1]
        const angle = pos * this.freqs[i]
        const [cos, sin] = [Math.cos(angle), Math.sin(angle)]
        const [xa, xb] = [x[a], x[b]]
        x[a] = xa * cos - xb * sin
        x[b] = xa * sin + xb * cos
      }
    }
  }

  private token(id: number): Vec {
    const c = this.config
    const { hd } = this
    const pos = this.length
    let x: Vec = this.w.embed.slice(id * c.dim, (id + 1) * c.dim)
    for (const [l, L] of this.w.layers.entries()) {
      const h = rmsNorm(x, L.attnNorm, c.normEps)
      const q = matVec(L.wq, h, c.nHeads * hd, L.bq)
      const k = matVec(L.wk, h, c.nKvHeads * hd, L.bk)
      const v = matVec(L.wv, h, c.nKvHeads * hd, L.bv)
      this.rotate(q, c.nHeads, pos)
      this.rotate(k, c.nKvHeads, pos)
      this.keys[l].push(k)
      this.values[l].push(v)
      const attn = this.attend(l, q)
      const o = matVec(L.wo, attn, c.dim)
      x = x.map((xi, i) => xi + o[i])
      const g = rmsNorm(x, L.ffnNorm, c.normEps)
      const gate = matVec(L.w1, g, c.hiddenDim)
      const up = matVec(L.w3, g, c.hiddenDim)
      const down = matVec(
        L.w2,
        gate.map((a, i) => silu(a) * up[i]),
        c.dim
      )
      x = x.map((xi, i) => xi + down[i])
    }
    return matVec(this.w.classifier, rmsNorm(x, this.w.norm, c.normEps), c.vocabSize)
  }

  /** Causal softmax attention of every query head over the cache; query head h reads kv head ⌊h / (nHeads/nKvHeads)⌋. */
  private attend(l: number, q: Vec): Vec {
    const c = this.config
    const { hd } = this
    const group = c.nHeads / c.nKvHeads
    const keys = this.keys[l]
    const values = this.values[l]
    const out = new Float64Array(c.nHeads * hd)
    for (let h = 0; h < c.nHeads; h++) {
      const kv = Math.floor(h / group) * hd
      const scores = keys.map((k) => {
        let s = 0
        for (let i = 0; i < hd; i++) s += q[h * hd + i] * k[kv + i]
        return s / Math.sqrt(hd)
      })
      const max = Math.max(...scores)
      const e = scores.map((s) => Math.exp(s - max))
      const sum = e.reduce((a, b) => a + b, 0)
      for (const [j, v] of values.entries()) for (let i = 0; i < hd; i++) out[h * hd + i] += (e[j] / sum) * v[kv + i]
    }
    return out
  }
}

export interface Greedy64 {
  /** Logits of every prompt position. */
  promptLogits: Vec[]
  /** Greedy ids, free-running. */
  ids: number[]
  /** Logits each id was chosen from (step 0: the last prompt position). */
  stepLogits: Vec[]
  /** top-1 minus top-2 logit at each step. */
  margins: number[]
  /** How many leading ids are decided by a margin of at least `minMargin`: the ids any correct runtime must reproduce. */
  decisivePrefix: number
}

/** Runs the prompt, then `steps` greedy tokens, from a fresh cache. */
export function greedy64(m: Forward64, prompt: number[], steps: number, minMargin = 1e-3): Greedy64 {
  m.reset()
  const promptLogits = m.step(prompt)
  let logits = promptLogits[promptLogits.length - 1]
  const ids: number[] = []
  const stepLogits: Vec[] = []
  const margins: number[] = []
  for (let s = 0; s < steps; s++) {
    const [top, second] = topTwo(logits)
    ids.push(top)
    stepLogits.push(logits)
    margins.push(logits[top] - logits[second])
    if (s + 1 < steps) logits = m.step([top])[0]
  }
  const undecided = margins.findIndex((d) => d < minMargin)
  return { promptLogits, ids, stepLogits, margins, decisivePrefix: undecided === -1 ? steps : undecided }
}

function topTwo(v: Vec): [number, number] {
  let a = 0
  let b = -1
  for (let i = 1; i < v.length; i++) {
    if (v[i] > v[a]) {
      b = a
      a = i
    } else if (b === -1 || v[i] > v[b]) {
      b = i
    }
  }
  return [a, b]
}
