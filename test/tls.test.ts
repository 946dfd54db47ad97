/**
 * A public relay behind TLS, the README's recipe run for real: deploy/nginx.conf (only its
 * ports and certificate paths replaced) terminates HTTPS with a self-signed certificate in front
 * of a `tessera relay --announce /dns4/localhost/tcp/<TLS>/wss`. A native node joins through the
 * wss address; in Chromium, a tab opened at https://localhost:<TLS>/contribute.html serves a
 * shard of random:tiny-llama3:1 and the playground (https://localhost:<TLS>/playground.html)
 * generates through it and the node, with the ids the relay's HTTP API gives. Through the
 * terminator, or the test fails: the tab's circuit address names the relay's wss address, and
 * nginx's access log shows Chromium's and the node's WebSocket upgrades (101) sent on to the
 * relay's libp2p port, and nothing else sent there.
 *
 * One hop is not what it would be on the internet: the playground dials the native node at its
 * own ws://127.0.0.1 address, which an https:// page may do only because loopback counts as a
 * secure origin. A public native node needs a wss:// address of its own for https:// pages.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { request } from 'node:https'
import { createServer } from 'node:net'
import { join } from 'node:path'
import type { Browser, BrowserContext, Page } from 'playwright-core'
import { buildModel } from '../host/model-store.js'
import { openSource } from '../host/source.js'
import { REPO, tempDir } from './helpers/paths.js'
import { api, spawnTessera, waitFor, type Proc } from './helpers/network.js'
import { consoleOf, context, hasChromium, launch, screenshot } from './helpers/browser.js'

const WEB = join(REPO, 'dist', 'web')
const CONF = join(REPO, 'deploy', 'nginx.conf')
const SOURCE = 'random:tiny-llama3:1'
const PROMPT = 'Once upon a time'
const MAX_TOKENS = 8

const NGINX = [process.env.NGINX_PATH, '/usr/sbin/nginx', '/usr/bin/nginx', '/usr/local/sbin/nginx'].find((p) => p !== undefined && existsSync(p))
// CI installs nginx and Chromium (.ci/run), so there a missing one fails rather than skips.
const skip = (NGINX === undefined || !hasChromium()) && process.env.CI !== 'true'
if (skip) console.warn('test/tls.test.ts skipped: it needs nginx (apt-get install nginx) and Chromium (apt-get install chromium)')

/** A port nothing listens on now (the relay's and nginx's ports must be known before either starts). */
async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })
}

/** deploy/nginx.conf with `from` replaced by `to`, each exactly once: a changed file fails here, not silently. */
function substitute(conf: string, pairs: Array<[string, string]>): string {
  for (const [from, to] of pairs) {
    expect(conf.split(from).length - 1, `deploy/nginx.conf should contain ${JSON.stringify(from)} once`).toBe(1)
    conf = conf.replace(from, to)
  }
  return conf
}

/** A GET over TLS that trusts only the test's certificate (no redirects followed). */
async function httpsGet(url: string, ca: string): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return await new Promise((resolve, reject) => {
    request(url, { ca }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => {
        body += d
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
    })
      .on('error', reject)
      .end()
  })
}

/** POSTs a streamed completion over TLS; returns its chunks' texts and how many separate reads brought them. */
async function httpsStream(url: string, ca: string, body: unknown): Promise<{ texts: string[]; reads: number; done: boolean }> {
  return await new Promise((resolve, reject) => {
    const req = request(url, { ca, method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      const out = { texts: [] as string[], reads: 0, done: false }
      let buffer = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => {
        buffer += d
        let counted = false
        for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
          const line = buffer.slice(0, nl).trim()
          buffer = buffer.slice(nl + 1)
          if (!line.startsWith('data:')) continue
          const data = line.slice(5).trim()
          if (data === '[DONE]') {
            out.done = true
            continue
          }
          const text = (JSON.parse(data) as { choices: Array<{ text?: string }> }).choices[0]?.text
          if (text === undefined || text === '') continue
          out.texts.push(text)
          if (!counted) out.reads++
          counted = true
        }
      })
      res.on('end', () => resolve(out))
    })
    req.on('error', reject)
    req.end(JSON.stringify(body))
  })
}

interface AccessLine {
  status: number
  request: string
  upgrade: string
  upstream: string
  agent: string
}

describe.skipIf(skip)('a relay behind a TLS terminator (deploy/nginx.conf)', () => {
  let dir: string
  const procs: Proc[] = []
  let nginx: ChildProcess | undefined
  let nginxLog: string[] = []
  let browser: Browser
  let ctx: BrowserContext
  let http: string
  let origin: string
  let cert: string
  let ports: { tls: number; plain: number; http: number; p2p: number }
  let relayPeer: string
  let tab: { page: Page; log: string[]; peer: string }

  const accessLog = (): AccessLine[] =>
    existsSync(join(dir, 'access.log'))
      ? readFileSync(join(dir, 'access.log'), 'utf8')
          .split('\n')
          .filter((l) => l !== '')
          .map((l) => JSON.parse(l) as AccessLine)
      : []

  beforeAll(async () => {
    if (!existsSync(join(WEB, 'contribute.html'))) throw new Error('dist/web is missing: npm test builds it (vite build) first')
    if (NGINX === undefined) throw new Error('nginx is missing: apt-get install nginx (.ci/run installs it)')
    dir = tempDir('tls')
    // The certificate: a self-signed one for localhost, trusted by nothing but this test (and the native node, below).
    cert = join(dir, 'cert.pem')
    const key = join(dir, 'key.pem')
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
        '-days',
        '1',
        '-keyout',
        key,
        '-out',
        cert
      ],
      { stdio: 'pipe' }
    )

    const model = tempDir('tls-model')
    const src = await openSource(SOURCE)
    await buildModel(src.weights, model, { source: SOURCE, name: src.name, shards: 2, tokenizer: src.tokenizer, tokenizerConfig: src.tokenizerConfig })

    const free = new Set<number>()
    while (free.size < 4) free.add(await freePort())
    const [tls, plain, httpPort, p2p] = [...free]
    ports = { tls, plain, http: httpPort, p2p }
    origin = `https://localhost:${ports.tls}`
    const relay = await spawnTessera([
      'relay',
      '--port',
      String(ports.http),
      '--p2p-port',
      String(ports.p2p),
      '--announce',
      `/dns4/localhost/tcp/${ports.tls}/wss`,
      '--model',
      model,
      '--web',
      WEB,
      '--ledger-file',
      join(tempDir('tls-ledger'), 'ledger.sqlite')
    ])
    procs.push(relay)
    http = relay.ready.http
    relayPeer = relay.ready.peer

    // deploy/nginx.conf as an operator installs it, inside an http { } block; only the marked values change.
    const site = substitute(readFileSync(CONF, 'utf8'), [
      ['server 127.0.0.1:8080;', `server 127.0.0.1:${ports.http};`],
      ['server 127.0.0.1:9090;', `server 127.0.0.1:${ports.p2p};`],
      ['listen 443 ssl http2;', `listen 127.0.0.1:${ports.tls} ssl http2;`],
      ['listen 80;', `listen 127.0.0.1:${ports.plain};`],
      ['/etc/letsencrypt/live/relay.example.org/fullchain.pem', cert],
      ['/etc/letsencrypt/live/relay.example.org/privkey.pem', key]
    ])
    writeFileSync(join(dir, 'tessera.conf'), site)
    const temp = join(dir, 'temp')
    mkdirSync(temp)
    // Unprivileged-friendly: in the foreground, one process (no switch to a worker user), every path under the temp dir.
    writeFileSync(
      join(dir, 'nginx.conf'),
      `daemon off;
master_process off;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} info;
events { worker_connections 512; }
http {
  log_format tessera escape=json '{"status":$status,"request":"$request","upgrade":"$http_upgrade","upstream":"$upstream_addr","agent":"$http_user_agent"}';
  access_log ${join(dir, 'access.log')} tessera;
  client_body_temp_path ${temp}/body;
  proxy_temp_path ${temp}/proxy;
  fastcgi_temp_path ${temp}/fastcgi;
  uwsgi_temp_path ${temp}/uwsgi;
  scgi_temp_path ${temp}/scgi;
  include ${join(dir, 'tessera.conf')};
}
`
    )
    const args = ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')]
    try {
      execFileSync(NGINX, [...args, '-t'], { stdio: 'pipe' })
    } catch (err) {
      throw new Error(`nginx -t refused deploy/nginx.conf:\n${(err as { stderr?: Buffer }).stderr?.toString() ?? (err as Error).message}`)
    }
    nginx = spawn(NGINX, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    nginxLog = []
    nginx.stderr!.on('data', (d: Buffer) => nginxLog.push(d.toString()))
    nginx.stdout!.on('data', (d: Buffer) => nginxLog.push(d.toString()))
    await waitFor(async () => (await httpsGet(`${origin}/api/relay`, readFileSync(cert, 'utf8'))).status === 200, 10_000).catch((err: Error) => {
      throw new Error(`nginx did not answer on ${origin}: ${err.message}\n${nginxLog.join('')}\n${readFileSync(join(dir, 'error.log'), 'utf8')}`)
    })

    // A native node joins as one on another machine would: through the terminator, at the address the relay gives out.
    // It trusts the test's certificate the way Node lets an operator add one (NODE_EXTRA_CA_CERTS, read at start-up).
    const saved = process.env.NODE_EXTRA_CA_CERTS
    process.env.NODE_EXTRA_CA_CERTS = cert
    try {
      procs.push(await spawnTessera(['node', '--relay', relay.ready.relay, '--model', model, '--layers', '0-2']))
    } finally {
      if (saved === undefined) delete process.env.NODE_EXTRA_CA_CERTS
      else process.env.NODE_EXTRA_CA_CERTS = saved
    }
    await waitFor(async () => (await api(http, '/api/network')).peers.length === 1)

    browser = await launch()
    ctx = await context(browser, origin, { ignoreHTTPSErrors: true })
  }, 180_000)

  afterAll(async () => {
    await browser?.close()
    for (const p of procs) p.proc.kill('SIGKILL')
    nginx?.kill('SIGKILL')
  })

  it('serves the pages and the API over https, gives out its wss address, and redirects plain http', async () => {
    const ca = readFileSync(cert, 'utf8')
    const relay = JSON.parse((await httpsGet(`${origin}/api/relay`, ca)).body)
    expect(relay.addrs).toEqual([`/dns4/localhost/tcp/${ports.tls}/wss/p2p/${relayPeer}`])
    expect((await httpsGet(`${origin}/`, ca)).body).toContain('<title>Tessera</title>')
    expect((await httpsGet(`${origin}/contribute.html`, ca)).body).toContain('id="start"')
    const redirect = await fetch(`http://localhost:${ports.plain}/contribute.html?x=1`, { redirect: 'manual' })
    expect({ status: redirect.status, location: redirect.headers.get('location') }).toEqual({ status: 301, location: 'https://localhost/contribute.html?x=1' })
  })

  it('a tab contributes from https://…/contribute.html over wss, and serves the relay’s own requests', async () => {
    const page = await ctx.newPage()
    const log = consoleOf(page)
    await page.goto(`${origin}/contribute.html?layers=2-4&backend=wasm`)
    await page.click('#start')
    await page.waitForFunction(() => ['serving', 'refused', 'error'].includes(document.querySelector('#status')?.getAttribute('data-state') ?? ''), undefined, {
      timeout: 120_000
    })
    const state = await page.getAttribute('#status', 'data-state')
    if (state !== 'serving') throw new Error(`contributor tab ended in state ${state}: ${await page.textContent('#error')}\n${log.join('\n')}`)
    const peer = (await page.textContent('#stat-peer'))!.trim()
    tab = { page, log, peer }

    // The relay lists the tab, reachable at a circuit through the relay's wss address: the one the tab dialled.
    let record: { peer: string; device: string; layers: number[]; addrs: string[] } | undefined
    await waitFor(async () => {
      record = (await api(http, '/api/network')).peers.find((p: { peer: string }) => p.peer === peer)
      return record !== undefined
    })
    expect(record!.device).toBe('wasm')
    expect(record!.layers).toEqual([2, 4])
    const circuits = record!.addrs.filter((a) => a.includes('/p2p-circuit'))
    expect(circuits.length, record!.addrs.join(' ')).toBeGreaterThan(0)
    for (const a of circuits) expect(a).toContain(`/dns4/localhost/tcp/${ports.tls}/wss/p2p/${relayPeer}/p2p-circuit`)

    await waitFor(async () => (await api(http, '/api/network')).models[0]?.coverage.every((c: number) => c > 0))
    // The relay's own client (HTTP API, straight to the relay) reaches layers [2,4) only through the tab.
    const direct = await api(http, '/v1/completions', { prompt: PROMPT, max_tokens: MAX_TOKENS, temperature: 0 })
    expect(direct.tessera.tokens.length).toBeGreaterThan(0)
    expect(JSON.stringify(direct.tessera.route)).toContain(peer)
    await page.waitForFunction(() => Number((document.querySelector('#stats') as HTMLElement | null)?.dataset.requests ?? '0') > 0, undefined, {
      timeout: 10_000
    })
    await screenshot(page, 'tls-contribute')
  }, 180_000)

  it('the playground at https://…/playground.html generates through the tab, with the ids the relay’s HTTP API gives', async () => {
    const expected = await api(http, '/v1/completions', { prompt: PROMPT, max_tokens: MAX_TOKENS, temperature: 0 })
    const page = await ctx.newPage()
    const log = consoleOf(page)
    await page.goto(`${origin}/playground.html`)
    await page.waitForSelector('#chat:not([disabled])', { timeout: 60_000 })
    await page.fill('#prompt-ids', '')
    await page.fill('#prompt', PROMPT)
    await page.fill('#max-tokens', String(MAX_TOKENS))
    await page.click('#generate')
    await page.waitForFunction(
      () => {
        const o = document.querySelector('#output')
        return o?.getAttribute('data-done') === 'true' || o?.hasAttribute('data-error') === true
      },
      undefined,
      { timeout: 120_000 }
    )
    const error = await page.getAttribute('#output', 'data-error')
    if (error !== null) throw new Error(`playground: ${error}\n${log.join('\n')}`)
    const tokens = JSON.parse((await page.getAttribute('#output', 'data-tokens'))!)
    expect(tokens).toEqual(expected.tessera.tokens)
    expect(await page.getAttribute('#output', 'data-text')).toBe(expected.choices[0].text)
    const route = await page.$$eval('#route [data-peer]', (els) => els.map((e) => e.getAttribute('data-peer')))
    expect(route).toContain(tab.peer)
    await screenshot(page, 'tls-playground')
    await screenshot(tab.page, 'tls-contribute')

    // Streamed through nginx: the same text, in more than one read (not held back until the end).
    const streamed = await httpsStream(`${origin}/v1/completions`, readFileSync(cert, 'utf8'), {
      prompt: PROMPT,
      max_tokens: MAX_TOKENS,
      temperature: 0,
      stream: true
    })
    expect(streamed.done).toBe(true)
    expect(streamed.texts.join('')).toBe(expected.choices[0].text)
    expect(streamed.reads, JSON.stringify(streamed.texts)).toBeGreaterThan(1)
  }, 180_000)

  it('every libp2p connection went through nginx: its log shows the WebSocket upgrades (101) sent to the libp2p port', async () => {
    // nginx logs a request when it ends, an upgraded one when its WebSocket closes: close the tabs and stop the node.
    await ctx.close()
    for (const p of procs.slice(1)) p.proc.kill('SIGTERM')
    const upgrades = (agent: (a: string) => boolean): AccessLine[] => accessLog().filter((l) => l.status === 101 && agent(l.agent))
    // Two from Chromium (the contribute tab and the playground, each dialling the relay's wss address once), one from the native node.
    await waitFor(async () => upgrades((a) => a.includes('Chrome')).length >= 2 && upgrades((a) => !a.includes('Chrome')).length >= 1, 20_000).catch(
      (err: Error) => {
        throw new Error(
          `${err.message}: nginx logged\n${accessLog()
            .map((l) => JSON.stringify(l))
            .join('\n')}`
        )
      }
    )
    for (const u of upgrades(() => true)) expect(u).toMatchObject({ request: 'GET / HTTP/1.1', upgrade: 'websocket', upstream: `127.0.0.1:${ports.p2p}` })
    // And nothing else reached the libp2p port, nor did an upgrade reach the HTTP port.
    for (const l of accessLog()) expect(l.upstream === `127.0.0.1:${ports.p2p}`, JSON.stringify(l)).toBe(l.status === 101)
  }, 60_000)
})
