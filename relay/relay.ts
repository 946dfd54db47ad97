/**
 * The relay: libp2p bootstrap + circuit relay + peer registry, and the HTTP server (pages,
 * shard files, OpenAI API, metrics) whose generations run through a client on the relay's own
 * libp2p node.
 */
import type { Libp2p } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { access, mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import { createClient, DEFAULT_TIMEOUTS, type Client } from '../shared/client/client.js'
import { ClaimBoard } from '../shared/optimistic/board.js'
import { zkInfer } from '../shared/client/zk.js'
import type { SamplingSetup } from '../host/zk/setup.js'
import { libp2pDialer } from '../shared/route/directory.js'
import type { Manifest } from '../shared/manifest.js'
import type { ModelText } from '../shared/text/model-text.js'
import { logger } from '../shared/log.js'
import { cachedLedgerLink } from '../shared/client/ledger-link.js'
import type { Ledger } from '../shared/ledger/types.js'
import { createPeer, loadOrCreateKey } from '../host/libp2p.js'
import { readManifest, readModelText } from '../host/model-store.js'
import { resolveRelayOptions, type RelayOptions } from './config.js'
import { openSqliteClaims } from './claims-sqlite.js'
import { createRegistry, handleRegistry, measuring, reportingDialer, type Registry } from './registry.js'
import { createHttpApp, serveHttp } from './http.js'
import { createMetricsRegistry, relayMetrics } from './metrics.js'
import { handleFiles } from '../shared/files/serve.js'
import { relayCatalog } from './files.js'
import { indexFiles } from './shards.js'
import { openSqliteLedger } from './ledger-sqlite.js'
import { ledgerEvidenceChecker } from './evidence.js'
import { samplingSetups, zkEntriesOf } from './zk.js'
import { pickRelayAddr } from '../shared/route/relay-addr.js'
import { federate, peerOf } from './federation.js'
import { denyList } from '../host/deny-list.js'

export type { RelayOptions } from './config.js'

const log = logger('tessera:relay')

export interface RunningRelay {
  /** The multiaddr browsers and clients dial (WebSockets, /p2p/ included). */
  addr: string
  /**
   * What a native node best dials: plain TCP where the relay listens on it, else `addr`. The
   * relay's client reaches nodes over the connection they opened, and WebSocket framing (a JS
   * mask over every byte) cost `medium`'s logits hop ~1.3 ms of ~4 ms overhead (bench network).
   */
  nodeAddr: string
  addrs: string[]
  httpUrl: string
  registry: Registry
  client: Client
  ledger: Ledger
  board: ClaimBoard
  libp2p: Libp2p
  /** The other relays this one shares records with now (peer ids). */
  relays: () => string[]
  /** Bytes of model files served to nodes over libp2p so far. */
  filesServed: () => number
  stop: () => Promise<void>
}

export async function startRelay(options: RelayOptions = {}): Promise<RunningRelay> {
  const o = resolveRelayOptions(options)
  // Every relay speaks gossipsub, so relays that meet form one network whether or not they were configured to.
  const direct = o.relays.map((a) => ({ id: peerOf(a), addrs: [a] }))
  await mkdir(dirname(o.ledger), { recursive: true })
  // What can fail on bad configuration (a manifest, a ZK entry, a circuit set-up) runs before anything is started.
  const { models, texts } = await servedModels(o.models)
  const sampling = o.proveSampling ? await samplingSetups(models.map((m) => m.manifest.config.vocabSize)) : new Map<number, SamplingSetup>()
  const zkEntries = await zkEntriesOf(o.zk)
  // A kept key keeps the peer id, so the multiaddr nodes announce to still names this relay after a restart.
  const privateKey = o.privateKey ?? (await loadOrCreateKey(o.keyFile))
  // The checker asks the ledger for a witness's standing (staked, not blacklisted: relay/evidence.ts): bound once both exist.
  let ledgerRef: Ledger | undefined
  // With `reexecute`, evidence carrying the disputed hop's inputs is judged by re-running it here instead (shared/verify/reexec.ts).
  const checker = ledgerEvidenceChecker({
    standing: async (p) => await ledgerRef!.standing(p),
    zkModels: (name) => zkEntries.get(name),
    reexecute: o.reexecute,
    requireInputs: o.requireInputs
  })
  // viem loads only for a relay that settles on a chain.
  const ledger = o.evm !== undefined ? await (await import('./ledger-evm.js')).openEvmLedger(o.evm, checker) : await openSqliteLedger(o.ledger, checker)
  ledgerRef = ledger
  const deny = o.denyFile !== undefined ? await denyList(o.denyFile) : undefined
  const node = await createPeer({
    relayServer: true,
    privateKey,
    listen: [`/ip4/${o.host}/tcp/${o.p2pPort}/ws`, `/ip4/${o.host}/tcp/0`],
    announce: o.announce,
    gossip: { direct },
    gater: deny?.gater
  })
  deny?.watch(node)
  // The relay's own client reports what it sees straight into the ledger; the ledger re-checks the evidence all the same.
  const link = cachedLedgerLink({
    standings: async () => await ledger.standings(),
    slash: async (e) => await ledger.slash(e, node.peerId.toString()),
    observe: async (peer, ok) => await ledger.observe(peer, ok)
  })
  await link.refresh()
  // Stake on a first announce only for the operator's allow-list, or for anyone where --join-stake opts in (config.ts says why).
  const joins = new Map<string, Promise<void>>()
  const registry = createRegistry({
    excluded: (peer) => link.excluded(peer),
    onJoin: (cap) => {
      const grant = o.stakeFor?.get(cap.peer) ?? o.joinStake
      if (grant <= 0) return
      const join = (async () => {
        const s = await ledger.standing(cap.peer)
        if (s.stake === 0 && s.slashed === 0) await ledger.stake(cap.peer, grant)
      })().catch((err: Error) => {
        log.warn(`could not stake ${cap.peer}: ${err.message}`)
      })
      joins.set(cap.peer, join)
      void join.finally(() => joins.delete(cap.peer))
    }
  })
  // The board is made below; claims from other relays wait for it (they are ignored until then).
  let boardRef: ClaimBoard | undefined
  const federation = federate(node, registry, { peers: o.relays, board: () => boardRef })
  await handleRegistry(node, registry, {
    stakeOf: async (peer) => {
      await joins.get(peer)
      return (await ledger.standing(peer)).stake
    },
    announced: (signed) => federation.publish(signed)
  })
  // The relay's own failed dials count against a record (relay/registry.ts reportingDialer).
  const dialer = reportingDialer(libp2pDialer(node), registry)
  // Optimistic claims are audited from here: the relay dials watchers and referees like any client.
  // Claims are kept beside the ledger, so a restart audits the pending ones instead of forgetting them.
  const claims = openSqliteClaims(o.ledger)
  const board = new ClaimBoard({
    dialer,
    peers: async () => await registry.list(),
    find: async (p) => registry.find(p),
    ledger: link,
    timeouts: { ...DEFAULT_TIMEOUTS, ...o.client?.timeouts },
    random: o.client?.random,
    store: claims,
    // Federated relays hold each other's claims and draw their watchers alike (relay/federation.ts).
    seededDraws: () => federation.relays().length > 0,
    onPosted: (claim) => federation.publishClaim(claim)
  })
  boardRef = board
  board.resume()

  const bare = createClient({ dialer, directory: registry, ledger: link, board, sampling: (vocab) => sampling.get(vocab)?.prover, ...o.client })
  // Every generation of the relay's client times its hops: routing ranks peers by that, not by what their records claim.
  const client: Client = { ...bare, generate: measuring(bare, registry).generate }
  // Views of the registry for synchronous readers (metrics scrape, /api/network).
  let view = await client.network()
  const refresh = setInterval(() => {
    client
      .network()
      .then((v) => {
        view = v
      })
      .catch(() => {})
    void link.refresh()
  }, o.viewRefreshMs)
  // Process metrics too: the event loop's lag (tessera_nodejs_eventloop_lag_max_seconds) is how a blocking request shows.
  const metrics = createMetricsRegistry(() => view, { process: true })
  const fileBytes = relayMetrics(metrics, () => view).fileBytes
  // Model files to nodes over libp2p, chunk by chunk (host side: nodes fetch only their shards, from peers first).
  let filesServed = 0
  await handleFiles(node, relayCatalog(models, indexFiles(models)), {
    served: (_peer, n) => {
      filesServed += n
      fileBytes.inc({ via: 'libp2p' }, n)
    }
  })
  const app = createHttpApp({
    generator: client,
    unreachable: (peer, reporter) => registry.unreachable(peer, reporter),
    // Which relay each record came through, read at request time (the view is refreshed every second).
    network: () => ({
      ...view,
      peers: view.peers.map((p) => {
        const via = registry.viaOf(p.peer)
        return via === undefined ? p : { ...p, via }
      })
    }),
    relays: () => federation.relays(),
    otherRelays: async () =>
      await Promise.all(
        federation.relays().map(async (peer) => {
          // Their listen addresses, as identify told us.
          const known = await node.peerStore.get(peerIdFromString(peer)).catch(() => undefined)
          return { peer, addrs: (known?.addresses ?? []).map((a) => `${a.multiaddr.toString()}/p2p/${peer}`) }
        })
      ),
    models,
    webRoot:
      o.webRoot !== undefined &&
      (await access(o.webRoot).then(
        () => true,
        () => false
      ))
        ? o.webRoot
        : undefined,
    metrics,
    ledger,
    ledgerBackend: o.evm !== undefined ? { kind: 'evm', chainId: o.evm.chainId, contract: o.evm.stakeAddress } : { kind: 'sqlite' },
    board,
    zk: {
      models: () => [...zkEntries.values()],
      // Each proof is verified here, against the published entry, before the answer leaves.
      infer: async (model, input) => {
        const deps = { dialer, peers: async () => await registry.list(), models: (n: string) => zkEntries.get(n), ledger: link }
        return await zkInfer(deps, model, input)
      },
      sampling: () => [...sampling.values()].map((s) => s.entry)
    },
    onLedgerChange: async () => {
      await link.refresh()
    },
    relayAddrs: () => node.getMultiaddrs().map((a) => a.toString()),
    iceServers: o.iceServers,
    text: (model) => texts.get(model),
    maxBodyBytes: o.maxBodyBytes
  })
  const http = await serveHttp(app, { port: o.httpPort, host: o.host })
  const addrs = node.getMultiaddrs().map((a) => a.toString())
  const addr = pickRelayAddr(addrs, false) ?? addrs[0]
  const nodeAddr = addrs.find((a) => a.includes('/tcp/') && !a.includes('/ws') && !a.includes('/p2p-circuit')) ?? addr
  const httpUrl = `http://${o.host}:${http.port}`
  log.info(`relay ${addr}${nodeAddr !== addr ? ` (native nodes: ${nodeAddr})` : ''}`)
  log.info(`HTTP ${httpUrl}`)
  return {
    addr,
    nodeAddr,
    addrs,
    httpUrl,
    registry,
    client,
    ledger,
    board,
    libp2p: node,
    relays: () => federation.relays(),
    filesServed: () => filesServed,
    async stop() {
      clearInterval(refresh)
      deny?.stop()
      federation.stop()
      board.close()
      await http.close()
      await node.stop()
      claims.close()
      await ledger.close()
      if (zkEntries.size > 0 || sampling.size > 0) await (await import('../shared/zk/verify.js')).releaseZkWorkers()
    }
  }
}

/** The manifests of the model directories the relay serves, and their text (tokenizer, template) by model name and by root. */
async function servedModels(dirs: string[]): Promise<{ models: Array<{ dir: string; manifest: Manifest }>; texts: Map<string, ModelText> }> {
  const models: Array<{ dir: string; manifest: Manifest }> = []
  const texts = new Map<string, ModelText>()
  for (const dir of dirs) {
    const manifest = await readManifest(dir)
    models.push({ dir, manifest })
    const text = await readModelText(dir, manifest)
    if (text !== undefined) {
      texts.set(manifest.name, text)
      texts.set(manifest.root, text)
    }
  }
  return { models, texts }
}
