/**
 * libp2p in a tab: WebSockets to the relay, circuit relay v2 through it, WebRTC between peers
 * (signalled over the relay, then direct), WebTransport for native peers that offer it.
 */
import { createLibp2p } from 'libp2p'
import { webSockets } from '@libp2p/websockets'
import { webRTC } from '@libp2p/webrtc'
import { webTransport } from '@libp2p/webtransport'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { multiaddr } from '@multiformats/multiaddr'
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import { TesseraError } from '../../shared/errors.js'
import { pickRelayAddr } from '../../shared/route/relay-addr.js'

/** How long the relay may take to grant the reservation that makes a tab reachable. */
const RESERVATION_TIMEOUT_MS = 15_000
/** Other relays of the federation a listening tab also holds a reservation on. */
const MAX_SPARE_RELAYS = 4

export interface TabPeerNetOptions {
  /** The relay's multiaddrs (GET /api/relay); the WebSocket one is dialled. */
  relayAddrs: string[]
  privateKey?: PrivateKey
  /** Take a reservation on the relay and accept WebRTC, so others can reach this tab. */
  listen: boolean
  /** ICE servers; none by default (loopback and LAN work without; add STUN for the internet). */
  iceServers?: RTCIceServer[]
  /**
   * The other relays of its federation (each one's multiaddrs, GET /api/relay `relays`): a
   * listening tab takes a reservation on each too, so it stays reachable when its own relay dies.
   */
  spareRelays?: string[][]
}

export async function createTabPeer(o: TabPeerNetOptions): Promise<{ node: Libp2p; relay: string; spares: string[] }> {
  const https = globalThis.location?.protocol === 'https:'
  const relay = pickRelayAddr(o.relayAddrs, https)
  if (relay === undefined) throw new TesseraError('CONFIG', 'the relay offers no address a browser can dial; start it with a WebSocket (/ws) listener')
  // A few at most: each is a reservation held, and the list comes from the relay.
  const spares = (o.spareRelays ?? []).flatMap((addrs) => pickRelayAddr(addrs, https) ?? []).slice(0, MAX_SPARE_RELAYS)
  const node = await createLibp2p({
    privateKey: o.privateKey,
    // One '/p2p-circuit' a reservation: one on each relay the tab is connected to.
    addresses: { listen: o.listen ? [...spares.map(() => '/p2p-circuit'), '/p2p-circuit', '/webrtc'] : [] },
    transports: [webSockets(), webRTC({ rtcConfiguration: { iceServers: o.iceServers ?? [] } }), webTransport(), circuitRelayTransport()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    // Browsers refuse private addresses by default; our relay and peers may be on loopback/LAN.
    connectionGater: { denyDialMultiaddr: async () => false },
    // WebGPU work can block this tab's event loop for a while: a late ping must not cut the
    // relay connection (and with it the reservation that makes the tab reachable).
    connectionMonitor: { abortConnectionOnPingFailure: false },
    services: { identify: identify(), ping: ping() }
  })
  await node.dial(multiaddr(relay))
  // The spare relays are best effort: one that does not answer now is simply not one to fall back on.
  const dials = await Promise.allSettled(spares.map(async (r) => await node.dial(multiaddr(r), { signal: AbortSignal.timeout(RESERVATION_TIMEOUT_MS) })))
  const reached = spares.filter((_, i) => dials[i].status === 'fulfilled')
  if (o.listen) {
    // Wait until the relay reservation shows in our addresses: only then can others dial us.
    const until = Date.now() + RESERVATION_TIMEOUT_MS
    while (!node.getMultiaddrs().some((a) => a.toString().includes('/p2p-circuit'))) {
      if (Date.now() > until) {
        await node.stop()
        const s = RESERVATION_TIMEOUT_MS / 1000
        throw new TesseraError('TIMEOUT', `the relay gave this tab no reservation in ${s} s; check its circuit relay limits, or reload to try again`)
      }
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
  return { node, relay, spares: reached }
}
