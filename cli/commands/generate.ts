/**
 * `tessera generate` — tokens from a model: every shard in this process, or through the network
 * with --relay (this process is then a client of the relay's peers, with a verification mode).
 */
import type { Command } from 'commander'
import { Option } from 'commander'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Pipeline, generate } from '../../shared/pipeline.js'
import { loadTokenizer, type Tokenizer } from '../../shared/tokenizer.js'
import { logger, setQuiet } from '../../shared/log.js'
import { InputError } from '../../shared/errors.js'
import { loadModel } from '../../native-node/store.js'
import type { DevicePreference } from '../../native-node/ort.js'
import { float, int, intList } from './options.js'
import { createPeer } from '../../host/libp2p.js'
import { createClient, normalizeVerification } from '../../shared/client/client.js'
import { httpLedgerLink } from '../../shared/client/ledger-link.js'
import { httpClaimSink } from '../../shared/optimistic/claim-sink.js'
import type { VerificationMode } from '../../shared/client/types.js'
import { libp2pDialer, relayDirectory } from '../../shared/route/directory.js'
import { RELAY_PORTS } from '../../relay/config.js'
import { GENERATE_DEFAULTS } from '../config.js'

const log = logger('tessera:node:generate')

interface GenerateFlags {
  model?: string
  relay?: string
  prompt?: string
  promptIds?: number[]
  maxTokens: number
  temperature: number
  topP: number
  seed: number
  json?: boolean
  stopAtEos?: boolean
  device: DevicePreference
  verification: VerificationMode
  k?: number
  p?: number
  window?: number
  ledgerApi?: string
}

export function registerGenerate(program: Command): void {
  program
    .command('generate')
    .description('generate tokens with every shard of a model in this process')
    .option('--model <dir|name>', 'a built model directory; with --relay, a model name or root on the network (default: the one fully served)')
    .option('--relay <multiaddr>', 'run through the network instead of in this process')
    .option('--prompt <text>', "prompt text (needs the model's tokenizer.json)")
    .option('--prompt-ids <ids>', 'prompt as token ids, e.g. 1,403,407', intList)
    .option('--max-tokens <n>', 'tokens to generate', int(1), GENERATE_DEFAULTS.maxTokens)
    .option('--temperature <t>', '0 = greedy', float, GENERATE_DEFAULTS.temperature)
    .option('--top-p <p>', 'nucleus sampling mass', float, GENERATE_DEFAULTS.topP)
    .option('--seed <s>', 'sampling seed', int(0), GENERATE_DEFAULTS.seed)
    .option('--stop-at-eos', 'stop when the model emits its end-of-sequence id')
    .option('--json', 'print one JSON object ({ tokens, ... }) instead of streaming')
    .addOption(new Option('--device <device>', 'execution provider').choices(['auto', 'cuda', 'cpu']).default('auto'))
    .addOption(
      new Option('--verification <mode>', "with --relay: how peers' results are checked (optimistic needs --ledger-api)")
        .choices(['none', 'redundant', 'spot', 'optimistic'])
        .default('none')
    )
    .option('--window <ms>', 'optimistic: how long the result may be challenged', int(100))
    .option('--k <n>', 'redundant: peers per hop', int(2))
    .option('--p <p>', 'spot: chance that a step of a hop is re-run elsewhere', float)
    .option(
      '--ledger-api <url>',
      "with --relay: the relay's HTTP address, for reputations, to report cheaters and to post optimistic claims " +
        `(e.g. http://127.0.0.1:${RELAY_PORTS.http})`
    )
    .action(async (o: GenerateFlags) => {
      if ((o.prompt === undefined) === (o.promptIds === undefined)) throw new InputError('give exactly one of --prompt and --prompt-ids')
      if (o.json === true) setQuiet(true)
      if (o.relay !== undefined) {
        await generateRemote(o)
        return
      }
      if (o.verification !== 'none') throw new InputError('--verification checks peers: it needs --relay (a local generation has nobody to check)')
      if (o.model === undefined) throw new InputError('give --model DIR (or --relay ADDR to use the network)')
      const model = o.model
      const started = performance.now()
      const { manifest, runners } = await loadModel(model, { device: o.device })
      const loadMs = performance.now() - started

      let tokenizer: Tokenizer | undefined
      if (manifest.tokenizer !== null) tokenizer = loadTokenizer(await readFile(join(model, manifest.tokenizer.name), 'utf8'))
      if (o.promptIds === undefined && tokenizer === undefined) throw new InputError(`model ${manifest.name} has no tokenizer: give the prompt as --prompt-ids`)
      const prompt: number[] = o.promptIds ?? tokenizer!.encode(o.prompt!)
      const eos = tokenizer?.eosId ?? manifest.config.eosId
      const stopIds = o.stopAtEos === true && eos !== undefined ? [eos] : undefined

      const pipeline = new Pipeline(runners.map((r) => r.open()))
      const tokens: number[] = []
      let shown = ''
      const genStart = performance.now()
      let firstTokenMs = 0
      for await (const t of generate(pipeline, { prompt, maxTokens: o.maxTokens, temperature: o.temperature, topP: o.topP, seed: o.seed, stopIds })) {
        if (tokens.length === 0) firstTokenMs = performance.now() - genStart
        tokens.push(t.id)
        if (o.json === true) continue
        if (tokenizer === undefined) {
          process.stdout.write(`${t.id} `)
        } else {
          // Decode the whole text so far and print what is new: tokens alone lose the spaces
          // and split multi-byte characters.
          const text = tokenizer.decode(tokens)
          if (!text.endsWith('\uFFFD')) {
            process.stdout.write(text.slice(shown.length))
            shown = text
          }
        }
      }
      const totalMs = performance.now() - genStart
      pipeline.close()
      await Promise.all(runners.map(async (r) => await r.dispose()))
      const decodeRate = tokens.length > 1 ? (tokens.length - 1) / ((totalMs - firstTokenMs) / 1000) : 0
      if (o.json === true) {
        console.log(
          JSON.stringify({
            model: manifest.name,
            root: manifest.root,
            prompt,
            tokens,
            text: tokenizer?.decode(tokens),
            device: runners[0].device,
            timings: { loadMs: round(loadMs), prefillMs: round(firstTokenMs), totalMs: round(totalMs), decodeTokensPerSecond: round(decodeRate) }
          })
        )
      } else {
        process.stdout.write('\n')
        log.info(`${tokens.length} tokens, prefill ${firstTokenMs.toFixed(1)} ms, ${decodeRate.toFixed(1)} tokens/s on ${runners[0].device}`)
      }
    })
}

const round = (v: number): number => Math.round(v * 100) / 100

/** The same generation through the network: this process is a client of the relay's peers. */
async function generateRemote(o: GenerateFlags): Promise<void> {
  if (o.promptIds === undefined) throw new InputError("through --relay, give the prompt as --prompt-ids (text needs the model's tokenizer locally)")
  const node = await createPeer({ listen: [] })
  try {
    const ledger = o.ledgerApi === undefined ? undefined : httpLedgerLink(o.ledgerApi, node.peerId.toString())
    await ledger?.refresh()
    const board = o.ledgerApi === undefined ? undefined : httpClaimSink(o.ledgerApi)
    const verification = normalizeVerification({ mode: o.verification, k: o.k, p: o.p, window: o.window })
    const client = createClient({ dialer: libp2pDialer(node), directory: relayDirectory(node, o.relay!), ledger, board, verification })
    // Records carry no tokenizer metadata yet: Llama's EOS id (2) stands in.
    const stopIds = o.stopAtEos === true ? [2] : undefined
    const gen = client.generate({
      prompt: o.promptIds,
      maxTokens: o.maxTokens,
      temperature: o.temperature,
      topP: o.topP,
      seed: o.seed,
      stopIds,
      model: o.model
    })
    let r = await gen.next()
    while (r.done !== true) {
      if (o.json !== true) process.stdout.write(`${r.value.id} `)
      r = await gen.next()
    }
    const { settlement, ...result } = r.value
    if (o.json !== true) {
      process.stdout.write('\n')
      const route = result.route.hops.map((h) => `${h.peer.slice(-8)}[${h.layers.join(',')})`).join(' → ')
      const { firstTokenMs, totalMs } = result.timings
      log.info(`${result.tokens.length} tokens via ${route}; first token ${firstTokenMs.toFixed(0)} ms, total ${totalMs.toFixed(0)} ms`)
      const v = result.verification
      if (v.mode !== 'none' && v.mode !== 'optimistic') {
        const caught = v.faults
          .map((f) => `; ${f.accused.slice(-8)} caught on [${f.layers.join(',')}) (${f.slashed ? `slashed ${f.amount}` : f.reason})`)
          .join('')
        log.info(`verification ${v.mode}: ${v.checks} hop-steps compared, ${v.mismatches} disagreed${caught}`)
      }
      if (settlement !== undefined) log.info(`optimistic: claim ${result.verification.claim} pending for up to ${result.verification.window} ms…`)
    }
    const settled = await settlement
    if (settled !== undefined && o.json !== true) {
      const corrected = settled.tokens !== undefined ? `; corrected tokens: ${settled.tokens.join(' ')}` : ''
      log.info(`claim ${settled.claim} ${settled.status} after ${settled.afterMs.toFixed(0)} ms${corrected}`)
    }
    if (o.json === true) console.log(JSON.stringify(settled === undefined ? result : { ...result, settlement: settled }))
  } finally {
    await node.stop()
  }
}
