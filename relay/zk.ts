/**
 * What the relay publishes for the ZK modes: the entries of ZK models (verification key, weight
 * commitment) it checks proofs against, and the sampling circuit of each served vocabulary.
 * host/zk (circom, snarkjs) loads only for a relay that asks for either.
 */
import { readFile } from 'node:fs/promises'
import type { ZkModelEntry } from '../shared/zk/types.js'
import { ConfigError } from '../shared/errors.js'
import { logger } from '../shared/log.js'
import type { SamplingSetup } from '../host/zk/setup.js'

const log = logger('tessera:relay')

/**
 * The published entries of the ZK models: a `.json` path is a model owner's manifest entry
 * (`tessera zk setup --out`), taken as it is, no weights needed; a name is a seeded model set up
 * on this machine (cached in .cache/zk).
 */
export async function zkEntriesOf(names: string[]): Promise<Map<string, ZkModelEntry>> {
  const out = new Map<string, ZkModelEntry>()
  for (const name of names) {
    if (name.endsWith('.json')) {
      const e = JSON.parse(await readFile(name, 'utf8')) as Partial<ZkModelEntry>
      if (typeof e.name !== 'string' || typeof e.weightCommitment !== 'string' || typeof e.verificationKey !== 'object' || e.shape === undefined) {
        throw new ConfigError(`${name} is not a ZK manifest entry (name, shape, weightCommitment, verificationKey): write one with tessera zk setup --out`)
      }
      out.set(e.name, e as ZkModelEntry)
    } else {
      const { seededZkModel, setupZkModel } = await import('../host/zk/setup.js')
      out.set(name, (await setupZkModel(seededZkModel(name))).entry)
    }
  }
  return out
}

/** The sampling circuit of each vocabulary size, set up once and cached (host/zk). */
export async function samplingSetups(vocabs: number[]): Promise<Map<number, SamplingSetup>> {
  const out = new Map<number, SamplingSetup>()
  const { setupSampling } = await import('../host/zk/setup.js')
  for (const v of new Set(vocabs)) {
    log.info(`sampling proofs: setting up the argmax circuit for a vocabulary of ${v} (cached after the first time)`)
    out.set(v, await setupSampling(v))
  }
  return out
}
