/**
 * Real processes on loopback: a relay and native nodes started as `tessera relay` / `tessera
 * node` children, exactly as operators run them.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { join } from 'node:path'
import { REPO, tempDir } from './paths.js'

export interface Proc {
  proc: ChildProcess
  ready: Record<string, any>
  log: string[]
}

export async function spawnTessera(args: string[], timeoutMs = 60_000, env?: Record<string, string>): Promise<Proc> {
  const proc = spawn(process.execPath, [join(REPO, 'bin', 'tessera.js'), ...args], {
    cwd: REPO,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(env !== undefined ? { env: { ...process.env, ...env } } : {})
  })
  const log: string[] = []
  createInterface({ input: proc.stderr! }).on('line', (l) => log.push(l))
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL')
      reject(new Error(`tessera ${args[0]} not ready in ${timeoutMs} ms:\n${log.join('\n')}`))
    }, timeoutMs)
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      if (!line.startsWith('{"ready":true')) return
      clearTimeout(timer)
      resolve({ proc, ready: JSON.parse(line), log })
    })
    proc.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`tessera ${args[0]} exited (${code}) before ready:\n${log.join('\n')}`))
    })
  })
}

export interface TestNetwork {
  relay: Proc
  relayAddr: string
  http: string
  nodes: Proc[]
  addNode(layers: string, extra?: string[]): Promise<Proc>
  stop(): Promise<void>
}

/** `tessera relay` on any free ports serving `model`, its ledger in a fresh temp dir unless given; `extra` flags after. */
export async function spawnRelay(model: string, o: { ledger?: string; extra?: string[] } = {}): Promise<Proc> {
  return await spawnTessera([
    'relay',
    '--port',
    '0',
    '--p2p-port',
    '0',
    '--model',
    model,
    '--ledger-file',
    o.ledger ?? join(tempDir('ledger'), 'ledger.sqlite'),
    ...(o.extra ?? [])
  ])
}

/** Starts a relay serving `model` (its ledger in a fresh temp dir unless given) and one node per layer range; resolves when all are listed. */
export async function startNetwork(model: string, layers: string[], o: { ledger?: string } = {}): Promise<TestNetwork> {
  // An open test network: every node is staked on its first announce, so the slashable can be slashed.
  const relay = await spawnRelay(model, { ledger: o.ledger, extra: ['--join-stake', '100'] })
  const net: TestNetwork = {
    relay,
    relayAddr: relay.ready.relay,
    http: relay.ready.http,
    nodes: [],
    async addNode(range, extra = []) {
      const n = await spawnTessera(['node', '--relay', relay.ready.relay, '--model', model, '--layers', range, ...extra])
      net.nodes.push(n)
      await waitFor(async () => (await api(net.http, '/api/network')).peers.some((p: { peer: string }) => p.peer === n.ready.peer))
      return n
    },
    async stop() {
      for (const p of [...net.nodes, relay]) if (p.proc.exitCode === null) p.proc.kill('SIGKILL')
    }
  }
  try {
    await Promise.all(layers.map(async (l) => await net.addNode(l)))
  } catch (err) {
    await net.stop()
    throw err
  }
  return net
}

export async function api(http: string, path: string, body?: unknown): Promise<any> {
  const res = await fetch(
    http + path,
    body === undefined ? undefined : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }
  )
  const json = await res.json()
  if (!res.ok) throw new Error(`${path}: ${res.status} ${JSON.stringify(json)}`)
  return json
}

export async function waitFor(check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!(await check().catch(() => false))) {
    if (Date.now() > until) throw new Error('timed out waiting for a condition')
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
}

/** Reads an SSE response as parsed `data:` objects, calling `onChunk` for each as it arrives. */
export async function readSse(res: Response, onChunk: (chunk: any) => void): Promise<any[]> {
  const chunks: any[] = []
  const decoder = new TextDecoder()
  let buffer = ''
  for await (const part of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(part, { stream: true })
    for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
      const line = buffer.slice(0, nl).trim()
      buffer = buffer.slice(nl + 1)
      if (!line.startsWith('data:')) continue
      const data = line.slice(5).trim()
      if (data === '[DONE]') return chunks
      const chunk = JSON.parse(data)
      chunks.push(chunk)
      onChunk(chunk)
    }
  }
  return chunks
}
