/**
 * Block selection and rebalancing with real processes: a node that picks its own layers takes
 * what the network lacks, and moves when another node makes it redundant.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildModel } from '../host/model-store.js'
import { loadModel } from '../native-node/store.js'
import { greedyIds } from './helpers/reference.js'
import { preset } from '../shared/model/config.js'
import { randomWeights } from '../shared/model/random.js'
import { tempDir } from './helpers/paths.js'
import { api, spawnTessera, startNetwork, waitFor, type TestNetwork } from './helpers/network.js'

let net: TestNetwork
let model: string

beforeAll(async () => {
  model = tempDir('rebalance-model')
  await buildModel(randomWeights(preset('tiny'), 4), model, { source: 'random:tiny:4', shards: 2 })
  net = await startNetwork(model, [])
})
afterAll(async () => {
  await net?.stop()
})

const layersOf = async (peer: string): Promise<number[] | undefined> =>
  (await api(net.http, '/api/network')).peers.find((p: { peer: string }) => p.peer === peer)?.layers

describe('block selection', () => {
  it('takes the least-covered layers, then moves when another node makes it redundant', async () => {
    const auto = await spawnTessera(['node', '--relay', net.relayAddr, '--model', model, '--max-layers', '2', '--rebalance', '1'])
    net.nodes.push(auto)
    expect(auto.ready.layers).toEqual([0, 2]) // nothing covered yet: the first window
    // Another node takes the same layers explicitly: ours is now redundant, [2,4) is bare.
    await net.addNode('0-2')
    await waitFor(async () => (await layersOf(auto.ready.peer))?.join(',') === '2,4', 30_000)
    expect(auto.log.join('\n')).toMatch(/moving from layers \[0,2\) to \[2,4\)/)
    const view = await api(net.http, '/api/network')
    expect(view.models[0].coverage).toEqual([1, 1, 1, 1])
    const r = await api(net.http, '/v1/completions', { prompt: [1, 2, 3], max_tokens: 8 })
    expect(r.tessera.route.hops.map((h: { peer: string }) => h.peer)).toContain(auto.ready.peer)
    // The moved node computes what the model computes in one process.
    const { runners } = await loadModel(model, { device: 'cpu' })
    expect(r.tessera.tokens).toEqual(await greedyIds(runners, [1, 2, 3], 8))
  })
})
