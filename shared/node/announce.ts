/** Publishing a peer's capability record to the relay (native nodes and tabs alike). */
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { lpStream } from '@libp2p/utils'
import { decode, encode } from 'cborg'
import { ANNOUNCE_PROTOCOL, signCapability, type Capability } from '../protocol/capability.js'

/**
 * Signs `cap` with `key` and sends it to `relay`, trying `attempts` times (a stream can be cut
 * while a busy relay or tab starts up); throws if the relay refuses it or never answers.
 */
export async function announce (node: Libp2p, relay: string, cap: Capability, key: PrivateKey, timeoutMs = 10_000, attempts = 3): Promise<void> {
  for (let i = 1; ; i++) {
    try {
      await announceOnce(node, relay, cap, key, timeoutMs)
      return
    } catch (err) {
      if (i >= attempts || (err as Error).message.startsWith('relay refused')) throw new Error(`announcing to the relay failed: ${(err as Error).message}`)
      await new Promise((resolve) => setTimeout(resolve, 1000 * i))
    }
  }
}

async function announceOnce (node: Libp2p, relay: string, cap: Capability, key: PrivateKey, timeoutMs: number): Promise<void> {
  const stream = await node.dialProtocol(multiaddr(relay), ANNOUNCE_PROTOCOL, { signal: AbortSignal.timeout(timeoutMs), runOnLimitedConnection: true })
  const lp = lpStream(stream)
  await lp.write(encode(await signCapability(cap, key)))
  const reply = decode((await lp.read({ signal: AbortSignal.timeout(timeoutMs) })).subarray()) as { ok: boolean, error?: string }
  await stream.close().catch(() => {})
  if (!reply.ok) throw new Error(`relay refused our record: ${reply.error ?? 'no reason given'}`)
}

/** Tells the relay we are leaving, so clients stop routing to us before the record expires. */
export async function withdraw (node: Libp2p, relay: string, cap: Capability, key: PrivateKey): Promise<void> {
  await announce(node, relay, { ...cap, withdrawn: true }, key, 2000, 1).catch(() => {})
}
