import type { Command } from 'commander'
import { access } from 'node:fs/promises'
import { join } from 'node:path'
import { logger } from '../../shared/log.js'
import { MANIFEST_FILE } from '../../shared/manifest.js'
import { Pipeline, generate } from '../../shared/pipeline.js'
import { buildModel, loadModel } from '../store.js'
import { openSource } from '../source.js'

const log = logger('tessera:up')

/** The embedded default: a seeded random model, so a fresh machine needs nothing else. */
export const DEFAULT_MODEL = { from: 'random:tiny:1', dir: join('models', 'tiny-seed1'), shards: 2 }

export function registerUp (program: Command): void {
  program.command('up')
    .description('build the default model if missing and run a streamed demo generation')
    .option('--model <dir>', 'model directory', DEFAULT_MODEL.dir)
    .action(async (o: { model: string }) => {
      const exists = await access(join(o.model, MANIFEST_FILE)).then(() => true, () => false)
      if (!exists) {
        log.info(`building the default model (${DEFAULT_MODEL.from}, ${DEFAULT_MODEL.shards} shards) into ${o.model}`)
        const src = await openSource(DEFAULT_MODEL.from)
        await buildModel(src.weights, o.model, { source: DEFAULT_MODEL.from, name: src.name, shards: DEFAULT_MODEL.shards })
      }
      const { manifest, runners } = await loadModel(o.model)
      log.info(`model ${manifest.name} (root ${manifest.root.slice(0, 16)}…), ${runners.length} shard(s) on ${runners[0].device}`)
      const pipeline = new Pipeline(runners.map((r) => r.open()))
      const prompt = [manifest.config.bosId ?? 1]
      process.stdout.write(`prompt ids ${prompt.join(',')} → `)
      for await (const t of generate(pipeline, { prompt, maxTokens: 32 })) process.stdout.write(`${t.id} `)
      process.stdout.write('\n')
      pipeline.close()
    })
}
