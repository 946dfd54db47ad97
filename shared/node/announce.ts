/** Publishing a peer's capability record to the relay (native nodes and tabs alike). */
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { lpStream } from '@libp2p/utils'
import { decode, encode } from 'cborg'
import { ANNOUNCE_PROTOCOL, signCapability, type Capability } from '../protocol/capability.js'
import { TesseraError } from '../errors.js'
import { PEER_DEFAULTS } from './config.js'

export interface AnnounceOptions {
  /** One try's time-out: dialling the relay and its reply (ms). */
  timeoutMs?: number
  attempts?: number
  /** Try i waits i × backoffMs after a failed one. */
  backoffMs?: number
}

/**
 * Signs `cap` with `key` and sends it to `relay`, trying `attempts` times (a stream can be cut
 * while a busy relay or tab starts up). Throws ANNOUNCE_REFUSED at once if the relay refuses the
 * record (trying again would not change its mind), TIMEOUT or UNREACHABLE after the last try.
 */
export async function announce(node: Libp2p, relay: string, cap: Capability, key: PrivateKey, o: AnnounceOptions = {}): Promise<void> {
  const { timeoutMs, attempts, backoffMs } = { ...PEER_DEFAULTS.announce, ...o }
  const record = encode(await signCapability(cap, key))
  for (let i = 1; ; i++) {
    try {
      await announceOnce(node, relay, record, timeoutMs)
      return
    } catch (err) {
      const refused = err instanceof TesseraError && err.code === 'ANNOUNCE_REFUSED'
      if (refused) throw err
      if (i >= attempts) throw unreachable(err, relay, attempts)
      await new Promise((resolve) => setTimeout(resolve, backoffMs * i))
    }
  }
}

/** Tells the relay we are leaving, so clients stop routing to us before the record expires (one short try, best effort). */
export async function withdraw(node: Libp2p, relay: string, cap: Capability, key: PrivateKey, timeoutMs?: number): Promise<void> {
  timeoutMs ??= PEER_DEFAULTS.announce.withdrawTimeoutMs
  await announce(node, relay, { ...cap, withdrawn: true }, key, { timeoutMs, attempts: 1 }).catch(() => {})
}

async function announceOnce(node: Libp2p, relay: string, record: Uint8Array, timeoutMs: number): Promise<void> {
  const stream = await node.dialProtocol(multiaddr(relay), ANNOUNCE_PROTOCOL, { signal: AbortSignal.timeout(timeoutMs), runOnLimitedConnection: true })
  const lp = lpStream(stream)
  await lp.write(record)
  const reply = decode((await lp.read({ signal: AbortSignal.timeout(timeoutMs) })).subarray()) as { ok: boolean; error?: string }
  await stream.close().catch(() => {})
  if (!reply.ok) {
    const why = reply.error ?? 'no reason given'
    throw new TesseraError('ANNOUNCE_REFUSED', `the relay refused our record: ${why}; fix what it names, then start this peer again`)
  }
}

/** The last try's failure, as a TesseraError that says what to check. */
function unreachable(err: unknown, relay: string, attempts: number): TesseraError {
  const e = err as Error
  const code = e.name === 'TimeoutError' || e.name === 'AbortError' ? 'TIMEOUT' : 'UNREACHABLE'
  return new TesseraError(
    code,
    `announcing to the relay failed after ${attempts} tries (${e.message}); ` + `check that the relay at ${relay} is running and reachable`
  )
}
