/**
 * Capability records: what a node offers, signed with its libp2p key so the relay and every
 * client can check who says it. Published to the relay (/tessera/announce/1.0.0) and read back
 * by clients (/tessera/peers/1.0.0); a record expires unless refreshed.
 */
import { decode, encode } from 'cborg'
import { peerIdFromString } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import type { DeviceKind } from '../runner.js'
import { ProtocolError } from '../errors.js'
import { MAX_RECORD_BYTES } from './limits.js'
import { verifySignature } from '../verify/signature.js'

export const ANNOUNCE_PROTOCOL = '/tessera/announce/1.0.0'
export const PEERS_PROTOCOL = '/tessera/peers/1.0.0'

export interface Capability {
  peer: string // libp2p peer id (base58)
  addrs: string[] // multiaddrs to dial, /p2p/<peer> included
  device: DeviceKind
  memory: number // bytes this node may use for weights + KV cache
  msPerLayer: number // measured: one decode step through one layer
  model: string // manifest name
  root: string // model root hash
  modelLayers: number // layers in the whole model
  layers: [number, number] // the run of layers served, [start, end)
  shardBounds: number[] // layer boundaries inside `layers` where a hop may start or end
  kvRoom: number // tokens of KV cache still free
  sessions: number // open sessions
  version: string
  issued: number // ms since epoch
  expires: number // ms since epoch
  /** A leaving peer's last word: drop my record now (a tab closing, a node shutting down). */
  withdrawn?: boolean
  /** ZK models this peer proves inferences of (/tessera/zk/1.0.0). */
  zk?: string[]
  /**
   * The run this peer is loading to serve instead of `layers` (rebalancing): others deciding
   * where to go count it there already, so that a gap one peer is filling does not draw them all.
   */
  moving?: [number, number]
}

export interface SignedCapability {
  record: Uint8Array
  signature: Uint8Array
}

export async function signCapability(c: Capability, key: PrivateKey): Promise<SignedCapability> {
  const record = encode(c)
  return { record, signature: await key.sign(record) }
}

/**
 * Checks a signed record: valid CBOR of the right shape, signed by the key of the peer it
 * names, not expired. Returns the capability or throws ProtocolError.
 */
export async function verifyCapability(s: SignedCapability, now = Date.now()): Promise<Capability> {
  if (!(s?.record instanceof Uint8Array) || !(s.signature instanceof Uint8Array)) {
    throw new ProtocolError('MALFORMED', 'a signed record needs record and signature bytes')
  }
  if (s.record.byteLength > MAX_RECORD_BYTES) throw new ProtocolError('TOO_LARGE', `record of ${s.record.byteLength} bytes exceeds ${MAX_RECORD_BYTES}`)
  let c: Capability
  try {
    c = decode(s.record)
  } catch {
    throw new ProtocolError('MALFORMED', 'record is not valid CBOR')
  }
  const ok =
    typeof c === 'object' &&
    c !== null &&
    typeof c.peer === 'string' &&
    Array.isArray(c.addrs) &&
    typeof c.root === 'string' &&
    Array.isArray(c.layers) &&
    c.layers.length === 2 &&
    c.layers[0] < c.layers[1] &&
    Array.isArray(c.shardBounds) &&
    typeof c.msPerLayer === 'number' &&
    typeof c.expires === 'number' &&
    (c.zk === undefined || (Array.isArray(c.zk) && c.zk.every((z) => typeof z === 'string'))) &&
    (c.moving === undefined ||
      (Array.isArray(c.moving) && c.moving.length === 2 && c.moving.every((x) => Number.isInteger(x)) && c.moving[0] >= 0 && c.moving[0] < c.moving[1]))
  if (!ok) throw new ProtocolError('MALFORMED', 'record lacks required fields')
  let key
  try {
    key = peerIdFromString(c.peer).publicKey
  } catch {
    throw new ProtocolError('MALFORMED', `record names an invalid peer id ${c.peer}`)
  }
  if (key === undefined) throw new ProtocolError('MALFORMED', `peer id ${c.peer} does not embed its public key`)
  if (!(await verifySignature(key, s.record, s.signature))) throw new ProtocolError('BAD_SIGNATURE', `record for ${c.peer} is not signed by that peer`)
  if (c.expires < now) throw new ProtocolError('EXPIRED', `record for ${c.peer} expired`)
  return c
}
