/**
 * `tessera up` — a whole network on this machine: the default model (built if missing), a relay,
 * native nodes as child processes, the pages and a demo generation, until Ctrl-C.
 */
import type { Command } from 'commander'
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { access } from 'node:fs/promises'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { logger } from '../../shared/log.js'
import { ModelFormatError, TesseraError } from '../../shared/errors.js'
import { MANIFEST_FILE, type Manifest } from '../../shared/manifest.js'
import { startRelay, type RunningRelay } from '../../relay/relay.js'
import { RELAY_DEFAULTS, RELAY_PORTS } from '../../relay/config.js'
import { UP_DEFAULTS, UP_RELAY_KEY, WEB_ROOT } from '../config.js'
import { ledgerOptions, type LedgerFlags } from './ledger-options.js'
import { buildModel, readManifest, readModelText } from '../../host/model-store.js'
import type { ModelText } from '../../shared/text/model-text.js'
import { TextStream } from '../../shared/text/stream.js'
import { openSource } from '../../host/source.js'
import { int } from './options.js'
import { untilSignal } from './lifecycle.js'
import { shardReexecutor } from '../../native-node/reexec.js'

const log = logger('tessera:up')

/** The embedded default: a seeded random model, so a fresh machine needs nothing else. */
export const DEFAULT_MODEL = UP_DEFAULTS.model
const BIN = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'tessera.js')

export function registerUp(program: Command): void {
  const cmd = program
    .command('up')
    .description('run a whole network here: relay, native nodes, pages and a demo generation')
    .option('--model <dir>', 'model directory (the default model is built there if missing)', DEFAULT_MODEL.dir)
    .option('--nodes <n>', 'native nodes to start', int(1), UP_DEFAULTS.nodes)
    .option('--relays <n>', 'relays to start, one federation: node i announces to relay i mod n, and every relay lists every node', int(1), 1)
    .option('--port <n>', 'HTTP port of the relay', int(0), RELAY_PORTS.http)
    .option('--p2p-port <n>', 'libp2p WebSocket port of the relay', int(0), RELAY_PORTS.p2p)
    .option('--key <file>', "the relay's libp2p identity (created if missing): the same relay address on every run", UP_RELAY_KEY)
    .option('--demo-tokens <n>', 'tokens of the demo generation (0 = none)', int(0), UP_DEFAULTS.demoTokens)
  // --ledger evm: a local anvil (state kept in .tessera/anvil-state.json) with TesseraStake deployed once.
  ledgerOptions(cmd, { deployment: false }).action(
    async (o: LedgerFlags & { model: string; nodes: number; relays: number; port: number; p2pPort: number; key: string; demoTokens: number }) => {
      if (
        !(await access(join(o.model, MANIFEST_FILE)).then(
          () => true,
          () => false
        ))
      ) {
        if (o.model !== DEFAULT_MODEL.dir) throw new ModelFormatError(`${o.model} holds no model; build one with tessera build-model --out ${o.model}`)
        log.info(`building the default model (${DEFAULT_MODEL.from}, ${DEFAULT_MODEL.shards} shards) into ${o.model}`)
        const src = await openSource(DEFAULT_MODEL.from)
        await buildModel(src.weights, o.model, {
          source: DEFAULT_MODEL.from,
          name: src.name,
          shards: DEFAULT_MODEL.shards,
          tokenizer: src.tokenizer,
          tokenizerConfig: src.tokenizerConfig
        })
      }
      const manifest = await readManifest(o.model)
      const text = await readModelText(o.model, manifest)
      // A federation shares one contract, each relay an arbiter with its own key (a majority's approvals slash).
      const chain = o.ledger === 'evm' ? await (await import('../../relay/chain/local.js')).startLocalChain({ arbiters: o.relays }) : undefined
      // The arbiter: a disputed hop is re-run over the relay's shards before anyone is slashed.
      const arbiter = shardReexecutor([{ dir: o.model, manifest }])
      const relays: RunningRelay[] = []
      const children: ChildProcess[] = []
      const stopAll = async (): Promise<void> => {
        for (const c of children) c.kill('SIGTERM')
        await Promise.all(children.map(exited))
        for (const r of relays) await r.stop()
        await arbiter.dispose()
        await chain?.anvil.stop()
      }
      try {
        // Relay 0 keeps the ports and the key (the address pages and scripts know); each later one federates with those before it.
        for (let i = 0; i < o.relays; i++) {
          relays.push(
            await startRelay({
              httpPort: i === 0 ? o.port : 0,
              p2pPort: i === 0 ? o.p2pPort : 0,
              models: [o.model],
              webRoot: WEB_ROOT,
              ledger: i === 0 ? o.ledgerFile : o.ledgerFile.replace(/(\.sqlite)?$/, `-${i}$1`),
              evm: chain?.configs[i],
              keyFile: i === 0 ? o.key : undefined,
              relays: relays.map((r) => r.nodeAddr),
              reexecute: arbiter.reexecute,
              requireInputs: arbiter.serves
            })
          )
        }
        const relay = relays[0]
        if (chain !== undefined) console.log(`ledger: TesseraStake ${chain.deployment.stakeAddress} on the local chain ${chain.anvil.url}`)
        const groups = assignLayers(manifest, o.nodes)
        await Promise.all(
          groups.map(async (layers, i) => {
            const { child, peer } = await spawnNode(relays[i % relays.length].nodeAddr, o.model, layers)
            children.push(child)
            // The relay grants no stake by itself; up's operator vouches for the nodes it starts, in every ledger (one, on a chain).
            for (const r of chain !== undefined ? [relay] : relays) {
              const s = await r.ledger.standing(peer)
              if (s.stake === 0 && s.slashed === 0) await r.ledger.stake(peer, RELAY_DEFAULTS.operatorStake)
            }
          })
        )
        if (relays.length > 1) console.log(`\n${relays.length} relays, one network: ${relays.map((r) => r.httpUrl).join('  ')}`)
        console.log(`\nTessera is up: ${relay.httpUrl}  (relay ${relay.addr})`)
        const body = text === undefined ? '{"prompt":[1],"max_tokens":16}' : '{"messages":[{"role":"user","content":"Hello!"}],"max_tokens":16}'
        console.log(`  try: curl ${relay.httpUrl}/v1/${text === undefined ? '' : 'chat/'}completions -H 'content-type: application/json' -d '${body}'\n`)
        if (o.demoTokens > 0) await demo(relay.client, manifest, text, o.demoTokens)
        console.log('Ctrl-C to stop.')
        await untilSignal()
      } finally {
        await stopAll()
      }
    }
  )
}

/** Contiguous runs of shards, one per node; nodes beyond the shard count choose for themselves. */
export function assignLayers(m: Manifest, nodes: number): Array<[number, number] | undefined> {
  const n = Math.min(nodes, m.shards.length)
  const out: Array<[number, number] | undefined> = []
  for (let i = 0; i < n; i++) {
    const group = m.shards.slice(Math.round((i * m.shards.length) / n), Math.round(((i + 1) * m.shards.length) / n))
    out.push([group[0].layers[0], group[group.length - 1].layers[1]])
  }
  for (let i = n; i < nodes; i++) out.push(undefined)
  return out
}

/** Resolves once `c` has exited (at once if it has already). */
async function exited(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return
  await new Promise((resolve) => c.once('exit', resolve))
}

/** Starts `tessera node` and resolves once it prints its ready line, with the peer id it names. */
async function spawnNode(relay: string, model: string, layers?: [number, number]): Promise<{ child: ChildProcess; peer: string }> {
  const args = [BIN, 'node', '--relay', relay, '--model', model, ...(layers !== undefined ? ['--layers', `${layers[0]}-${layers[1]}`] : [])]
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] })
  return await new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! })
    lines.on('line', (line) => {
      if (line.startsWith('{"ready":true')) resolve({ child, peer: (JSON.parse(line) as { peer: string }).peer })
    })
    // Its stderr is this process's: the reason is printed above.
    child.once('exit', (code) => reject(new TesseraError('INTERNAL', `tessera node exited with code ${code} before it was ready: see its error above`)))
  })
}

async function demo(client: Awaited<ReturnType<typeof startRelay>>['client'], m: Manifest, text: ModelText | undefined, maxTokens: number): Promise<void> {
  const prompt = text === undefined ? [m.config.bosId ?? 1] : text.encode(UP_DEFAULTS.demoPrompt)
  const out = text?.stream() ?? new TextStream(undefined)
  const random = m.source.startsWith('random:') ? ' (seeded random weights: the words are noise)' : ''
  process.stdout.write(`demo: ${m.name}${random}\n  ${text === undefined ? `prompt ids [${prompt.join(',')}] →` : UP_DEFAULTS.demoPrompt} `)
  const gen = client.generate({ prompt, maxTokens, ...(text !== undefined ? { stopIds: text.eosIds } : {}) })
  let r = await gen.next()
  while (r.done !== true) {
    process.stdout.write(out.push(r.value.id))
    r = await gen.next()
  }
  process.stdout.write(out.end())
  const route = r.value.route.hops.map((h) => `${h.peer.slice(-8)} [${h.layers.join(',')}) ${h.device}`).join(' → ')
  console.log(`\n  route: ${route}; first token ${r.value.timings.firstTokenMs.toFixed(0)} ms, total ${r.value.timings.totalMs.toFixed(0)} ms\n`)
}
