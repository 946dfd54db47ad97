import type { Command } from 'commander'
import { DEFAULT_JOIN_STAKE, DEFAULT_LEDGER, startRelay } from '../../relay/relay.js'
import { int } from './options.js'
import { untilSignal } from './lifecycle.js'

export function registerRelay (program: Command): void {
  program.command('relay')
    .description('run the relay: libp2p bootstrap and circuit relay, peer registry, HTTP API and pages')
    .option('--port <n>', 'HTTP port (0 = any free port)', int(0), 8080)
    .option('--p2p-port <n>', 'libp2p WebSocket port (0 = any free port)', int(0), 9090)
    .option('--host <ip>', 'address to listen on', '127.0.0.1')
    .option('--model <dirs...>', 'model directories whose shard files and tokenizers to serve')
    .option('--web <dir>', 'built pages to serve at / (vite build output)', 'dist/web')
    .option('--ledger <file>', 'SQLite file of the ledger (stakes, slashes, reputation, audit log)', DEFAULT_LEDGER)
    .option('--join-stake <n>', 'stake granted to a peer on its first announce', int(0), DEFAULT_JOIN_STAKE)
    .option('--zk <models>', 'publish these ZK models (comma-separated, e.g. small) and verify their proofs', (v: string) => v.split(','))
    .action(async (o: { port: number, p2pPort: number, host: string, model?: string[], web: string, ledger: string, joinStake: number, zk?: string[] }) => {
      const relay = await startRelay({ httpPort: o.port, p2pPort: o.p2pPort, host: o.host, models: o.model, webRoot: o.web, ledger: o.ledger, joinStake: o.joinStake, zk: o.zk })
      console.log(JSON.stringify({ ready: true, relay: relay.addr, http: relay.httpUrl }))
      await untilSignal()
      await relay.stop()
    })
}
