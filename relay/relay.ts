/**
 * The relay: libp2p bootstrap + circuit relay + peer registry, and the HTTP server (pages,
 * shard files, OpenAI API, metrics) whose generations run through a client on the relay's own
 * libp2p node.
 */
import type { Libp2p } from '@libp2p/interface'
import { readFile, access } from 'node:fs/promises'
import { join } from 'node:path'
import { createClient, type Client, type ClientConfig } from '../shared/client/client.js'
import { libp2pDialer } from '../shared/client/dialer.js'
import type { Manifest } from '../shared/manifest.js'
import { loadTokenizer, type Tokenizer } from '../shared/tokenizer.js'
import { logger } from '../shared/log.js'
import { createPeer } from '../native-node/libp2p.js'
import { readManifest } from '../native-node/store.js'
import { createRegistry, handleRegistry, type Registry } from './registry.js'
import { createHttpApp, serveHttp } from './http.js'
import { createMetricsRegistry } from './metrics.js'

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
}

export interface RunningRelay {
  /** The multiaddr nodes and clients dial (WebSockets, /p2p/ included). */
  addr: string
  addrs: string[]
  httpUrl: string
  registry: Registry
  client: Client
  libp2p: Libp2p
  stop: () => Promise<void>
}

export async function startRelay (o: RelayOptions = {}): Promise<RunningRelay> {
  const host = o.host ?? '127.0.0.1'
  const node = await createPeer({ relayServer: true, listen: [`/ip4/${host}/tcp/${o.p2pPort ?? 0}/ws`, `/ip4/${host}/tcp/0`] })
  const registry = createRegistry()
  await handleRegistry(node, registry)
  const client = createClient({ dialer: libp2pDialer(node), directory: registry, ...o.client })

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
  // Views of the registry for synchronous readers (metrics scrape, /api/network).
  let view = await client.network()
  const refresh = setInterval(() => { client.network().then((v) => { view = v }).catch(() => {}) }, 1000)
  const metrics = createMetricsRegistry(() => view)
  const app = createHttpApp({
    generator: client,
    network: () => view,
    models,
    webRoot: o.webRoot !== undefined && await access(o.webRoot).then(() => true, () => false) ? o.webRoot : undefined,
    metrics,
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
    addr, addrs, httpUrl, registry, client, libp2p: node,
    async stop () {
      clearInterval(refresh)
      await http.close()
      await node.stop()
    }
  }
}
