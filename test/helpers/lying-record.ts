/** A capability record an attacker would announce: for layers [0, 2), instant, and valid for ever. */
import type { Capability } from '../../shared/protocol/capability.js'
import { VERSION } from '../../shared/version.js'

const YEAR_3000 = Date.UTC(3000, 0, 1)

export function lyingRecord(peer: string, addrs: string[], root: string, model: string, o: Partial<Capability> = {}): Capability {
  return {
    peer,
    addrs,
    device: 'cuda',
    memory: 2 ** 40,
    msPerLayer: 0,
    model,
    root,
    modelLayers: 5,
    layers: [0, 2],
    shardBounds: [0, 2],
    kvRoom: 1 << 20,
    sessions: 0,
    version: VERSION,
    issued: Date.now(),
    expires: YEAR_3000,
    ...o
  }
}
