/**
 * Verification keys the requester pins: a proof checked against a key the relay served proves
 * nothing about the relay, which could serve a key of its own setup (whose toxic waste it holds)
 * and forge proofs at will. The app pins each key's hash (from the model owner, out of band, the
 * way it pins the relay's origin); a served key whose hash differs is refused before any proof.
 */
import { VerificationError } from '../errors.js'
import { sha256Hex } from '../hash.js'
import type { SamplingEntry } from './argmax.js'
import type { VerificationKey, ZkModelEntry } from './types.js'

/** sha256 (hex) of the key's canonical JSON (keys sorted at every depth), so key order on the wire does not matter. */
export function verificationKeyHash(vk: VerificationKey): string {
  const canon = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(canon)
      : typeof v === 'object' && v !== null
        ? Object.fromEntries(
            Object.keys(v)
              .sort()
              .map((k) => [k, canon((v as Record<string, unknown>)[k])])
          )
        : v
  return sha256Hex(new TextEncoder().encode(JSON.stringify(canon(vk))))
}

/** Pinned hashes: ZK models by name, sampling circuits by vocabulary size. */
export interface KeyPins {
  models?: Record<string, string>
  sampling?: Record<number, string>
}

function check(what: string, vk: VerificationKey, pin: string | undefined): void {
  if (pin === undefined) throw new VerificationError(`no pinned verification key for ${what}: refusing the relay's`)
  const got = verificationKeyHash(vk)
  if (got !== pin.toLowerCase())
    throw new VerificationError(`the verification key served for ${what} hashes to ${got.slice(0, 12)}, not the pinned ${pin.slice(0, 12)}`)
}

/** The served entry, if its key matches the pin for its name; throws on a key that differs, or a model with no pin. */
export function pinnedModel(entry: ZkModelEntry, pins: KeyPins): ZkModelEntry {
  check(`ZK model ${entry.name}`, entry.verificationKey, pins.models?.[entry.name])
  return entry
}

/** The served sampling entries that have a pin, each checked against it (an unpinned vocabulary is left out: its proofs then fail as unknown). */
export function pinnedSampling(entries: SamplingEntry[], pins: KeyPins): SamplingEntry[] {
  const pinned = entries.filter((e) => pins.sampling?.[e.vocab] !== undefined)
  for (const e of pinned) check(`the sampling circuit of vocabulary ${e.vocab}`, e.verificationKey, pins.sampling?.[e.vocab])
  return pinned
}
