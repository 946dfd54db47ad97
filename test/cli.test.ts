/** The command line, run as a separate process exactly as an operator would. */
import { describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { writeFile } from 'node:fs/promises'
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { lpStream } from '@libp2p/utils'
import { decode, encode } from 'cborg'
import { createPeer } from '../host/libp2p.js'
import { startRelay } from '../relay/relay.js'
import { RELAY_DEFAULTS } from '../relay/config.js'
import { readStakeFile } from '../cli/commands/ledger-options.js'
import { ANNOUNCE_PROTOCOL, signCapability } from '../shared/protocol/capability.js'
import { VERSION } from '../shared/version.js'
import { tessera } from './helpers/cli.js'
import { readManifest, readModelText } from '../host/model-store.js'
import { reference } from './helpers/reference.js'
import { REPO, STORIES, tempDir } from './helpers/paths.js'

describe('tessera CLI', () => {
  it('build-model + generate --json reproduce the reference greedy ids', async () => {
    const out = tempDir('cli')
    const build = await tessera(['build-model', '--from', STORIES, '--out', out, '--cuts', '2,4'])
    expect(build.code, build.stderr).toBe(0)
    expect(build.stderr).toMatch(/3 fp32 shard\(s\): \[0,2\) \[2,4\) \[4,5\)/)
    expect(build.stderr).toMatch(/model root [0-9a-f]{64}/)
    for (const c of reference().slice(0, 2)) {
      const gen = await tessera(['generate', '--model', out, '--prompt-ids', c.prompt.join(','), '--max-tokens', String(c.decisive_prefix), '--json'])
      expect(gen.code, gen.stderr).toBe(0)
      const result = JSON.parse(gen.stdout)
      expect(result.tokens).toEqual(c.greedy.slice(0, c.decisive_prefix))
      expect(result.prompt).toEqual(c.prompt)
      expect(result.device).toBe('cpu')
    }
  })

  it('reads and writes text with the model tokenizer: --prompt, --stop, --stop-at-eos; build-model --tokenizer refuses one that does not fit', async () => {
    const out = tempDir('cli-text')
    expect((await tessera(['build-model', '--from', 'random:tiny-llama3:1', '--out', out, '--shards', '2'])).code).toBe(0)
    const text = (await readModelText(out, await readManifest(out)))!
    const gen = await tessera(['generate', '--model', out, '--prompt', 'Once upon a time', '--max-tokens', '12', '--stop-at-eos', '--json'])
    expect(gen.code, gen.stderr).toBe(0)
    const r = JSON.parse(gen.stdout)
    expect(r.prompt).toEqual(text.encode('Once upon a time'))
    expect(r.text).toBe(text.decode(r.tokens))
    // A stop string taken from the answer itself ends it just before, whatever the random weights say.
    const stop = r.text
      .slice(Math.floor(r.text.length / 2))
      .trim()
      .slice(0, 3)
    expect(stop.length).toBeGreaterThan(0)
    const cut = JSON.parse((await tessera(['generate', '--model', out, '--prompt', 'Once upon a time', '--max-tokens', '12', '--stop', stop, '--json'])).stdout)
    expect(cut.text).toBe(r.text.slice(0, r.text.indexOf(stop)))
    expect(cut.tokens.length).toBeLessThanOrEqual(r.tokens.length)
    const small = await tessera(['build-model', '--from', 'random:tiny:1', '--out', tempDir('cli-badtok'), '--tokenizer', out])
    expect(small.code).toBe(1)
    expect(small.stderr).toMatch(/knows 128256 ids but the model's vocabulary has 512/)
  })

  it('samples reproducibly with a seed, and differently with another', async () => {
    const out = tempDir('cli-sample')
    expect((await tessera(['build-model', '--from', 'random:tiny:2', '--out', out])).code).toBe(0)
    const run = async (seed: number): Promise<number[]> =>
      JSON.parse(
        (
          await tessera([
            'generate',
            '--model',
            out,
            '--prompt-ids',
            '1',
            '--max-tokens',
            '24',
            '--temperature',
            '1.5',
            '--top-p',
            '0.95',
            '--seed',
            String(seed),
            '--json'
          ])
        ).stdout
      ).tokens
    const [a, b, c] = [await run(7), await run(7), await run(8)]
    expect(a).toEqual(b)
    expect(a).not.toEqual(c)
  })

  it('plans the 70B preset on a 24 GB card in int4', async () => {
    const r = await tessera(['plan', '--model', 'llama-2-70b', '--memory', '24GB', '--dtype', 'int4', '--json'])
    expect(r.code, r.stderr).toBe(0)
    const plan = JSON.parse(r.stdout)
    expect(plan.layers).toBeGreaterThan(20)
    expect(plan.layers).toBeLessThan(80)
    expect(plan.layers * plan.perLayer).toBeLessThanOrEqual(plan.usable)
    expect((plan.layers + 1) * plan.perLayer).toBeGreaterThan(plan.usable)
    const text = await tessera(['plan', '--model', 'llama-2-70b', '--memory', '24GB'])
    expect(text.stdout).toMatch(/fits \d+ of 80 layers per node/)
  })

  it('has --help on every command', async () => {
    for (const cmd of ['build-model', 'generate', 'plan', 'up', 'relay', 'stake', 'chain', 'zk']) {
      const r = await tessera([cmd, '--help'])
      expect(r.code).toBe(0)
      expect(r.stdout).toContain(`Usage: tessera ${cmd}`)
    }
  })

  it('gives clear errors for bad input', async () => {
    const bad = async (args: string[], message: RegExp): Promise<void> => {
      const r = await tessera(args)
      expect(r.code).not.toBe(0)
      expect(r.stderr).toMatch(message)
      // An expected failure is one line of advice, never a stack trace.
      expect(r.stderr).not.toMatch(/^\s+at /m)
    }
    await bad(['build-model', '--from', 'random:huge', '--out', tempDir('x')], /unknown preset "huge"; known presets: tiny, small/)
    await bad(['build-model', '--from', '/nonexistent/model.bin', '--out', tempDir('x')], /no such file or directory/)
    await bad(['generate', '--model', tempDir('none'), '--prompt-ids', '1'], /build a model there first/)
    await bad(['generate', '--model', join(tempDir('none')), '--prompt-ids', '1,x'], /comma-separated non-negative integers/)
    await bad(['plan', '--model', 'llama-2-70b', '--memory', 'lots'], /expected a size such as 24GB/)
    const out = tempDir('cli-notok')
    await tessera(['build-model', '--from', 'random:tiny:1', '--out', out])
    await bad(['generate', '--model', out, '--prompt', 'hello'], /has no tokenizer: give the prompt as --prompt-ids/)
    await bad(['generate', '--model', out, '--prompt-ids', '1,99999'], /token id 99999 is outside the vocabulary/)
    await bad(
      ['relay', '--port', '0', '--p2p-port', '0', '--ledger', 'evm', '--chain', join(tempDir('no-chain'), 'chain.json')],
      /no deployment at .*run `tessera chain deploy` first/
    )
    await bad(['relay', '--ledger', 'paper'], /argument 'paper' is invalid. Allowed choices are sqlite, evm/)
    await bad(['chain', 'deploy', '--rpc', 'http://127.0.0.1:9'], /could not reach an EVM node at http:\/\/127.0.0.1:9|reach http:\/\/127.0.0.1:9/)
  })
})

const identity = async (): Promise<{ key: PrivateKey; peer: string }> => {
  const key = await generateKeyPair('Ed25519')
  return { key, peer: peerIdFromPrivateKey(key).toString() }
}

/** Announces a minimal record for `who` to `relay` from a fresh libp2p node; returns the relay's reply. */
async function announceAs(who: { key: PrivateKey; peer: string }, relay: string): Promise<{ ok: boolean; staked?: boolean; stake?: number; note?: string }> {
  const node: Libp2p = await createPeer({ privateKey: who.key, listen: [] })
  try {
    const now = Date.now()
    const cap = {
      ...{ peer: who.peer, addrs: [], device: 'cpu' as const, memory: 1, msPerLayer: 1, model: 'm', root: 'ab'.repeat(32), modelLayers: 2 },
      ...{ layers: [0, 2] as [number, number], shardBounds: [0, 2], kvRoom: 1, sessions: 0, version: VERSION, issued: now, expires: now + 20_000 }
    }
    const stream = await node.dialProtocol(multiaddr(relay), ANNOUNCE_PROTOCOL)
    const lp = lpStream(stream)
    await lp.write(encode(await signCapability(cap, who.key)))
    return decode((await lp.read()).subarray())
  } finally {
    await node.stop()
  }
}

describe('stake is given by the operator, not by announcing', () => {
  it('reads a stake file as JSON or as lines, and refuses a bad id or amount', async () => {
    const dir = tempDir('stake-file')
    const [a, b] = [await identity(), await identity()]
    const json = join(dir, 'stakes.json')
    await writeFile(json, JSON.stringify({ [a.peer]: 100, [b.peer]: 5 }))
    expect(await readStakeFile(json)).toEqual(
      new Map([
        [a.peer, 100],
        [b.peer, 5]
      ])
    )
    await writeFile(json, JSON.stringify([{ peer: a.peer, amount: 7 }]))
    expect(await readStakeFile(json)).toEqual(new Map([[a.peer, 7]]))
    const lines = join(dir, 'stakes.txt')
    await writeFile(lines, `# operator's nodes\n${a.peer} 100\n\n${b.peer}   20 # the GPU box\n`)
    expect(await readStakeFile(lines)).toEqual(
      new Map([
        [a.peer, 100],
        [b.peer, 20]
      ])
    )
    await writeFile(lines, `12D3KooWnotapeer 100\n`)
    await expect(readStakeFile(lines)).rejects.toThrow(/12D3KooWnotapeer is not a libp2p peer id/)
    await writeFile(lines, `${a.peer} -5\n`)
    await expect(readStakeFile(lines)).rejects.toThrow(/must be a positive number/)
    await writeFile(lines, `${a.peer}\n`)
    await expect(readStakeFile(lines)).rejects.toThrow(/must be a positive number/)
  })

  it('a fresh key that announces gets no stake; a listed one does; tessera stake reaches the running relay', async () => {
    const [listed, stranger, later] = [await identity(), await identity(), await identity()]
    const ledger = join(tempDir('stake-relay'), 'ledger.sqlite')
    const relay = await startRelay({ httpPort: 0, p2pPort: 0, ledger, stakeFor: new Map([[listed.peer, 60]]) })
    try {
      expect(await announceAs(listed, relay.addr)).toMatchObject({ ok: true, staked: true, stake: 60 })
      const reply = await announceAs(stranger, relay.addr)
      expect(reply).toMatchObject({ ok: true, staked: false, stake: 0 })
      expect(reply.note).toMatch(/unstaked/)
      expect((await relay.ledger.standing(stranger.peer)).stake).toBe(0)
      // The operator stakes it from another process, on the relay's own file, while the relay runs.
      const r = await tessera(['stake', stranger.peer, '40', '--ledger-file', ledger])
      expect(r.code, r.stderr).toBe(0)
      expect(JSON.parse(r.stdout)).toMatchObject({ peer: stranger.peer, stake: 40 })
      expect((await relay.ledger.standing(stranger.peer)).stake).toBe(40)
      expect((await relay.ledger.audit()).filter((e) => e.kind === 'stake').map((e) => [e.peer, e.amount])).toEqual([
        [listed.peer, 60],
        [stranger.peer, 40]
      ])
      expect(await announceAs(stranger, relay.addr)).toMatchObject({ ok: true, staked: true, stake: 40 })
      // Mistakes fail loudly and stake nothing.
      const typo = await tessera(['stake', later.peer.slice(0, -3), '10', '--ledger-file', ledger])
      expect(typo.code).not.toBe(0)
      expect(typo.stderr).toMatch(/is not a libp2p peer id/)
      const zero = await tessera(['stake', later.peer, '0', '--db', ledger])
      expect(zero.code).not.toBe(0)
      expect(zero.stderr).toMatch(/expected a positive amount/)
      expect((await relay.ledger.standing(later.peer)).stake).toBe(0)
    } finally {
      await relay.stop()
    }
    // --join-stake stays as an explicit opt-in: then any new key is staked on its first announce.
    const open = await startRelay({ httpPort: 0, p2pPort: 0, ledger: join(tempDir('stake-open'), 'ledger.sqlite'), joinStake: 100 })
    try {
      expect(await announceAs(later, open.addr)).toMatchObject({ ok: true, staked: true, stake: 100 })
    } finally {
      await open.stop()
    }
  }, 60_000)

  it('tessera up stakes the nodes it starts, and nobody else', async () => {
    const dir = tempDir('up-stake')
    const model = join(dir, 'model')
    expect((await tessera(['build-model', '--from', STORIES, '--out', model, '--cuts', '2'])).code).toBe(0)
    const up = spawn(
      process.execPath,
      [join(REPO, 'bin', 'tessera.js'), 'up', '--model', model, '--nodes', '2', '--port', '0', '--p2p-port', '0', '--key', join(dir, 'key')].concat([
        '--ledger-file',
        join(dir, 'ledger.sqlite')
      ]),
      { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] }
    )
    try {
      const http = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('tessera up was not up in 90 s')), 90_000)
        createInterface({ input: up.stdout! }).on('line', (line) => {
          const m = /Tessera is up: (http:\/\/\S+)/.exec(line)
          if (m !== null) {
            clearTimeout(timer)
            resolve(m[1])
          }
        })
        up.once('exit', (code) => reject(new Error(`tessera up exited (${code})`)))
      })
      // /api/network is refreshed each second.
      let peers: string[] = []
      await expect
        .poll(async () => {
          peers = (await (await fetch(`${http}/api/network`)).json()).peers.map((p: { peer: string }) => p.peer)
          return peers.length
        })
        .toBe(2)
      const stakes = (await (await fetch(`${http}/api/ledger`)).json()).standings as Array<{ peer: string; stake: number }>
      expect(stakes.map((s) => [s.peer, s.stake]).sort()).toEqual(peers.map((p: string) => [p, RELAY_DEFAULTS.operatorStake]).sort())
      // A stranger announcing to up's relay is listed, unstaked.
      const relayAddr = (await (await fetch(`${http}/api/relay`)).json()).addrs.find((a: string) => a.includes('/ws/'))
      const stranger = await identity()
      expect(await announceAs(stranger, relayAddr)).toMatchObject({ ok: true, staked: false })
    } finally {
      up.kill('SIGINT')
      await new Promise((resolve) => (up.exitCode !== null ? resolve(null) : up.once('exit', resolve)))
    }
  }, 180_000)
})
