/**
 * Restarts keep identities: a relay killed with SIGKILL and started again with the same key file
 * and ports has the same peer id, so the nodes' periodic announces (to a multiaddr naming that id)
 * reach it again and the network comes back with no operator action. Without --key every start
 * is a new identity, which is what left a restarted network at 0 peers.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createServer } from 'node:net'
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { buildModel } from '../../host/model-store.js'
import { PEER_DEFAULTS } from '../../shared/node/config.js'
import { reference, stories } from '../helpers/reference.js'
import { tempDir } from '../helpers/paths.js'
import { api, spawnTessera, waitFor, type Proc } from '../helpers/network.js'
import { tessera } from '../helpers/cli.js'
import { writeFileSync } from 'node:fs'

const cases = reference()
/** The bound: a node is back within 30 s (one announce period is 10 s). */
const RECOVERY_MS = 30_000
let model: string
let dir: string
const procs: Proc[] = []

/** A port free now (the OS picks it), so the restarted relay can listen on the same one. */
async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

async function spawn(args: string[]): Promise<Proc> {
  const p = await spawnTessera(args)
  procs.push(p)
  return p
}

async function kill9(p: Proc): Promise<void> {
  if (p.proc.exitCode !== null || p.proc.signalCode !== null) return
  const exited = new Promise((resolve) => p.proc.once('exit', resolve))
  p.proc.kill('SIGKILL')
  await exited
}

/** Whether GET /api/network lists every one of `ids`. */
async function listsAll(http: string, ids: string[]): Promise<boolean> {
  const peers = new Set((await api(http, '/api/network')).peers.map((p: { peer: string }) => p.peer))
  return ids.every((id) => peers.has(id))
}

/** A greedy generation through the network, with the reference's ids. */
async function generates(http: string): Promise<void> {
  const c = cases[0]
  const r = await api(http, '/v1/completions', { prompt: c.prompt, max_tokens: c.decisive_prefix, temperature: 0 })
  expect(r.tessera.tokens).toEqual(c.greedy.slice(0, c.decisive_prefix))
  expect(r.tessera.route.hops.map((h: { layers: number[] }) => h.layers)).toEqual([
    [0, 2],
    [2, 5]
  ])
}

beforeAll(async () => {
  dir = tempDir('relay-restart')
  model = join(dir, 'model')
  await buildModel(await stories(), model, { source: 'stories260K.bin', cuts: [2] })
})
afterAll(async () => {
  await Promise.all(procs.map(kill9))
})

describe('a relay restarted with its key file', () => {
  it('keeps its peer id, and the nodes come back by themselves', async () => {
    const p2p = await freePort()
    const keyFile = join(dir, 'relay.key')
    const args = ['relay', '--key', keyFile, '--port', '0', '--p2p-port', String(p2p), '--model', model, '--ledger-file', join(dir, 'ledger.sqlite')]
    const first = await spawn(args)
    expect(statSync(keyFile).mode & 0o777, 'the key file is readable by its owner only').toBe(0o600)
    const relayAddr: string = first.ready.relay
    expect(relayAddr).toContain(`/tcp/${p2p}/ws/p2p/${first.ready.peer}`)
    const nodes = await Promise.all(['0-2', '2-5'].map(async (l) => await spawn(['node', '--relay', relayAddr, '--model', model, '--layers', l])))
    const ids = nodes.map((n) => n.ready.peer as string)
    await waitFor(async () => await listsAll(first.ready.http, ids))
    await generates(first.ready.http)

    await kill9(first)
    const second = await spawn(args)
    const restartedAt = Date.now()
    expect(second.ready.peer).toBe(first.ready.peer)
    expect(second.ready.relay).toBe(relayAddr)
    // No node is told anything: each one's next periodic announce has to find the relay again.
    await waitFor(async () => await listsAll(second.ready.http, ids), RECOVERY_MS)
    const recoveredMs = Date.now() - restartedAt
    console.log(`relay-restart: both nodes listed again ${recoveredMs} ms after the restart (announce period ${PEER_DEFAULTS.announceEveryMs} ms)`)
    expect(recoveredMs).toBeLessThan(RECOVERY_MS)
    for (const n of nodes) expect(n.proc.exitCode).toBeNull()
    await generates(second.ready.http)
  })

  it('without --key, gets a new peer id on every start (what the key file fixes); --max-body bounds requests', async () => {
    const args = ['relay', '--port', '0', '--p2p-port', '0', '--ledger-file', join(tempDir('relay-nokey'), 'ledger.sqlite')]
    const a = await spawn(args)
    await kill9(a)
    // The second start also carries --max-body down to the HTTP app.
    const b = await spawn([...args, '--max-body', '1KB'])
    expect(a.ready.peer).toMatch(/^12D3/)
    expect(b.ready.peer).not.toBe(a.ready.peer)
    const body = JSON.stringify({ prompt: 'x'.repeat(2048), max_tokens: 1 })
    const res = await fetch(`${b.ready.http}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
    expect(res.status).toBe(413)
  })

  it('refuses a key file it cannot read as a key, instead of starting under a new identity', async () => {
    const key = join(tempDir('relay-badkey'), 'relay.key')
    writeFileSync(key, 'not a key')
    const r = await tessera(['relay', '--key', key, '--port', '0', '--p2p-port', '0', '--ledger-file', join(tempDir('relay-badkey-ledger'), 'l.sqlite')])
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/tessera: .*relay\.key is not a libp2p private key .*move it away to start under a new identity/)
    expect(r.stderr).not.toMatch(/^\s+at /m)
  })
})
