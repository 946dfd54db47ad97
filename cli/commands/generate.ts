/**
 * `tessera generate` — tokens from a model: every shard in this process, or through the network
 * with --relay (this process is then a client of the relay's peers, with a verification mode).
 */
import type { Command } from 'commander'
import { Option } from 'commander'
import { Pipeline, generate } from '../../shared/pipeline.js'
import type { Manifest } from '../../shared/manifest.js'
import type { ModelText } from '../../shared/text/model-text.js'
import { TextStream } from '../../shared/text/stream.js'
import { fetchModelText } from '../../shared/text/fetch.js'
import { readModelText } from '../../host/model-store.js'
import { logger, setQuiet } from '../../shared/log.js'
import { InputError } from '../../shared/errors.js'
import { loadModel } from '../../native-node/store.js'
import type { DevicePreference } from '../../native-node/ort.js'
import { float, int, intList, repeated } from './options.js'
import { createPeer } from '../../host/libp2p.js'
import { createClient, normalizeVerification } from '../../shared/client/client.js'
import { httpLedgerLink } from '../../shared/client/ledger-link.js'
import { httpClaimSink } from '../../shared/optimistic/claim-sink.js'
import type { VerificationMode } from '../../shared/client/types.js'
import { libp2pDialer, relayDirectory } from '../../shared/route/directory.js'
import { modelDraft } from '../../shared/client/draft.js'
import { RELAY_PORTS } from '../../relay/config.js'
import { GENERATE_DEFAULTS } from '../config.js'

const log = logger('tessera:node:generate')

interface GenerateFlags {
  model?: string
  relay?: string[]
  prompt?: string
  promptIds?: number[]
  maxTokens: number
  temperature: number
  topP: number
  seed: number
  json?: boolean
  stopAtEos?: boolean
  stop?: string[]
  device: DevicePreference
  verification: VerificationMode
  k?: number
  p?: number
  window?: number
  ledgerApi?: string
  draft?: string
  speculate?: number
  forward?: boolean
}

export function registerGenerate(program: Command): void {
  program
    .command('generate')
    .description('generate tokens with every shard of a model in this process')
    .option('--model <dir|name>', 'a built model directory; with --relay, a model name or root on the network (default: the one fully served)')
    .option(
      '--relay <multiaddr>',
      'run through the network instead of in this process; give it again for more relays of one federation (the next is tried when one fails)',
      repeated
    )
    .option('--prompt <text>', "prompt text (needs the model's tokenizer.json; with --relay, also --ledger-api to fetch it)")
    .option('--prompt-ids <ids>', 'prompt as token ids, e.g. 1,403,407', intList)
    .option('--max-tokens <n>', 'tokens to generate', int(1), GENERATE_DEFAULTS.maxTokens)
    .option('--temperature <t>', '0 = greedy', float, GENERATE_DEFAULTS.temperature)
    .option('--top-p <p>', 'nucleus sampling mass', float, GENERATE_DEFAULTS.topP)
    .option('--seed <s>', 'sampling seed', int(0), GENERATE_DEFAULTS.seed)
    .option('--stop-at-eos', 'stop when the model emits one of its end-of-sequence ids')
    .option('--stop <text...>', 'stop before any of these strings (needs the tokenizer)')
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
      '--draft <dir>',
      'with --relay: speculative decoding, this built model in this process drafting (the same tokenizer: e.g. an int4 build of the model)'
    )
    .option('--speculate <n>', 'with --draft: tokens drafted per pass (γ)', int(1), 4)
    .option('--forward', 'with --relay: each hop hands its output straight to the next (node to node); the client still checks every hop')
    .option(
      '--ledger-api <url>',
      "with --relay: the relay's HTTP address, for the model's tokenizer, reputations, to report cheaters and to post optimistic claims " +
        `(e.g. http://127.0.0.1:${RELAY_PORTS.http})`
    )
    .action(async (o: GenerateFlags) => {
      if ((o.prompt === undefined) === (o.promptIds === undefined)) throw new InputError('give exactly one of --prompt and --prompt-ids')
      if (o.json === true) setQuiet(true)
      // Checked before dialing: otherwise the client fails deep inside with no flag named.
      if (o.relay !== undefined && o.verification === 'optimistic' && o.ledgerApi === undefined) {
        throw new InputError("--verification optimistic needs --ledger-api URL (the relay's HTTP address): claims are posted to its board")
      }
      if (o.relay !== undefined) {
        await generateRemote(o)
        return
      }
      if (o.draft !== undefined)
        throw new InputError('--draft speculates across the network: it needs --relay (in one process there are no round trips to save)')
      if (o.forward === true) throw new InputError('--forward hands hops to each other across the network: it needs --relay')
      if (o.verification !== 'none') throw new InputError('--verification checks peers: it needs --relay (a local generation has nobody to check)')
      if (o.model === undefined) throw new InputError('give --model DIR (or --relay ADDR to use the network)')
      const model = o.model
      const started = performance.now()
      const { manifest, runners } = await loadModel(model, { device: o.device })
      const loadMs = performance.now() - started

      const text = await readModelText(model, manifest)
      const prompt = promptIds(o, text, manifest)
      const stopIds = o.stopAtEos === true ? eosIds(text, manifest) : undefined
      const out = text?.stream(o.stop) ?? new TextStream(undefined, o.stop)

      const pipeline = new Pipeline(runners.map((r) => r.open()))
      const tokens: number[] = []
      const genStart = performance.now()
      let firstTokenMs = 0
      for await (const t of generate(pipeline, { prompt, maxTokens: o.maxTokens, temperature: o.temperature, topP: o.topP, seed: o.seed, stopIds })) {
        if (tokens.length === 0) firstTokenMs = performance.now() - genStart
        tokens.push(t.id)
        const delta = out.push(t.id)
        if (o.json !== true) process.stdout.write(delta)
        if (out.stopped) break
      }
      const rest = out.end()
      if (o.json !== true) process.stdout.write(rest)
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
            text: text === undefined ? undefined : out.text,
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
  if (o.promptIds === undefined && o.ledgerApi === undefined) {
    throw new InputError("through --relay, a text --prompt needs the model's tokenizer: give --ledger-api (the relay's HTTP address), or --prompt-ids")
  }
  // The tokenizer and chat template come from the relay, each file checked against the model's manifest.
  const fetched = o.ledgerApi === undefined ? undefined : await fetchModelText(o.ledgerApi, o.model)
  const text = fetched?.text
  const prompt = promptIds(o, text, fetched?.manifest)
  const out = text?.stream(o.stop) ?? new TextStream(undefined, o.stop)
  // The draft runs here, beside the sampler: loaded whole, on this machine's runtime.
  const drafted = o.draft === undefined ? undefined : await loadModel(o.draft, { device: o.device })
  const draft = drafted === undefined ? undefined : modelDraft(drafted.runners)
  const node = await createPeer({ listen: [] })
  try {
    const ledger = o.ledgerApi === undefined ? undefined : httpLedgerLink(o.ledgerApi, node.peerId.toString())
    await ledger?.refresh()
    const board = o.ledgerApi === undefined ? undefined : httpClaimSink(o.ledgerApi)
    const verification = normalizeVerification({ mode: o.verification, k: o.k, p: o.p, window: o.window })
    const client = createClient({
      dialer: libp2pDialer(node),
      directory: relayDirectory(node, o.relay!),
      ledger,
      board,
      verification,
      ...(draft !== undefined ? { draft } : {})
    })
    // Without the manifest, Llama's EOS id (2) stands in.
    const stopIds = o.stopAtEos === true ? (fetched === undefined ? [2] : eosIds(text, fetched.manifest)) : undefined
    const gen = client.generate({
      prompt,
      until: () => out.stopped,
      maxTokens: o.maxTokens,
      temperature: o.temperature,
      topP: o.topP,
      seed: o.seed,
      stopIds,
      model: o.model,
      ...(draft !== undefined ? { speculate: { gamma: o.speculate ?? 4 } } : {}),
      ...(o.forward === true ? { forward: true } : {})
    })
    let r = await gen.next()
    while (r.done !== true) {
      const delta = out.push(r.value.id)
      if (o.json !== true) process.stdout.write(delta)
      r = await gen.next()
    }
    const rest = out.end()
    const { settlement, ...result } = r.value
    if (o.json !== true) {
      process.stdout.write(`${rest}\n`)
      const route = result.route.hops.map((h) => `${h.peer.slice(-8)}[${h.layers.join(',')})`).join(' → ')
      const { firstTokenMs, totalMs } = result.timings
      log.info(`${result.tokens.length} tokens via ${route}; first token ${firstTokenMs.toFixed(0)} ms, total ${totalMs.toFixed(0)} ms`)
      const sp = result.speculation
      if (sp !== undefined) log.info(`speculative, γ ${sp.gamma}: ${sp.kept} of ${sp.drafted} drafts kept over ${sp.passes} passes`)
      const fw = result.forwarded
      if (fw !== undefined) log.info(`forwarded node to node: ${fw.steps} steps, ${fw.dropped} of them went on through the client part of the way`)
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
    const shown = text === undefined ? result : { ...result, text: out.text }
    if (o.json === true) console.log(JSON.stringify(settled === undefined ? shown : { ...shown, settlement: settled }))
  } finally {
    draft?.close()
    for (const r of drafted?.runners ?? []) await r.dispose()
    await node.stop()
  }
}

/** The prompt as ids: --prompt-ids as given, or --prompt through the model's tokenizer. */
function promptIds(o: GenerateFlags, text: ModelText | undefined, manifest: Manifest | undefined): number[] {
  if (o.promptIds !== undefined) return o.promptIds
  if (text === undefined) throw new InputError(`model ${manifest?.name ?? ''} has no tokenizer: give the prompt as --prompt-ids`)
  return text.encode(o.prompt!)
}

/** What --stop-at-eos stops on: the tokenizer's EOS and every EOS of the model's config. */
function eosIds(text: ModelText | undefined, manifest: Manifest): number[] | undefined {
  const ids = text?.eosIds ?? (manifest.config.eosId !== undefined ? [manifest.config.eosId] : [])
  return ids.length > 0 ? ids : undefined
}
