/**
 * An operator's block list: peer ids, one per line (`#` comments), in a file read again while
 * the process runs, so a peer can be cut off (or let back) without a restart. Connections to a
 * peer newly listed are closed at once; dials to and from it are refused (libp2p's connection
 * gater). It is also how the federation test partitions relays that run as processes.
 */
import { readFile } from 'node:fs/promises'
import type { ConnectionGater, Libp2p, PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { ConfigError } from '../shared/errors.js'
import { logger } from '../shared/log.js'

const log = logger('tessera:deny')

/** How often the file is read again. */
export const DENY_RELOAD_MS = 1000

export interface DenyList {
  gater: ConnectionGater
  /** Starts reading the file every DENY_RELOAD_MS, hanging up on peers as they are listed. */
  watch(node: Libp2p): void
  stop(): void
}

/** Peer ids in `text`; a line that is not one is an error naming it. */
export function parseDenyList(text: string, file: string): Set<string> {
  const out = new Set<string>()
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.replace(/#.*/, '').trim()
    if (line === '') continue
    try {
      peerIdFromString(line)
    } catch {
      throw new ConfigError(`${file}:${i + 1}: "${line}" is not a peer id`)
    }
    out.add(line)
  }
  return out
}

/** The block list in `file` (read now: a malformed one stops the start; a missing one blocks nobody). */
export async function denyList(file: string): Promise<DenyList> {
  const read = async (): Promise<Set<string>> => {
    try {
      return parseDenyList(await readFile(file, 'utf8'), file)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Set()
      throw err
    }
  }
  let denied = await read()
  const deny = (p: PeerId): boolean => denied.has(p.toString())
  let timer: ReturnType<typeof setInterval> | undefined
  return {
    gater: { denyDialPeer: deny, denyInboundEncryptedConnection: deny, denyOutboundEncryptedConnection: deny },
    watch(node) {
      timer = setInterval(() => {
        read()
          .then(async (next) => {
            const added = [...next].filter((p) => !denied.has(p))
            if (added.length > 0 || next.size !== denied.size) log.info(`${file}: ${next.size} peer(s) blocked`)
            denied = next
            for (const p of added) await node.hangUp(peerIdFromString(p)).catch(() => {})
          })
          .catch((err: Error) => {
            // A bad edit keeps the last good list: the operator sees why.
            log.warn(`${file} not read again: ${err.message}`)
          })
      }, DENY_RELOAD_MS)
    },
    stop() {
      if (timer !== undefined) clearInterval(timer)
    }
  }
}
