/**
 * A drill rig on the in-process network: honest peers and a client set up as the relay's own
 * (its ledger link and claim board, fast bans, and one seeded draw shared by client and board, as
 * relay.ts shares `client.random`). The fault and optimistic drills add their faulty peers to it.
 */
import type { Client, ClientConfig } from '../../shared/client/client.js'
import type { Ledger } from '../../shared/ledger/types.js'
import { mulberry32 } from '../../shared/rng.js'
import { memoryBoard } from './memory-board.js'
import { memoryClient } from './memory-client.js'
import { memoryNet, type MemoryNet, type MemoryPeer } from './memory-net.js'
import type { ModelRunners } from './memory-model.js'

export interface Drill {
  add: MemoryNet['add']
  client: Client
  ledger: Ledger
  honest: MemoryPeer[]
  stop: () => Promise<void>
}

export async function drillNetwork(model: ModelRunners, o: { honest: Array<[number, number]>; seed?: number; client?: Partial<ClientConfig> }): Promise<Drill> {
  const net = memoryNet(model)
  const honest: MemoryPeer[] = []
  for (const layers of o.honest) honest.push(await net.add({ layers }))
  const random = o.seed === undefined ? undefined : mulberry32(o.seed)
  const rig = await memoryBoard(net, random === undefined ? {} : { random })
  const client = memoryClient(net, { ledger: rig.link, board: rig.board, banMs: 1, ...(random === undefined ? {} : { random }), ...o.client })
  return {
    add: net.add,
    client,
    ledger: rig.ledger,
    honest,
    stop: async () => {
      await rig.close()
      net.stop()
    }
  }
}
