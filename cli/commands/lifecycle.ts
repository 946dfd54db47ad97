import { logger } from '../../shared/log.js'

const log = logger('tessera:lifecycle')

/** Resolves on the first SIGINT or SIGTERM, so long-running commands can shut down cleanly. */
export async function untilSignal(): Promise<NodeJS.Signals> {
  return await new Promise((resolve) => {
    const done = (sig: NodeJS.Signals): void => {
      log.info(`${sig}: shutting down`)
      process.off('SIGINT', done)
      process.off('SIGTERM', done)
      resolve(sig)
    }
    process.on('SIGINT', done)
    process.on('SIGTERM', done)
  })
}
