/**
 * libp2p for Node processes: the relay, native nodes and command-line clients. TCP and
 * WebSockets on loopback by default, noise + yamux, identify and ping; the relay adds the
 * circuit relay v2 server with limits raised for activations. A process can be given a slow link
 * (host/slow-link.ts) to measure what latency and bandwidth do, on loopback.
 */
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { webSockets } from '@libp2p/websockets'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { gossipsub } from '@libp2p/gossipsub'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { ConnectionGater, Libp2p, PrivateKey } from '@libp2p/interface'
import { ConfigError } from '../shared/errors.js'
import { linkFromEnv, slowed, type LinkShape } from './slow-link.js'
import { readFile, writeFile, mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'

export interface PeerOptions {
  listen?: string[]
  privateKey?: PrivateKey
  /** Run the circuit relay v2 server (the relay process). */
  relayServer?: boolean
  /**
   * The addresses others should dial instead of the listening ones: a public name behind NAT or a
   * TLS terminator (/dns4/relay.example.org/tcp/443/wss). Identify and /api/relay pass them on.
   */
  announce?: string[]
  /** Run gossipsub (the relays' shared registry, relay/federation.ts); `direct`: peers always sent every message, kept connected. */
  gossip?: { direct: Array<{ id: string; addrs: string[] }> }
  /** Which connections to refuse (libp2p's connection gater): an operator's block list, or a test's partition. */
  gater?: ConnectionGater
  /** Slow every connection to this link (host/slow-link.ts); default: TESSERA_LINK_RTT_MS / TESSERA_LINK_MBPS, else none. */
  link?: LinkShape
}

/** Loopback by default: a node is reachable from elsewhere only when its operator says so. */
export const DEFAULT_LISTEN = ['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/tcp/0/ws']

export async function createPeer(o: PeerOptions = {}): Promise<Libp2p> {
  // biome-ignore lint/suspicious/noExplicitAny: libp2p types each service map by its factories; ours is assembled at run time.
  const services: Record<string, any> = { identify: identify(), ping: ping() }
  if (o.relayServer === true) {
    services.relay = circuitRelayServer({
      reservations: {
        maxReservations: 1024,
        // Activations cross relayed connections until peers upgrade to direct ones: the
        // defaults (128 KiB, 2 minutes per connection) would cut a generation off.
        applyDefaultLimit: false
      }
    })
  }
  if (o.gossip !== undefined) {
    services.pubsub = gossipsub({
      // A lone relay still publishes (nobody to send to is not an error), and never hears itself.
      allowPublishToZeroTopicPeers: true,
      emitSelf: false,
      directPeers: o.gossip.direct.map((p) => ({ id: peerIdFromString(p.id), addrs: p.addrs.map((a) => multiaddr(a)) }))
    })
  }
  // Relayed connections ride the relay's own (slowed) connections, so they pay on both legs.
  const link = o.link ?? linkFromEnv()
  return await createLibp2p({
    privateKey: o.privateKey,
    addresses: { listen: o.listen ?? DEFAULT_LISTEN, ...(o.announce !== undefined && o.announce.length > 0 ? { announce: o.announce } : {}) },
    transports:
      link === undefined ? [tcp(), webSockets(), circuitRelayTransport()] : [slowed(tcp(), link), slowed(webSockets(), link), circuitRelayTransport()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionManager: { maxConnections: 1024 },
    // A busy peer (a long prefill, a loaded machine) answers pings late; dropping its connection
    // for that would cut every session on it. Dead peers show up as resets and step time-outs.
    connectionMonitor: { abortConnectionOnPingFailure: false },
    ...(o.gater !== undefined ? { connectionGater: o.gater } : {}),
    services
  })
}

/** A node's identity persists across restarts (its reputation and stake will hang on it). */
export async function loadOrCreateKey(path?: string): Promise<PrivateKey> {
  if (path === undefined) return await generateKeyPair('Ed25519')
  let bytes: Uint8Array | undefined
  try {
    bytes = await readFile(path)
  } catch (err) {
    // Only a missing file means "new identity": anything else would silently replace one.
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new ConfigError(`cannot read the key file ${path}: ${(err as Error).message}`)
  }
  if (bytes !== undefined) {
    try {
      return privateKeyFromProtobuf(bytes)
    } catch (err) {
      throw new ConfigError(`${path} is not a libp2p private key (${(err as Error).message}): restore it, or move it away to start under a new identity`)
    }
  }
  const key = await generateKeyPair('Ed25519')
  await mkdir(dirname(path), { recursive: true })
  await writeFile(path, privateKeyToProtobuf(key), { mode: 0o600 })
  return key
}
