/** The command line, run as a separate process exactly as an operator would. */
import { describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { tessera } from './helpers/cli.js'
import { reference } from './helpers/reference.js'
import { STORIES, tempDir } from './helpers/paths.js'

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
    for (const cmd of ['build-model', 'generate', 'plan', 'up', 'relay', 'chain', 'zk']) {
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
