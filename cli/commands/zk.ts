/**
 * `tessera zk setup` — compile a seeded model's circuit and run (or reuse) its trusted setup,
 * with a progress bar per stage; prints constraints, times and where the files are, and can
 * write the manifest entry. `tessera zk prove` — prove one inference and verify it.
 */
import type { Command } from 'commander'
import { InvalidArgumentError, Option } from 'commander'
import cliProgress from 'cli-progress'
import { writeFile } from 'node:fs/promises'
import { dirname, relative } from 'node:path'
import { InputError } from '../../shared/errors.js'
import { logger } from '../../shared/log.js'
import { ZK_MODELS, randomInputs } from '../../shared/zk/model.js'
import { dequantizeOutput, quantizeInput } from '../../shared/zk/quantize.js'
import { releaseZkWorkers, verifyZkProof } from '../../shared/zk/verify.js'
import { DEFAULT_CACHE } from '../../host/zk/cache.js'
import { STAGE_STARTS, type ProgressFn } from '../../host/zk/progress.js'
import { seededZkModel, setupZkModel, type ZkSetup } from '../../host/zk/setup.js'
import { int } from './options.js'

const log = logger('tessera:node:zk')

interface ModelOptions {
  model: string
  seed: number
  committed?: boolean
  cache?: string
  ptau?: string
}

function modelOptions(cmd: Command): Command {
  // tiny by default: its first set-up takes ~1 min, small's ~20 (cached after, in either case).
  return cmd
    .addOption(
      new Option('--model <name>', 'seeded model: tiny (set-up ~1 min) or small (~20 min on 2 cores the first time)')
        .choices(Object.keys(ZK_MODELS))
        .default('tiny')
    )
    .option('--seed <n>', "seed of the model's weights", int(0), 0)
    .option('--committed', 'make only a Poseidon hash of the input public, not the input')
    .option('--cache <dir>', 'cache folder inside the checkout (default .cache/zk)')
    .option('--ptau <file>', 'a prepared powers-of-tau file to use instead of a local ceremony')
}

export function registerZk(program: Command): void {
  const zk = program.command('zk').description('zero-knowledge proofs of small quantized models (circom + Groth16)')

  modelOptions(zk.command('setup'))
    .description("compile the model's circuit and run (or reuse) its trusted setup")
    .option('--out <file>', 'write the manifest entry (ZkModelEntry JSON) here')
    .action(async (o: ModelOptions & { out?: string }) => {
      try {
        const s = await setup(o)
        const shapes = s.entry.shape.layers.map((l) => `${l.inputs}→${l.outputs}${l.relu ? ' ReLU' : ''}`).join(', ')
        log.info(`${s.entry.name} (${shapes}; input ${s.entry.shape.input}): ${s.circuit.constraints} constraints, powers of tau 2^${s.keys.power}`)
        const ptau = s.keys.reused || s.keys.ptauMs === 0 ? 'cached' : secs(s.keys.ptauMs)
        const compile = s.circuit.reused ? 'cached' : secs(s.circuit.compileMs)
        log.info(`compile ${compile}, powers of tau ${ptau}, Groth16 keys ${s.keys.reused ? 'cached' : secs(s.keys.zkeyMs)}`)
        log.info(`circuit and keys in ${dirname(s.keys.zkey)} (circuit ${s.circuit.hash.slice(0, 16)}…)`)
        log.info(`weight commitment ${s.entry.weightCommitment}`)
        if (o.out !== undefined) {
          await writeFile(o.out, JSON.stringify(s.entry, null, 2) + '\n')
          log.info(`wrote the manifest entry to ${o.out}`)
        }
      } finally {
        await releaseZkWorkers()
      }
    })

  modelOptions(zk.command('prove'))
    .description('prove one inference of the model and verify the proof')
    .option('--input <values>', 'comma-separated float input (default: a seeded random one)', floats)
    .option('--input-seed <n>', 'seed of the random input', int(0), 1)
    .option('--proof-out <file>', 'write { proof, publicSignals } here')
    .action(async (o: ModelOptions & { input?: number[]; inputSeed: number; proofOut?: string }) => {
      try {
        const s = await setup(o)
        const width = s.entry.shape.layers[0].inputs
        if (o.input !== undefined && o.input.length !== width) throw new InputError(`--input needs ${width} values for model ${o.model}, got ${o.input.length}`)
        const x = quantizeInput(s.model.quant, o.input !== undefined ? Float32Array.from(o.input) : randomInputs(width, 1, o.inputSeed)[0])
        const r = await (await s.prover()).prove(x)
        const t = performance.now()
        await verifyZkProof(s.entry, r, { input: x })
        const verifyMs = performance.now() - t
        const y = dequantizeOutput(s.model.quant, r.statement.output)
        console.log(`output ${Array.from(y, (v) => v.toFixed(3)).join(' ')} (argmax ${y.indexOf(Math.max(...y))})`)
        const times = `witness ${r.witnessMs.toFixed(0)} ms, proof ${r.proveMs.toFixed(0)} ms, verified in ${verifyMs.toFixed(1)} ms`
        console.log(`${times}; proof ${JSON.stringify(r.proof).length} bytes as JSON`)
        if (o.proofOut !== undefined) {
          await writeFile(o.proofOut, JSON.stringify({ proof: r.proof, publicSignals: r.publicSignals }) + '\n')
          log.info(`wrote the proof to ${o.proofOut}`)
        }
      } finally {
        await releaseZkWorkers()
      }
    })
}

/** Setup with one progress bar per stage on stderr (each finished stage stays as a line). */
async function setup(o: ModelOptions): Promise<ZkSetup> {
  const options = { format: '{label} {bar} {percentage}%', stream: process.stderr, hideCursor: true, clearOnComplete: true }
  const bar = new cliProgress.SingleBar(options, cliProgress.Presets.shades_classic)
  const progress: ProgressFn = (p) => {
    if (p.fraction === 0) {
      // A line per start: the bar is drawn only on a terminal, and some stages never move it.
      log.info(`… ${STAGE_STARTS[p.stage]}`)
      bar.start(1000, 0, { label: p.label })
    } else bar.update(Math.round(p.fraction * 1000))
    if (p.ms !== undefined) {
      bar.stop()
      log.info(`${p.label}: ${secs(p.ms)}`)
    }
  }
  if (o.model === 'small') {
    const cache = relative(process.cwd(), o.cache ?? DEFAULT_CACHE) || '.'
    log.info(`model small: its first set-up takes ~20 minutes on 2 cores (then it is cached in ${cache}); --model tiny takes ~1 min`)
  }
  try {
    const model = seededZkModel(o.model, { seed: o.seed, input: o.committed === true ? 'committed' : 'public' })
    return await setupZkModel(model, { cacheDir: o.cache, ptau: o.ptau, progress })
  } finally {
    bar.stop()
  }
}

const secs = (ms: number): string => `${(ms / 1000).toFixed(1)} s`

function floats(v: string): number[] {
  const xs = v.split(',').map((s) => Number(s.trim()))
  if (xs.length === 0 || xs.some((n) => !Number.isFinite(n))) throw new InvalidArgumentError('expected comma-separated numbers, e.g. 0.5,-1,2')
  return xs
}
