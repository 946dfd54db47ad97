/**
 * The relay: libp2p bootstrap + circuit relay + peer registry, and the HTTP server (pages,
 * shard files, OpenAI API, metrics) whose generations run through a client on the relay's own
 * libp2p node.
 */
import type { Libp2p } from '@libp2p/interface'
import { readFile, access, mkdir } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { createClient, DEFAULT_TIMEOUTS, type Client, type ClientConfig } from '../shared/client/client.js'
import { ClaimBoard } from '../shared/optimistic/board.js'
import { openSqliteClaims } from './claims-sqlite.js'
import { zkInfer } from '../shared/client/zk.js'
import type { ZkModelEntry } from '../shared/zk/types.js'
import type { SamplingSetup } from '../host/zk/setup.js'
import { libp2pDialer } from '../shared/route/directory.js'
import type { Manifest } from '../shared/manifest.js'
import { loadTokenizer, type Tokenizer } from '../shared/tokenizer.js'
import { ConfigError } from '../shared/errors.js'
import { logger } from '../shared/log.js'
import { createPeer } from '../host/libp2p.js'
import { readManifest } from '../host/model-store.js'
import { createRegistry, handleRegistry, type Registry } from './registry.js'
import { createHttpApp, serveHttp } from './http.js'
import { createMetricsRegistry } from './metrics.js'
import { openSqliteLedger } from './ledger-sqlite.js'
import { cachedLedgerLink } from '../shared/client/ledger-link.js'
import { receiptEvidenceChecker } from '../shared/verify/evidence.js'
import type { Ledger } from '../shared/ledger/types.js'
import type { EvmLedgerConfig } from './ledger-evm.js'

const log = logger('tessera:relay')

export interface RelayOptions {
  /** HTTP port (0 = any free one). */
  httpPort?: number
  /** libp2p WebSocket port (0 = any free one). */
  p2pPort?: number
  host?: string
  /** Model directories whose files the relay serves (and whose tokenizers it uses). */
  models?: string[]
  webRoot?: string
  client?: Partial<ClientConfig>
  /** SQLite file of the ledger (stakes, slashes, reputation, audit log) and of pending claims; created if missing. */
  ledger?: string
  /**
   * Settle on an EVM chain instead (relay/ledger-evm.ts): stakes, slashes and the audit log live in
   * the TesseraStake contract and are rebuilt from its events; the SQLite file keeps only claims.
   */
  evm?: EvmLedgerConfig
  /** Stake granted to a peer the first time it announces (the embedded ledger has no token to buy stake with). */
  joinStake?: number
  /** ZK models whose entries (verification key, weight commitment) the relay publishes and checks proofs against. */
  zk?: string[]
  /**
   * Set up the sampling circuit for each served model's vocabulary (cached in .cache/zk; minutes
   * the first time) so that requests may ask for tessera_prove_sampling.
   */
  proveSampling?: boolean
}

export const DEFAULT_LEDGER = join('.tessera', 'ledger.sqlite')
export const DEFAULT_JOIN_STAKE = 100

export interface RunningRelay {
  /** The multiaddr nodes and clients dial (WebSockets, /p2p/ included). */
  addr: string
  addrs: string[]
  httpUrl: string
  registry: Registry
  client: Client
  ledger: Ledger
  board: ClaimBoard
  libp2p: Libp2p
  stop: () => Promise<void>
}

export async function startRelay (o: RelayOptions = {}): Promise<RunningRelay> {
  const host = o.host ?? '127.0.0.1'
  const ledgerPath = o.ledger ?? DEFAULT_LEDGER
  await mkdir(dirname(ledgerPath), { recursive: true })
  // What can fail on bad configuration (a manifest, a ZK entry, a circuit set-up) runs before anything is started.
  const models: Array<{ dir: string, manifest: Manifest }> = []
  const tokenizers = new Map<string, Tokenizer>()
  for (const dir of o.models ?? []) {
    const manifest = await readManifest(dir)
    models.push({ dir, manifest })
    if (manifest.tokenizer !== null) {
      const tok = loadTokenizer(await readFile(join(dir, manifest.tokenizer.name), 'utf8'))
      tokenizers.set(manifest.name, tok)
      tokenizers.set(manifest.root, tok)
    }
  }
  const sampling = o.proveSampling === true ? await samplingSetups(models.map((m) => m.manifest.config.vocabSize)) : new Map<number, SamplingSetup>()
  const zkEntries = await zkEntriesOf(o.zk ?? [])
  // The checker asks the ledger whether a witness is blacklisted: bound once both exist.
  let ledgerRef: Ledger | undefined
  const checker = receiptEvidenceChecker({ mayWitness: async (p) => !(await ledgerRef!.isBlacklisted(p)), zkModels: (name) => zkEntries.get(name) })
  // viem loads only for a relay that settles on a chain.
  const ledger = ledgerRef = o.evm !== undefined
    ? await (await import('./ledger-evm.js')).openEvmLedger(o.evm, checker)
    : await openSqliteLedger(ledgerPath, checker)
  const node = await createPeer({ relayServer: true, listen: [`/ip4/${host}/tcp/${o.p2pPort ?? 0}/ws`, `/ip4/${host}/tcp/0`] })
  // The relay's own client reports what it sees straight into the ledger; the ledger re-checks the evidence all the same.
  const link = cachedLedgerLink({
    standings: async () => await ledger.standings(),
    slash: async (e) => await ledger.slash(e, node.peerId.toString()),
    observe: async (peer, ok) => await ledger.observe(peer, ok)
  })
  await link.refresh()
  const joinStake = o.joinStake ?? DEFAULT_JOIN_STAKE
  const registry = createRegistry({
    excluded: (peer) => link.excluded(peer),
    onJoin: (cap) => {
      void (async () => {
        const s = await ledger.standing(cap.peer)
        if (s.stake === 0 && s.slashed === 0 && joinStake > 0) await ledger.stake(cap.peer, joinStake)
      })().catch((err: Error) => { log.warn(`could not stake ${cap.peer}: ${err.message}`) })
    }
  })
  await handleRegistry(node, registry)
  const dialer = libp2pDialer(node)
  // Optimistic claims are audited from here: the relay dials watchers and referees like any client.
  // Claims are kept beside the ledger, so a restart audits the pending ones instead of forgetting them.
  const claims = openSqliteClaims(ledgerPath)
  const board = new ClaimBoard({ dialer, peers: async () => await registry.list(), find: async (p) => registry.find(p), ledger: link, timeouts: { ...DEFAULT_TIMEOUTS, ...o.client?.timeouts }, random: o.client?.random, store: claims })
  board.resume()

  const client = createClient({ dialer, directory: registry, ledger: link, board, sampling: (vocab) => sampling.get(vocab)?.prover, ...o.client })
  // Views of the registry for synchronous readers (metrics scrape, /api/network).
  let view = await client.network()
  const refresh = setInterval(() => {
    client.network().then((v) => { view = v }).catch(() => {})
    void link.refresh()
  }, 1000)
  const metrics = createMetricsRegistry(() => view)
  const app = createHttpApp({
    generator: client,
    network: () => view,
    models,
    webRoot: o.webRoot !== undefined && await access(o.webRoot).then(() => true, () => false) ? o.webRoot : undefined,
    metrics,
    ledger,
    ledgerBackend: o.evm !== undefined ? { kind: 'evm', chainId: o.evm.chainId, contract: o.evm.stakeAddress } : { kind: 'sqlite' },
    board,
    zk: {
      models: () => [...zkEntries.values()],
      // Each proof is verified here, against the published entry, before the answer leaves.
      infer: async (model, input) => await zkInfer({ dialer, peers: async () => await registry.list(), models: (n) => zkEntries.get(n), ledger: link }, model, input),
      sampling: () => [...sampling.values()].map((s) => s.entry)
    },
    onLedgerChange: async () => { await link.refresh() },
    relayAddrs: () => node.getMultiaddrs().map((a) => a.toString()),
    tokenizer: (model) => tokenizers.get(model)
  })
  const http = await serveHttp(app, { port: o.httpPort ?? 0, host })
  const addrs = node.getMultiaddrs().map((a) => a.toString())
  const addr = addrs.find((a) => a.includes('/ws/')) ?? addrs[0]
  const httpUrl = `http://${host}:${http.port}`
  log.info(`relay ${addr}`)
  log.info(`HTTP ${httpUrl}`)
  return {
    addr, addrs, httpUrl, registry, client, ledger, board, libp2p: node,
    async stop () {
      clearInterval(refresh)
      board.close()
      await http.close()
      await node.stop()
      claims.close()
      await ledger.close()
      if (zkEntries.size > 0 || sampling.size > 0) await (await import('../shared/zk/verify.js')).releaseZkWorkers()
    }
  }
}

/**
 * The published entries of the ZK models: a `.json` path is a model owner's manifest entry
 * (`tessera zk setup --out`), taken as it is, no weights needed; a name is a seeded model set up
 * on this machine (cached in .cache/zk).
 */
async function zkEntriesOf (names: string[]): Promise<Map<string, ZkModelEntry>> {
  const out = new Map<string, ZkModelEntry>()
  for (const name of names) {
    if (name.endsWith('.json')) {
      const e = JSON.parse(await readFile(name, 'utf8')) as Partial<ZkModelEntry>
      if (typeof e.name !== 'string' || typeof e.weightCommitment !== 'string' || typeof e.verificationKey !== 'object' || e.shape === undefined) {
        throw new ConfigError(`${name} is not a ZK manifest entry (name, shape, weightCommitment, verificationKey): write one with tessera zk setup --out`)
      }
      out.set(e.name, e as ZkModelEntry)
    } else {
      const { seededZkModel, setupZkModel } = await import('../host/zk/setup.js')
      out.set(name, (await setupZkModel(seededZkModel(name))).entry)
    }
  }
  return out
}

/** The sampling circuit of each vocabulary size, set up once and cached (native-node/zk). */
async function samplingSetups (vocabs: number[]): Promise<Map<number, SamplingSetup>> {
  const out = new Map<number, SamplingSetup>()
  const { setupSampling } = await import('../host/zk/setup.js')
  for (const v of new Set(vocabs)) {
    log.info(`sampling proofs: setting up the argmax circuit for a vocabulary of ${v} (cached after the first time)`)
    out.set(v, await setupSampling(v))
  }
  return out
}
