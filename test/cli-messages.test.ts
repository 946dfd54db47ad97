/**
 * The messages the CLI gives when a flag is missing or misread, and the help texts' defaults:
 * each checked as a user meets it (the CLI as a process), never by calling the command's code.
 */
import { execFile } from 'node:child_process'
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { formatCount } from '../cli/commands/plan.js'
import { NoRouteError } from '../shared/errors.js'
import { paramCount, preset } from '../shared/model/config.js'
import type { Capability } from '../shared/protocol/capability.js'
import { findRoute } from '../shared/route/route.js'
import { tessera } from './helpers/cli.js'
import { REPO, tempDir } from './helpers/paths.js'

const dirs: string[] = []
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

/** A failure that is one line of advice, never a stack trace. */
function refused(r: { code: number; stderr: string }): string {
  expect(r.code, r.stderr).not.toBe(0)
  expect(r.stderr).not.toMatch(/^\s+at /m)
  return r.stderr
}

describe('tessera plan', () => {
  it('refuses a size without a unit, and still reads the usual ones', async () => {
    const sizes = [
      ['24GB', 24 * 2 ** 30],
      ['512MB', 512 * 2 ** 20],
      ['1.5GiB', 1.5 * 2 ** 30],
      ['8g', 8 * 2 ** 30]
    ] as const
    // In parallel: each run is mostly tsx's start-up.
    const [bare, ...runs] = await Promise.all([
      tessera(['plan', '--model', 'tiny', '--memory', '24']),
      ...sizes.map(async ([size]) => await tessera(['plan', '--model', 'tiny', '--memory', size, '--json']))
    ])
    const stderr = refused(bare)
    expect(stderr).toContain("'--memory <size>' argument '24'")
    expect(stderr).toContain('give a unit, e.g. 24GB (a bare number would be 24 bytes)')
    sizes.forEach(([size, expected], i) => {
      expect(runs[i].code, runs[i].stderr).toBe(0)
      expect(JSON.parse(runs[i].stdout).budget, size).toBe(expected)
    })
  })

  it("prints a built model's real parameter count", async () => {
    const dir = tempDir('plan-model')
    dirs.push(dir)
    const out = join(dir, 'tiny')
    const built = await tessera(['build-model', '--from', 'random:tiny:1', '--out', out])
    expect(built.code, built.stderr).toBe(0)
    const r = await tessera(['plan', '--model', out, '--memory', '1GB'])
    expect(r.code, r.stderr).toBe(0)
    const count = paramCount(preset('tiny'))
    expect(count).toBeGreaterThan(100_000)
    expect(r.stdout).toContain(`${out}: ${formatCount(count)} parameters`)
    // The exact figure, as the user reads it: 250,432 rather than "0.00 B".
    expect(r.stdout).toContain(count.toLocaleString('en-US'))
    expect(r.stdout).not.toContain('0.00 B parameters')
  })
})

describe('tessera generate --relay', () => {
  it('names --ledger-api when optimistic verification lacks it, before dialing anything', async () => {
    // Port 1 on loopback has nobody: had it dialed, this would fail differently (or hang).
    const started = performance.now()
    const r = await tessera(['generate', '--relay', '/ip4/127.0.0.1/tcp/1/p2p/12D3KooWNotDialed', '--verification', 'optimistic', '--prompt-ids', '1,2'])
    expect(refused(r)).toContain("tessera: --verification optimistic needs --ledger-api URL (the relay's HTTP address): claims are posted to its board")
    expect(performance.now() - started).toBeLessThan(30_000)
  })

  it('says speculative decoding needs --relay when --draft is given without it', async () => {
    const r = await tessera(['generate', '--model', 'no-such-dir', '--draft', 'no-such-draft', '--prompt-ids', '1,2'])
    expect(refused(r)).toContain('tessera: --draft speculates across the network: it needs --relay (in one process there are no round trips to save)')
  })
})

describe('redundant routes', () => {
  it('say to start more nodes or ask for fewer peers when k deep is not served', () => {
    const cap = (peer: string): Capability => ({
      peer,
      addrs: [],
      device: 'cpu',
      memory: 1 << 30,
      msPerLayer: 1,
      model: 'm',
      root: 'r',
      modelLayers: 4,
      layers: [0, 4],
      shardBounds: [0, 4],
      kvRoom: 1000,
      sessions: 0,
      version: '0',
      issued: 0,
      expires: Infinity
    })
    let err: unknown
    try {
      findRoute([cap('a'), cap('b')], 0, 4, undefined, 3)
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(NoRouteError)
    expect((err as Error).message).toBe(
      'no 3 distinct live peers serve layers from 0 on (needed [0, 4)); 2 peer(s) known: ' +
        'start more nodes serving these layers (tessera node …), or ask for fewer (--k 2)'
    )
    // k = 1 has nothing to lower: no hint.
    expect(() => findRoute([], 0, 4)).toThrow(/^no live peer serves layers from 0 on \(needed \[0, 4\)\); 0 peer\(s\) known$/)
  })
})

describe('help texts', () => {
  it('zk setup defaults to the quick model and says what small costs', async () => {
    const r = await tessera(['zk', 'setup', '--help'])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout.replace(/\s+/g, ' ')).toMatch(
      /--model <name> seeded model: tiny \(set-up ~1 min\) or small \(~20 min on 2 cores the first time\) \(choices: "tiny", "small", default: "tiny"\)/
    )
  })

  it('chain commands show relative default paths and say where state belongs', async () => {
    const cmds = [['chain', 'deploy'], ['chain', 'bind'], ['chain', 'stake'], ['chain']]
    const helps = await Promise.all(cmds.map(async (cmd) => await tessera([...cmd, '--help'])))
    cmds.forEach((cmd, i) => {
      expect(helps[i].code, helps[i].stderr).toBe(0)
      expect(helps[i].stdout, cmd.join(' ')).not.toContain(REPO)
      // No default names an absolute path of this machine.
      expect(helps[i].stdout, cmd.join(' ')).not.toMatch(/default: "\//)
    })
    const [deploy, , , chain] = helps.map((r) => r.stdout.replace(/\s+/g, ' '))
    expect(deploy).toContain('--out <file> where to write the deployment (default: ".tessera/chain.json")')
    expect(chain).toContain('best kept under .tessera/, which git ignores')
  })

  it('chain refuses --state pointing at the deployment file', async () => {
    const stderr = refused(await tessera(['chain', '--state', '.tessera/chain.json', '--port', '0']))
    expect(stderr).toContain('tessera: --state .tessera/chain.json is the deployment file; give the state its own, e.g. .tessera/anvil-state.json')
  })
})

/** `tsx test/bench/index.ts ARGS` as `npm run bench -- ARGS` runs it. */
async function bench(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return await new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', join(REPO, 'test', 'bench', 'index.ts'), ...args], { cwd: REPO, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr })
    })
  })
}

describe('npm run bench', () => {
  const SECTIONS = [
    'spine',
    'int4',
    'throughput',
    'network',
    'browser',
    'verify',
    'zk',
    'chain',
    'escape',
    'chaos',
    'links',
    'weights',
    'calibrate',
    'simulate'
  ]

  it('lists its sections for --help and -h, running none', async () => {
    for (const flag of ['--help', '-h']) {
      const started = performance.now()
      const r = await bench([flag])
      expect(r.code, r.stderr).toBe(0)
      for (const name of SECTIONS) expect(r.stdout).toMatch(new RegExp(`^ {2}${name} +\\S`, 'm'))
      expect(r.stdout).not.toContain('== spine ==')
      expect(performance.now() - started).toBeLessThan(20_000)
    }
  })

  it('refuses an unknown section, naming the known ones', async () => {
    const r = await bench(['spine', 'nope'])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toContain(`unknown bench section(s) nope; known sections: ${SECTIONS.join(', ')}`)
    expect(r.stdout).not.toContain('== spine ==')
  })
})

describe('tessera simulate', () => {
  it("runs Petals' setting by name: a token costs what the round trips, compute and wire add up to, and --json writes the result", async () => {
    const dir = tempDir('simulate')
    dirs.push(dir)
    const out = join(dir, 'petals.json')
    const r = await tessera(['simulate', 'petals', '--json', out])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/tokens\/s, [\d.]+ ms a token/)
    const { result } = JSON.parse(readFileSync(out, 'utf8'))
    // Whole-ms timers: within a ms a hop of the sum.
    expect(Math.abs(result.msPerToken - result.expected.totalMs)).toBeLessThan(3)
    expect(result.expected.rttMs).toBe(300)
  })

  it('names the field a scenario file gets wrong, and the scenarios there are', async () => {
    const dir = tempDir('simulate-bad')
    dirs.push(dir)
    const bad = join(dir, 'bad.json')
    writeFileSync(bad, JSON.stringify({ kind: 'swarm', peers: 1000, minuets: 10 }))
    const small = join(dir, 'small.json')
    writeFileSync(small, JSON.stringify({ kind: 'chain', nodes: 1, gpu: 'rtx3090' }))
    const [typo, unknown, tooSmall] = await Promise.all([tessera(['simulate', bad]), tessera(['simulate', 'nope']), tessera(['simulate', small])])
    expect(refused(typo)).toContain('a swarm scenario has no field "minuets"')
    expect(refused(tooSmall)).toContain("1 node of RTX 3090 holds 45 of Llama-2-70B int4's 80 layers (45 a node): give more nodes or larger GPUs")
    expect(refused(unknown)).toContain('no scenario "nope": give one of petals, swarm-100, swarm-1000, outage, faulty or a JSON scenario file')
  })
})
