import type { Command } from 'commander'
import { DEFAULT_JOIN_STAKE, startRelay } from '../../relay/relay.js'
import { evmConfig, ledgerOptions, type LedgerFlags } from './ledger-options.js'
import { int } from './options.js'
import { untilSignal } from './lifecycle.js'

export function registerRelay (program: Command): void {
  const cmd = program.command('relay')
    .description('run the relay: libp2p bootstrap and circuit relay, peer registry, HTTP API and pages')
    .option('--port <n>', 'HTTP port (0 = any free port)', int(0), 8080)
    .option('--p2p-port <n>', 'libp2p WebSocket port (0 = any free port)', int(0), 9090)
    .option('--host <ip>', 'address to listen on', '127.0.0.1')
    .option('--model <dirs...>', 'model directories whose shard files and tokenizers to serve')
    .option('--web <dir>', 'built pages to serve at / (vite build output)', 'dist/web')
    .option('--join-stake <n>', 'stake granted to a peer on its first announce', int(0), DEFAULT_JOIN_STAKE)
    .option('--zk <models>', 'publish these ZK models and verify their proofs: seeded model names set up here (e.g. small), or manifest entries (.json, from tessera zk setup --out); comma-separated', (v: string) => v.split(','))
    .option('--prove-sampling', 'set up the argmax circuit so requests may ask for tessera_prove_sampling (minutes the first time, then cached)')
  ledgerOptions(cmd, { deployment: true })
    .action(async (o: LedgerFlags & { port: number, p2pPort: number, host: string, model?: string[], web: string, joinStake: number, zk?: string[], proveSampling?: boolean }) => {
      const evm = o.ledger === 'evm' ? await evmConfig(o) : undefined
      const relay = await startRelay({ httpPort: o.port, p2pPort: o.p2pPort, host: o.host, models: o.model, webRoot: o.web, ledger: o.ledgerFile, evm, joinStake: o.joinStake, zk: o.zk, proveSampling: o.proveSampling })
      console.log(JSON.stringify({ ready: true, relay: relay.addr, http: relay.httpUrl }))
      await untilSignal()
      await relay.stop()
    })
}
