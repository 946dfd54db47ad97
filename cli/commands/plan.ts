import type { Command } from 'commander'
import { Option } from 'commander'
import bytes from 'bytes'
import { stat } from 'node:fs/promises'
import { PRESETS, preset, paramCount, type LlamaConfig } from '../../shared/model/config.js'
import { WEIGHT_DTYPES, type WeightDType } from '../../shared/shard/build.js'
import { planMemory, type MemoryPlan } from '../../shared/plan.js'
import { readManifest } from '../../host/model-store.js'
import { int, memory } from './options.js'

const fmt = (n: number): string => bytes.format(n, { unitSeparator: ' ', decimalPlaces: 2 }) ?? String(n)

export function registerPlan(program: Command): void {
  program
    .command('plan')
    .description('say how many layers of a model fit in a memory budget')
    .requiredOption('--model <dir|preset>', `a built model directory or a preset (${Object.keys(PRESETS).join(', ')})`)
    .requiredOption('--memory <size>', 'VRAM (CUDA) or RAM (CPU) this node may use, e.g. 24GB', memory)
    .addOption(new Option('--dtype <dtype>', "weight precision (default: the model's, or int4 for a preset)").choices(WEIGHT_DTYPES))
    .option('--context <tokens>', "context length each session may reach (default: the model's)", int(1))
    .option('--sessions <n>', 'concurrent sessions whose KV cache must fit', int(1), 1)
    .option('--json', 'print the plan as JSON')
    .action(async (o: { model: string; memory: number; dtype?: WeightDType; context?: number; sessions: number; json?: boolean }) => {
      let config: LlamaConfig
      let dtype: WeightDType
      const isDir = await stat(o.model).then(
        (s) => s.isDirectory(),
        () => false
      )
      if (isDir) {
        const m = await readManifest(o.model)
        config = m.config
        dtype = o.dtype ?? m.dtype
      } else {
        config = preset(o.model)
        dtype = o.dtype ?? 'int4'
      }
      const plan = planMemory(config, { dtype, budget: o.memory, context: o.context, sessions: o.sessions })
      if (o.json === true) console.log(JSON.stringify({ model: o.model, dtype, budget: o.memory, ...plan }))
      else console.log(describePlan({ name: o.model, config, dtype, budget: o.memory, context: o.context ?? config.maxSeqLen, sessions: o.sessions }, plan))
    })
}

/**
 * "68.98 B", "30.41 M", "239.17 K (239,168)": the scale that fits, since a tiny model's count in
 * billions reads 0.00. The exact count is added below a million, where the rounding shows.
 */
export function formatCount(n: number): string {
  for (const [unit, scale] of [
    ['B', 1e9],
    ['M', 1e6]
  ] as const)
    if (n >= scale) return `${(n / scale).toFixed(2)} ${unit}`
  return n >= 1e3 ? `${(n / 1e3).toFixed(2)} K (${n.toLocaleString('en-US')})` : String(n)
}

/** What a plan was made for. */
export interface PlanInput {
  name: string
  config: LlamaConfig
  dtype: WeightDType
  budget: number
  context: number
  sessions: number
}

export function describePlan({ name, config: c, dtype, budget, context, sessions }: PlanInput, p: MemoryPlan): string {
  const params = formatCount(paramCount(c))
  const nodes = Number.isFinite(p.shardsForModel) ? `${p.shardsForModel} node(s) like this one` : 'not even one layer fits here'
  return [
    `${name}: ${params} parameters, ${c.nLayers} layers, dim ${c.dim}, ${c.nHeads} heads / ${c.nKvHeads} kv heads`,
    `budget ${fmt(budget)}, reserve ${fmt(p.reserve)} (runtime, CUDA context, activations) → usable ${fmt(p.usable)}`,
    `per layer: weights ${fmt(p.weightsPerLayer)} (${dtype}) + KV cache ${fmt(p.kvPerLayer)} (${sessions} session(s) × ${context} tokens) ` +
      `= ${fmt(p.perLayer)}`,
    `fits ${p.layers} of ${c.nLayers} layers per node; the first shard also needs ${fmt(p.embedding)} for the embedding, ` +
      `the last ${fmt(p.classifier)} for the classifier`,
    `the whole model needs ${fmt(p.wholeModel)}: ${nodes}`
  ].join('\n')
}
