/**
 * Optimistic claims over HTTP, for clients outside the relay (a tab's SDK, the CLI): the claim
 * as JSON (bytes as base64), `POST /api/claims` to post it, `GET /api/claims/:id/events` to hear
 * how it settled. The board on the relay audits it exactly as it audits its own.
 */
import type { HopInput } from '../runner.js'
import { bytesOf } from '../protocol/infer.js'
import { InputError, TesseraError } from '../errors.js'
import { base64ToBytes, bytesToBase64 } from '../base64.js'
import type { Claim, ClaimSink } from './claim.js'
import type { Settlement } from '../client/types.js'

type JsonInput = { tokens: number[] } | { hidden: string; seq: number }
export interface ClaimJson {
  id: string
  root: string
  window: number
  hops: Array<{ layers: [number, number]; entries: Array<{ peer: string; receipt: string; end: number }>; inputs: JsonInput }>
}

export function claimToJson(c: Claim): ClaimJson {
  return {
    id: c.id,
    root: c.root,
    window: c.window,
    hops: c.hops.map((h) => ({
      layers: h.layers,
      entries: h.entries.map((e) => ({ peer: e.peer, receipt: bytesToBase64(e.receipt), end: e.end })),
      inputs: 'tokens' in h.inputs ? { tokens: Array.from(h.inputs.tokens) } : { hidden: bytesToBase64(bytesOf(h.inputs.hidden)), seq: h.inputs.seq }
    }))
  }
}

/** Parses and validates a posted claim; throws InputError naming what is wrong. */
export function claimFromJson(j: unknown): Claim {
  const bad = (why: string): never => {
    throw new InputError(`claim: ${why}`)
  }
  const o = j as Partial<ClaimJson>
  if (typeof o !== 'object' || o === null) return bad('must be a JSON object')
  if (typeof o.id !== 'string' || o.id.length === 0 || o.id.length > 128) bad('id must be a string of 1 to 128 characters')
  if (typeof o.root !== 'string' || !/^[0-9a-f]{64}$/.test(o.root)) bad('root must be a 64-hex model root')
  if (!Number.isInteger(o.window) || o.window! < 100 || o.window! > 3_600_000) bad('window must be whole ms from 100 to 3600000')
  if (!Array.isArray(o.hops) || o.hops.length === 0 || o.hops.length > 256) bad('hops must be a non-empty array')
  const int = (v: unknown): boolean => Number.isSafeInteger(v) && (v as number) >= 0
  return {
    id: o.id!,
    root: o.root!,
    window: o.window!,
    hops: o.hops!.map((h, i) => {
      if (!Array.isArray(h?.layers) || h.layers.length !== 2 || !int(h.layers[0]) || !int(h.layers[1]) || h.layers[0] >= h.layers[1])
        bad(`hops[${i}].layers must be [start, end)`)
      if (!Array.isArray(h.entries) || h.entries.length === 0) bad(`hops[${i}].entries must be a non-empty array`)
      const entries = h.entries.map((e, k) => {
        if (typeof e?.peer !== 'string' || typeof e.receipt !== 'string' || !int(e.end)) bad(`hops[${i}].entries[${k}] needs peer, receipt (base64) and end`)
        return { peer: e.peer, receipt: base64ToBytes(e.receipt), end: e.end }
      })
      let inputs: HopInput
      const x = h.inputs as Partial<{ tokens: number[]; hidden: string; seq: number }>
      if (Array.isArray(x?.tokens) && x.tokens.every(int)) inputs = { tokens: x.tokens }
      else if (typeof x?.hidden === 'string' && int(x.seq) && x.seq! > 0) {
        const bytes = base64ToBytes(x.hidden)
        if (bytes.byteLength % (4 * x.seq!) !== 0) bad(`hops[${i}].inputs.hidden does not hold ${x.seq} rows of fp32`)
        inputs = { hidden: new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4), seq: x.seq! }
      } else return bad(`hops[${i}].inputs must be { tokens } or { hidden (base64 fp32), seq }`)
      return { layers: h.layers, entries, inputs }
    })
  }
}

/** Posts claims to a relay's board over HTTP; corrected tokens are generated here by `rerun`. */
export function httpClaimSink(base: string, fetchFn: typeof fetch = fetch): ClaimSink {
  return {
    async submit(claim, rerun) {
      const posted = await fetchFn(new URL('/api/claims', base), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(claimToJson(claim))
      })
      if (!posted.ok)
        throw new TesseraError(
          posted.status === 400 ? 'BAD_CLAIM' : posted.status === 429 || posted.status === 503 ? 'BUSY' : 'UNREACHABLE',
          `POST /api/claims: HTTP ${posted.status}: ${await posted.text()}`
        )
      const events = await (await fetchFn(new URL(`/api/claims/${encodeURIComponent(claim.id)}/events`, base))).text()
      const line = events.split('\n').find((l) => l.startsWith('data:'))
      if (line === undefined) throw new TesseraError('BAD_REPLY', `the relay sent no settlement for claim ${claim.id}`)
      const s = JSON.parse(line.slice(5)) as Settlement
      if (s.status === 'overturned' && rerun !== undefined) s.tokens = await rerun(s.challenges)
      return s
    }
  }
}
