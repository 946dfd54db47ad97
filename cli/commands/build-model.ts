import type { Command } from 'commander'
import { Option } from 'commander'
import cliProgress from 'cli-progress'
import { kvLayout, WEIGHT_DTYPES, type KvLayout, type WeightDType } from '../../shared/shard/build.js'
import { splitLayers } from '../../shared/shard/split.js'
import { logger } from '../../shared/log.js'
import { ConfigError } from '../../shared/errors.js'
import { openSource } from '../../host/source.js'
import { layerTensors } from '../../shared/model/weights.js'
import { buildModel } from '../../host/model-store.js'
import { int, intList } from './options.js'
import { access } from 'node:fs/promises'
import { join } from 'node:path'

const log = logger('tessera:node:build')

export function registerBuildModel(program: Command): void {
  program
    .command('build-model')
    .description('cut a checkpoint into ONNX shards (runs of transformer blocks) with a manifest')
    .requiredOption(
      '--from <source>',
      'GGUF file (llama.cpp or an Ollama blob; llama/mistral/qwen2, F32/F16/BF16/Q8_0/Q4_0/Q4_K/Q6_K, dequantized: re-pack with --dtype int4|fp16), llama2.c .bin file, Hugging Face directory, or random:PRESET[:SEED] (tiny, tiny-llama3, small, medium)'
    )
    .requiredOption('--out <dir>', 'directory to write the shards and manifest.json into')
    .option('--shards <n>', 'number of shards of (nearly) equal size', int(1))
    .option('--layers-per-shard <k>', 'layers per shard (the last may hold fewer)', int(1))
    .option('--cuts <list>', 'explicit layer boundaries, e.g. 2,3 cuts 5 layers into [0,2) [2,3) [3,5)', intList)
    .addOption(new Option('--dtype <dtype>', 'weight precision').choices(WEIGHT_DTYPES).default('fp32'))
    .addOption(
      new Option(
        '--kv <layout>',
        'KV cache: append (a buffer the runtime owns, read in place, new rows appended), gqa (GroupQueryAttention; head size a multiple of 8; tabs run it on WASM) or concat (the cache copied in and out each step)'
      )
        .choices(['append', 'gqa', 'concat'])
        .default('append')
    )
    .option('--name <name>', 'model name in the manifest')
    .option('--max-seq-len <n>', 'Hugging Face or GGUF source: cap the context (each shard holds RoPE tables for every position)', int(1))
    .option(
      '--tokenizer <dir>',
      "a directory with the model's tokenizer.json (and tokenizer_config.json): for a llama2.c checkpoint, or to replace the source's"
    )
    .action(
      async (o: {
        from: string
        out: string
        shards?: number
        layersPerShard?: number
        cuts?: number[]
        dtype: WeightDType
        kv?: KvLayout
        name?: string
        tokenizer?: string
        maxSeqLen?: number
      }) => {
        const given = [o.shards, o.layersPerShard, o.cuts].filter((v) => v !== undefined).length
        if (given > 1) throw new ConfigError('give only one of --shards, --layers-per-shard and --cuts')
        const src = await openSource(o.from, { maxSeqLen: o.maxSeqLen })
        const c = src.weights.config
        const ranges = splitLayers(c.nLayers, o)
        const cuts = ranges.map(([a, b]) => `[${a},${b})`).join(' ')
        log.info(
          `${src.name}: dim ${c.dim}, ${c.nLayers} layers, vocab ${c.vocabSize} → ${ranges.length} ${o.dtype} shard(s): ${cuts} (KV cache ${kvLayout(o.kv)})`
        )

        const perShard = ranges.map(([a, b]) => (b - a) * layerTensors(c).length + (a === 0 ? 1 : 0) + (b === c.nLayers ? 2 : 0))
        const format = 'building {bar} {percentage}% | {value}/{total} tensors | {tensor}'
        const bar = new cliProgress.SingleBar({ format, stream: process.stderr, hideCursor: true }, cliProgress.Presets.shades_classic)
        bar.start(
          perShard.reduce((a, b) => a + b, 0),
          0,
          { tensor: '' }
        )
        const started = performance.now()
        const manifest = await buildModel(src.weights, o.out, {
          ...o,
          name: o.name ?? src.name,
          source: o.from,
          ...(o.tokenizer !== undefined ? await tokenizerDir(o.tokenizer) : { tokenizer: src.tokenizer, tokenizerConfig: src.tokenizerConfig }),
          progress: (shard, done, _total, tensor) => bar.update(perShard.slice(0, shard).reduce((a, b) => a + b, 0) + done, { tensor })
        }).finally(async () => await src.dispose?.())
        bar.stop()
        const mb = manifest.shards.reduce((a, s) => a + s.bytes, 0) / 2 ** 20
        log.info(`wrote ${manifest.shards.length} shard(s), ${mb.toFixed(1)} MiB, in ${((performance.now() - started) / 1000).toFixed(1)} s to ${o.out}`)
        log.info(`model root ${manifest.root}`)
      }
    )
}

/** --tokenizer DIR: its tokenizer.json, and its tokenizer_config.json when there is one. */
async function tokenizerDir(dir: string): Promise<{ tokenizer: string; tokenizerConfig?: string }> {
  const exists = async (f: string): Promise<boolean> =>
    await access(join(dir, f)).then(
      () => true,
      () => false
    )
  if (!(await exists('tokenizer.json'))) throw new ConfigError(`--tokenizer ${dir}: no tokenizer.json there`)
  return { tokenizer: join(dir, 'tokenizer.json'), ...((await exists('tokenizer_config.json')) ? { tokenizerConfig: join(dir, 'tokenizer_config.json') } : {}) }
}
