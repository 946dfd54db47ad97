/** A settlement POSTed to a caller's webhook; a failure is logged, not retried. */
import { logger } from '../log.js'
import type { Settlement } from '../client/types.js'
import { BOARD_DEFAULTS } from './config.js'

const log = logger('tessera:board:webhook')

export async function postWebhook(url: string, s: Settlement, timeoutMs: number = BOARD_DEFAULTS.webhookMs): Promise<void> {
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(s),
      signal: AbortSignal.timeout(timeoutMs)
    })
    if (!res.ok) log.warn(`webhook ${url} answered HTTP ${res.status} for claim ${s.claim}`)
  } catch (err) {
    log.warn(`webhook ${url} for claim ${s.claim} failed: ${(err as Error).message}`)
  }
}
