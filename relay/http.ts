/**
 * The relay's HTTP server as a web-standard Hono app: the network view, model files by hash,
 * the OpenAI-compatible API, Prometheus metrics and the built web pages. `app.fetch` runs
 * without a server (tests); `serveHttp` binds it to a port with @hono/node-server.
 */
import type { Server } from 'node:http'
import { Hono, type Context } from 'hono'
import { bodyLimit } from 'hono/body-limit'
import { cors } from 'hono/cors'
import { routePath } from 'hono/route'
import { serve } from '@hono/node-server'
import { serveStatic } from '@hono/node-server/serve-static'
import { getConnInfo } from '@hono/node-server/conninfo'
import { Registry } from 'prom-client'
import type { Generator, NetworkView } from '../shared/client/types.js'
import type { Manifest } from '../shared/manifest.js'
import { relayMetrics } from './metrics.js'
import { reporterAddress } from './registry.js'
import { fileResponse, indexFiles } from './shards.js'
import { completionHandler, errorResponse } from './completions.js'
import { BadRequest, jsonError } from './errors.js'
import { HTTP_DEFAULTS, RELAY_DEFAULTS, type IceServer } from './config.js'
import { parseJson } from './openai.js'
import type { ModelText } from '../shared/text/model-text.js'
import type { Evidence, Ledger } from '../shared/ledger/types.js'
import { base64ToBytes } from '../shared/base64.js'
import type { Claim, ClaimBoard } from '../shared/optimistic/board.js'
import { claimFromJson } from '../shared/optimistic/claim-sink.js'
import { InputError, TesseraError } from '../shared/errors.js'
import { postLimit } from '../shared/optimistic/rate.js'
import { logger } from '../shared/log.js'
import { streamSSE } from 'hono/streaming'
import type { ZkModelEntry } from '../shared/zk/types.js'
import type { SamplingEntry } from '../shared/zk/argmax.js'
import type { ZkResult } from '../shared/client/zk.js'
import { bytesToBase64 } from '../shared/base64.js'

const { maxClaimChars, maxZkInput, auditEntries } = HTTP_DEFAULTS
/** The message of anything thrown, for a reply that quotes it. */
const messageOf = (err: unknown): string => (err instanceof Error ? err.message : String(err))

const log = logger('tessera:relay:http')

export type LedgerBackend = { kind: 'sqlite' } | { kind: 'evm'; chainId: number; contract: string }

export interface HttpDeps {
  generator: Generator
  network: () => NetworkView
  /** The other relays of the federation (peer ids), for /api/network. */
  relays?: () => string[]
  /** The same relays with the addresses they listen on (GET /api/relay), for tabs. */
  otherRelays?: () => Promise<Array<{ peer: string; addrs: string[] }>>
  /** Model directories whose files the relay serves. */
  models: Array<{ dir: string; manifest: Manifest }>
  /** The built web/ directory (dist/web), served at `/`. */
  webRoot?: string
  /** Where the relay's metrics live; a fresh Registry when absent. */
  metrics?: Registry
  /** The relay's libp2p addresses, for tabs that join the network (`GET /api/relay`). */
  relayAddrs?: () => string[]
  /** STUN/TURN servers for tabs' WebRTC, passed on by GET /api/relay. */
  iceServers?: IceServer[]
  /** A model's text (tokenizer, chat template, EOS) by name or root (whatever the request's `model` says). */
  text?: (model: string) => ModelText | undefined
  /** The verification layer's stakes, reputation and audit log (`GET /api/ledger`). */
  ledger?: Ledger
  /** Where that ledger lives: a SQLite file, or a contract on a chain. */
  ledgerBackend?: LedgerBackend
  /** Called after evidence changed the ledger (the relay's client refreshes its view). */
  onLedgerChange?: () => Promise<void>
  /** Optimistic claims and their settlements. */
  board?: ClaimBoard
  /** ZK models: their published entries, and proven inferences (verified before they are returned). */
  zk?: { models: () => ZkModelEntry[]; infer: (model: string, input: number[]) => Promise<ZkResult>; sampling?: () => SamplingEntry[] }
  /** The largest body a POST to /v1/* or /api/* may have, in bytes (default HTTP_DEFAULTS.maxBodyBytes); a claim may have maxClaimChars. */
  maxBodyBytes?: number
  /** A client could not reach `peer` (`POST /api/peers/:peer/unreachable`); true when the registry dropped its record. */
  unreachable?: (peer: string, reporter: string) => boolean
}

/** A body limit whose 413 is the API's JSON error, saying the limit and how to raise it. */
function limitBody(maxBytes: number, raise: string) {
  const mib = (maxBytes / 2 ** 20).toFixed(maxBytes % 2 ** 20 === 0 ? 0 : 2)
  return bodyLimit({
    maxSize: maxBytes,
    // The rest of the body is never read, so the connection cannot carry another request: say so, or a client reusing it fails.
    onError: () =>
      jsonError(413, `the request body is over ${mib} MiB (${maxBytes} bytes): send less, or ${raise}`, 'too_large', new Headers({ Connection: 'close' }))
  })
}

/** Prefixes third-party pages call, so they get CORS. */
const PUBLIC = ['/v1/*', '/api/*', '/shards/*', '/models/*', '/sdk.js', '/assets/*', '/ort/*']

export function createHttpApp(deps: HttpDeps): Hono {
  const metrics = relayMetrics(deps.metrics ?? new Registry(), deps.network)
  const files = indexFiles(deps.models)
  const manifests = new Map(deps.models.map((m) => [m.manifest.root, m.manifest]))
  const app = new Hono()

  app.use('*', async (c, next) => {
    await next()
    // Cross-origin isolation: a page served here may run onnxruntime-web with WASM threads,
    // which need SharedArrayBuffer, which needs these two on the document and its resources.
    c.res.headers.set('Cross-Origin-Opener-Policy', 'same-origin')
    c.res.headers.set('Cross-Origin-Embedder-Policy', 'require-corp')
    const path = routePath(c)
    const route = path !== '*' && path !== '/*' ? path : c.res.status === 404 ? 'unmatched' : 'static'
    metrics.requests.inc({ method: c.req.method, route, status: String(c.res.status) })
  })

  const publicCors = cors({ origin: '*', exposeHeaders: ['Content-Length', 'Content-Range', 'Accept-Ranges', 'ETag', 'Retry-After'], maxAge: 86400 })
  for (const prefix of PUBLIC) {
    app.use(prefix, publicCors)
    app.use(prefix, async (c, next) => {
      await next()
      // Lets an isolated (COEP) page on another origin load these even without CORS mode.
      c.res.headers.set('Cross-Origin-Resource-Policy', 'cross-origin')
    })
  }

  // Every POST body is bounded before anything reads it; after CORS, so a page can read the 413.
  // A claim carries every row its hops were fed, so its bound is the claim's.
  const maxBody = deps.maxBodyBytes ?? HTTP_DEFAULTS.maxBodyBytes
  const raise = 'start the relay with a larger --max-body'
  const bodies = limitBody(maxBody, raise)
  const claimBodies = limitBody(Math.max(maxBody, maxClaimChars), raise)
  app.use('/v1/*', bodies)
  app.use('/api/*', async (c, next) => await (c.req.path === '/api/claims' ? claimBodies : bodies)(c, next))

  // The relays this one shares records with beside the network it sees: every relay of a federation lists the same peers.
  app.get('/api/network', (c) => c.json({ ...deps.network(), ...(deps.relays !== undefined ? { relays: deps.relays() } : {}) }))
  // The relay's own addresses, and its federation's: a tab keeps a reservation on each and announces to each.
  app.get('/api/relay', async (c) =>
    c.json({ addrs: deps.relayAddrs?.() ?? [], iceServers: deps.iceServers ?? [], relays: (await deps.otherRelays?.()) ?? [] })
  )
  // Models whose files this relay serves: what a tab can download and contribute to.
  app.get('/api/models', (c) =>
    c.json({
      models: deps.models.map(({ manifest: m }) => ({ name: m.name, root: m.root, layers: m.config.nLayers, shards: m.shards.length, dtype: m.dtype }))
    })
  )

  // A client whose dials to a listed peer fail says so; the record goes once enough distinct addresses did (relay/registry.ts).
  app.post('/api/peers/:peer/unreachable', (c) => {
    if (deps.unreachable === undefined) return jsonError(404, 'this relay keeps no registry', 'registry_not_found')
    const dropped = deps.unreachable(c.req.param('peer'), remoteAddress(c))
    return c.json({ peer: c.req.param('peer'), dropped })
  })

  app.get('/api/ledger', async (c) => {
    if (deps.ledger === undefined) return jsonError(404, 'this relay keeps no ledger', 'ledger_not_found')
    const [standings, audit, chain] = await Promise.all([deps.ledger.standings(), deps.ledger.audit(), deps.ledger.verifyAudit()])
    return c.json({ backend: deps.ledgerBackend ?? { kind: 'sqlite' }, standings, audit: audit.slice(-auditEntries), chainOk: chain.ok })
  })

  // Anyone may hand in evidence (a browser client that caught a peer): the ledger re-checks it,
  // so a false accusation changes nothing but the log. Evidence with the hop's inputs may cost a
  // re-execution (shared/verify/reexec.ts): those reports are limited per remote address (429).
  // The body limit bounds the inputs.
  const reexecPosts = postLimit({ perMinute: HTTP_DEFAULTS.reexecPerMinute, burst: HTTP_DEFAULTS.reexecBurst })
  app.post('/api/evidence', async (c) => {
    if (deps.ledger === undefined) return jsonError(404, 'this relay keeps no ledger', 'ledger_not_found')
    const text = await c.req.text()
    let e: Evidence
    let reporter: string
    try {
      const b = parseJson(text) as Record<string, unknown>
      if (!Array.isArray(b.receipts) || !b.receipts.every((r) => typeof r === 'string')) throw new InputError('receipts must be an array of base64 strings')
      const detail = (b.detail ?? {}) as Record<string, unknown>
      const inputs = b.inputs as Evidence['inputs']
      if (inputs !== undefined && (typeof inputs !== 'object' || inputs === null || Array.isArray(inputs)))
        throw new InputError('inputs must be an object { tokens | hidden, seq }')
      e = {
        kind: b.kind as Evidence['kind'],
        accused: b.accused as string,
        receipts: b.receipts.map(base64ToBytes),
        detail,
        ...(inputs !== undefined ? { inputs } : {})
      }
      reporter = typeof b.reporter === 'string' ? b.reporter : 'anonymous'
    } catch (err) {
      const why = `evidence must be JSON { kind, accused, receipts: [base64…], detail?, reporter?, inputs? }: ${messageOf(err)}`
      return errorResponse(c, new BadRequest(why, 'invalid_evidence'))
    }
    const wait = e.inputs === undefined ? 0 : reexecPosts.take(remoteAddress(c))
    if (wait > 0) {
      const headers = new Headers({ 'Retry-After': String(Math.max(1, Math.ceil(wait / 1000))) })
      return jsonError(429, `too many evidence reports to re-execute from this address: retry in ${Math.ceil(wait / 1000)} s`, 'rate_limited', headers)
    }
    const outcome = await deps.ledger.slash(e, reporter)
    await deps.onLedgerChange?.()
    return c.json(outcome)
  })

  // Optimistic results: a claim's state, and an SSE stream that sends its settlement once.
  const noClaims = { pending: 0, final: 0, overturned: 0, unverified: 0, challenges: 0, frivolous: 0, meanFinalMs: 0 }
  app.get('/api/claims', (c) => c.json(deps.board?.stats() ?? noClaims))
  // A client outside the relay (a tab, the CLI) posts its optimistic claim; the board checks every
  // receipt (a forged one is a 400) and audits it. Posts are limited per remote address (429), and
  // the board's pending claims are bounded (503): each is held until it settles.
  const claimPosts = postLimit({ perMinute: HTTP_DEFAULTS.claimsPerMinute, burst: HTTP_DEFAULTS.claimBurst })
  const retryAfter = (ms: number): Headers => new Headers({ 'Retry-After': String(Math.max(1, Math.ceil(ms / 1000))) })
  app.post('/api/claims', async (c) => {
    const board = deps.board
    if (board === undefined) return jsonError(404, 'this relay keeps no claim board', 'board_not_found')
    const wait = claimPosts.take(remoteAddress(c))
    if (wait > 0) return jsonError(429, `too many claims from this address: retry in ${Math.ceil(wait / 1000)} s`, 'rate_limited', retryAfter(wait))
    const text = await c.req.text()
    if (text.length > maxClaimChars) return jsonError(413, `a claim over ${maxClaimChars} characters`, 'too_large')
    let claim: Claim
    try {
      claim = claimFromJson(parseJson(text))
      if (board.get(claim.id) !== undefined) throw new InputError(`claim ${claim.id} was already posted`)
    } catch (err) {
      return errorResponse(c, new BadRequest(messageOf(err), 'invalid_claim'))
    }
    try {
      const { settled } = await board.post(claim)
      settled.catch((err: Error) => {
        log.warn(`claim ${claim.id}: ${err.message}`)
      })
    } catch (err) {
      if (err instanceof TesseraError && err.code === 'BUSY') return jsonError(503, err.message, 'board_full', retryAfter(60_000))
      return errorResponse(c, err instanceof TesseraError && err.code === 'BAD_CLAIM' ? err : new BadRequest(messageOf(err), 'invalid_claim'))
    }
    return c.json({ claim: claim.id, status: 'pending' }, 202)
  })

  app.get('/api/claims/:id', (c) => {
    const status = deps.board?.get(c.req.param('id'))
    if (status === undefined) return jsonError(404, `no claim ${c.req.param('id')} on this relay`, 'claim_not_found')
    return c.json(status)
  })
  app.get('/api/claims/:id/events', (c) => {
    const board = deps.board
    if (board?.get(c.req.param('id')) === undefined) return jsonError(404, `no claim ${c.req.param('id')} on this relay`, 'claim_not_found')
    return streamSSE(c, async (sse) => {
      const s = await board.settled(c.req.param('id'))
      await sse.writeSSE({ event: 'settlement', data: JSON.stringify(s) })
    })
  })

  // Zero-knowledge mode: what a client needs to check proofs itself, and proven inferences.
  // Sampling entries: the keys that check a proved greedy token (tessera_prove_sampling), one per vocabulary size.
  app.get('/api/zk/models', (c) => c.json({ models: deps.zk?.models() ?? [], sampling: deps.zk?.sampling?.() ?? [] }))
  app.post('/api/zk/infer', async (c) => {
    if (deps.zk === undefined) return jsonError(404, 'this relay publishes no ZK models', 'zk_not_found')
    let body: { model?: unknown; input?: unknown }
    try {
      body = parseJson(await c.req.text()) as typeof body
    } catch (err) {
      return errorResponse(c, err)
    }
    if (typeof body !== 'object' || body === null || typeof body.model !== 'string' || !Array.isArray(body.input) || body.input.length > maxZkInput) {
      return errorResponse(c, new BadRequest('expected { model, input: [int8…] }', 'invalid_request'))
    }
    try {
      const r = await deps.zk.infer(body.model, body.input as number[])
      return c.json({ ...r, reply: bytesToBase64(r.reply), verified: true })
    } catch (err) {
      return errorResponse(c, err)
    }
  })

  app.get('/models/:root/manifest.json', (c) => {
    const manifest = manifests.get(c.req.param('root').toLowerCase())
    if (manifest === undefined) return jsonError(404, `no model with root ${c.req.param('root')} on this relay`, 'model_not_found')
    return c.json(manifest)
  })

  app.get('/shards/:sha256', async (c) => {
    const file = files.get(c.req.param('sha256').toLowerCase())
    if (file === undefined) return jsonError(404, `no shard file with sha256 ${c.req.param('sha256')} on this relay`, 'shard_not_found')
    const res = await fileResponse(file, c.req.raw)
    if (c.req.method === 'GET' && (res.status === 200 || res.status === 206))
      metrics.fileBytes.inc({ via: 'http' }, Number(res.headers.get('Content-Length') ?? 0))
    return res
  })

  app.get('/v1/models', (c) =>
    c.json({
      object: 'list',
      data: deps.network().models.map((m) => ({
        id: m.name,
        object: 'model',
        created: 0,
        owned_by: 'tessera',
        tessera: { root: m.root, layers: m.layers, coverage: m.coverage }
      }))
    })
  )

  app.post('/v1/completions', completionHandler(deps, metrics, 'completion'))
  app.post('/v1/chat/completions', completionHandler(deps, metrics, 'chat'))

  app.get('/metrics', async (c) => c.body(await metrics.registry.metrics(), 200, { 'Content-Type': metrics.registry.contentType }))

  if (deps.webRoot !== undefined) app.use('*', serveStatic({ root: deps.webRoot }))

  app.notFound((c) => jsonError(404, `nothing at ${c.req.method} ${c.req.path}`, 'not_found'))
  app.onError((err, c) => errorResponse(c, err))
  return app
}

/** The caller's address, one reporter however many requests it sends; 'local' without a socket (app.fetch in tests). */
function remoteAddress(c: Context): string {
  try {
    const ip = getConnInfo(c).remote.address
    return ip === undefined ? 'local' : reporterAddress(ip)
  } catch {
    return 'local'
  }
}

export interface HttpServer {
  port: number
  close(): Promise<void>
}

/** Serves `app` on `host:port` (port 0 picks a free one) and resolves once it listens. */
export async function serveHttp(app: Hono, { port, host = RELAY_DEFAULTS.host }: { port: number; host?: string }): Promise<HttpServer> {
  return await new Promise((resolve, reject) => {
    const server = serve({ fetch: app.fetch, port, hostname: host }, (info) => {
      server.off('error', reject)
      resolve({
        port: info.port,
        close: async () =>
          await new Promise<void>((resolve, reject) => {
            server.close((err) => {
              if (err !== undefined) reject(err)
              else resolve()
            })
            // Open SSE streams would hold close() forever; cutting them aborts their generations.
            ;(server as Server).closeAllConnections()
          })
      })
    }) as Server
    server.once('error', reject)
  })
}
