/**
 * `tessera relay` — the relay until Ctrl-C; prints one JSON ready line (relay multiaddr, HTTP URL,
 * peer id) that scripts wait for. Defaults are relay/config.ts's.
 */
import type { Command } from 'commander'
import bytes from 'bytes'
import { startRelay } from '../../relay/relay.js'
import { HTTP_DEFAULTS, RELAY_DEFAULTS, RELAY_PORTS, parseIceServer } from '../../relay/config.js'
import { WEB_ROOT } from '../config.js'
import { evmConfig, ledgerOptions, readStakeFile, type LedgerFlags } from './ledger-options.js'
import { int, memory } from './options.js'
import { untilSignal } from './lifecycle.js'
import { reexecutorFor } from '../../native-node/reexec.js'

interface RelayFlags extends LedgerFlags {
  port: number
  p2pPort: number
  host: string
  announce?: string[]
  iceServer?: string[]
  model?: string[]
  web: string
  joinStake: number
  stakeFile?: string
  zk?: string[]
  proveSampling?: boolean
  key?: string
  maxBody?: number
  peerRelay?: string[]
  denyFile?: string
}

export function registerRelay(program: Command): void {
  const cmd = program
    .command('relay')
    .description('run the relay: libp2p bootstrap and circuit relay, peer registry, HTTP API and pages')
    .option('--port <n>', 'HTTP port (0 = any free port)', int(0), RELAY_PORTS.http)
    .option('--p2p-port <n>', 'libp2p WebSocket port (0 = any free port)', int(0), RELAY_PORTS.p2p)
    .option('--host <ip>', 'address to listen on (0.0.0.0: every interface, for a public relay)', RELAY_DEFAULTS.host)
    .option(
      '--announce <multiaddrs...>',
      'addresses to give out instead of the listening ones, e.g. /dns4/relay.example.org/tcp/443/wss behind a TLS terminator'
    )
    .option('--peer-relay <multiaddrs...>', 'other relays of the same network (their multiaddr with /p2p/): records announced to any are listed by all')
    .option('--deny-file <file>', 'peer ids to refuse, one per line; read again every second, so a peer is cut off (or let back) without a restart')
    .option('--ice-server <urls...>', "STUN/TURN servers for tabs' WebRTC (stun:HOST:PORT, turn:USER:PASS@HOST:PORT)")
    .option('--model <dirs...>', 'model directories whose shard files and tokenizers to serve')
    .option('--web <dir>', 'built pages to serve at / (vite build output)', WEB_ROOT)
    .option('--join-stake <n>', 'stake every new peer on its first announce (open test networks: keys are free)', int(0), RELAY_DEFAULTS.joinStake)
    .option('--stake-file <file>', 'stake only these peers on their first announce: JSON { "PEER-ID": AMOUNT } or lines PEER-ID AMOUNT')
    .option(
      '--zk <models>',
      'publish these ZK models and verify their proofs: seeded model names set up here (e.g. small), ' +
        'or manifest entries (.json, from tessera zk setup --out); comma-separated',
      (v: string) => v.split(',')
    )
    .option('--key <file>', "keep the relay's libp2p identity in this file (created if missing), so nodes find it again after a restart")
    .option('--max-body <size>', `the largest HTTP request body accepted, e.g. 4MB (default: ${bytes.format(HTTP_DEFAULTS.maxBodyBytes)})`, memory)
    .option('--prove-sampling', 'set up the argmax circuit so requests may ask for tessera_prove_sampling (minutes the first time, then cached)')
  ledgerOptions(cmd, { deployment: true }).action(async (o: RelayFlags) => {
    const evm = o.ledger === 'evm' ? await evmConfig(o) : undefined
    // The arbiter: disputed hops re-run here over the served shards (loaded on the first dispute), so colluders frame no one.
    const arbiter = await reexecutorFor(o.model ?? [])
    const relay = await startRelay({
      httpPort: o.port,
      p2pPort: o.p2pPort,
      host: o.host,
      announce: o.announce,
      relays: o.peerRelay,
      denyFile: o.denyFile,
      iceServers: o.iceServer?.map(parseIceServer),
      models: o.model,
      webRoot: o.web,
      ledger: o.ledgerFile,
      evm,
      joinStake: o.joinStake,
      stakeFor: o.stakeFile === undefined ? undefined : await readStakeFile(o.stakeFile),
      zk: o.zk,
      proveSampling: o.proveSampling,
      keyFile: o.key,
      maxBodyBytes: o.maxBody,
      reexecute: arbiter.reexecute,
      requireInputs: arbiter.serves
    })
    console.log(JSON.stringify({ ready: true, relay: relay.addr, nodeRelay: relay.nodeAddr, http: relay.httpUrl, peer: relay.libp2p.peerId.toString() }))
    await untilSignal()
    await relay.stop()
    await arbiter.dispose()
  })
}
