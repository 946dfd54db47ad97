/**
 * The official `openai` npm client against the network `npm start` runs: `tessera up` on a fresh
 * directory builds the default model (Llama 3.1-shaped, seeded random, with Llama 3.1's real
 * tokenizer and chat template), starts a relay and two nodes, and the client's text completion,
 * chat and streamed chat work. Streamed text equals the plain answer, and usage matches the ids.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { join } from 'node:path'
import OpenAI from 'openai'
import { REPO, tempDir } from './helpers/paths.js'
import { readManifest, readModelText } from '../host/model-store.js'
import { UP_DEFAULTS } from '../cli/config.js'
import type { ModelText } from '../shared/text/model-text.js'

let up: ChildProcess
let client: OpenAI
let text: ModelText
let log = ''

beforeAll(async () => {
  const cwd = tempDir('openai-up')
  // As on a fresh machine: nothing built yet, the default everything; only the ports are free ones.
  up = spawn(process.execPath, [join(REPO, 'bin', 'tessera.js'), 'up', '--port', '0', '--p2p-port', '0'], { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  up.stderr!.on('data', (d: Buffer) => {
    log += d.toString()
  })
  const lines = createInterface({ input: up.stdout! })
  lines.on('line', (line) => {
    log += `${line}\n`
  })
  const http = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tessera up was not up in 150 s:\n${log}`)), 150_000)
    lines.on('line', (line) => {
      const m = /Tessera is up: (http:\/\/\S+)/.exec(line)
      if (m !== null) {
        clearTimeout(timer)
        resolve(m[1])
      }
    })
    up.once('exit', (code) => reject(new Error(`tessera up exited (${code}):\n${log}`)))
  })
  // The demo generation runs first: wait for it so its tokens do not interleave with the test's.
  await new Promise<void>((resolve) => {
    const done = (): void => {
      if (log.includes('Ctrl-C to stop.')) resolve()
      else setTimeout(done, 100)
    }
    done()
  })
  const model = join(cwd, UP_DEFAULTS.model.dir)
  text = (await readModelText(model, await readManifest(model)))!
  client = new OpenAI({ baseURL: `${http}/v1`, apiKey: 'unused', maxRetries: 0 })
}, 180_000)

afterAll(async () => {
  up?.kill('SIGINT')
  await new Promise((resolve) => (up === undefined || up.exitCode !== null ? resolve(null) : up.once('exit', resolve)))
})

describe('the official openai client on the default network', () => {
  it('the demo printed text, and lists the model', async () => {
    expect(log).toMatch(/demo: tiny-llama3-seed1 \(seeded random weights: the words are noise\)\n {2}Once upon a time [\s\S]+?\n {2}route: /)
    const models = await client.models.list()
    expect(models.data.map((m) => m.id)).toEqual(['tiny-llama3-seed1'])
  })

  it('completes text: the answer is the decode of its ids, and usage counts them', async () => {
    const r = await client.completions.create({ model: 'tiny-llama3-seed1', prompt: 'Once upon a time', max_tokens: 12 })
    const ids = (r as unknown as { tessera: { tokens: number[]; prompt: number[] } }).tessera
    expect(ids.prompt).toEqual(text.encode('Once upon a time'))
    expect(r.choices[0].text).toBe(text.decode(ids.tokens))
    expect(r.choices[0].text.length).toBeGreaterThan(0)
    expect(r.usage).toEqual({ prompt_tokens: ids.prompt.length, completion_tokens: ids.tokens.length, total_tokens: ids.prompt.length + ids.tokens.length })
    expect(['length', 'stop']).toContain(r.choices[0].finish_reason)
  })

  it('takes a prompt longer than one prefill chunk: every row of 128,256 logits fits the messages', async () => {
    const prompt = 'The llama walked along the ridge, and the wind sang. '.repeat(12)
    const r = await client.completions.create({ model: 'tiny-llama3-seed1', prompt, max_tokens: 4 })
    expect(r.usage?.prompt_tokens).toBe(text.encode(prompt).length)
    expect(r.usage?.prompt_tokens).toBeGreaterThan(128)
    expect(r.usage?.completion_tokens).toBeGreaterThan(0)
  })

  it('chats through the template, and the streamed chat equals the plain one', async () => {
    const messages = [
      { role: 'system' as const, content: 'You are terse.' },
      { role: 'user' as const, content: 'Tell me a story about a llama 🦙.' }
    ]
    const plain = await client.chat.completions.create({ model: 'tiny-llama3-seed1', messages, max_tokens: 16, seed: 1 })
    const info = (plain as unknown as { tessera: { tokens: number[]; prompt: number[] } }).tessera
    expect(info.prompt).toEqual(text.encodeChat(messages))
    expect(plain.choices[0].message).toMatchObject({ role: 'assistant', content: text.decode(info.tokens) })
    expect(plain.usage?.completion_tokens).toBe(info.tokens.length)
    expect(plain.usage?.prompt_tokens).toBe(info.prompt.length)

    const stream = await client.chat.completions.create({
      model: 'tiny-llama3-seed1',
      messages,
      max_tokens: 16,
      seed: 1,
      stream: true,
      stream_options: { include_usage: true }
    })
    let streamed = ''
    let deltas = 0
    let usage: OpenAI.CompletionUsage | undefined | null
    let finish: string | null = null
    for await (const chunk of stream) {
      if (chunk.usage !== undefined && chunk.usage !== null) usage = chunk.usage
      const choice = chunk.choices[0]
      if (choice === undefined) continue
      streamed += choice.delta.content ?? ''
      if ((choice.delta.content ?? '') !== '') deltas++
      finish = choice.finish_reason ?? finish
    }
    expect(streamed).toBe(plain.choices[0].message.content)
    expect(deltas).toBeGreaterThan(1)
    expect(finish).toBe(plain.choices[0].finish_reason)
    expect(usage).toEqual(plain.usage)
  })

  it('answers OpenAI-shaped 400s the client raises as BadRequestError', async () => {
    await expect(client.completions.create({ model: 'tiny-llama3-seed1', prompt: 'x', max_tokens: 0 })).rejects.toBeInstanceOf(OpenAI.BadRequestError)
    await expect(
      client.chat.completions.create({ model: 'tiny-llama3-seed1', messages: [{ role: 'user', content: 'x' }], stop: ['a', 'b', 'c', 'd', 'e'] })
    ).rejects.toThrow(/stop must be/)
  })
})
