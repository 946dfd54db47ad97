import { readFileSync } from 'node:fs'
import { dirname, basename } from 'node:path'
import { expect } from 'vitest'
import { REFERENCE, STORIES } from './paths.js'
import { fileBlobs } from '../../host/fs-blob.js'
import { openLlama2c } from '../../shared/model/llama2c.js'
import type { WeightSource } from '../../shared/model/weights.js'
import { Pipeline, generate, lastRow } from '../../shared/pipeline.js'
import { argmax } from '../../shared/sampler.js'
import type { ShardRunner } from '../../shared/runner.js'

/** What llama2.c's run.c computed for stories260K (see the file's "fields"). */
export interface ReferenceCase {
  prompt: number[]
  greedy: number[]
  decisive_prefix: number
  steps: Array<{ margin: number; top5: Array<[number, number]> }>
  last_prompt_logits: number[]
}

export const reference = (): ReferenceCase[] => JSON.parse(readFileSync(REFERENCE, 'utf8')).cases

export const stories = async (): Promise<WeightSource> => await openLlama2c(fileBlobs(dirname(STORIES)), basename(STORIES))

export const TOLERANCE = 1e-4

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length)
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return m
}

/** Greedy ids, free-running, through a fresh pipeline over `runners`. */
export async function greedyIds(runners: ShardRunner[], prompt: number[], n: number): Promise<number[]> {
  const p = new Pipeline(runners.map((r) => r.open()))
  const ids: number[] = []
  for await (const t of generate(p, { prompt, maxTokens: n })) ids.push(t.id)
  p.close()
  return ids
}

/** Checks one reference case on a chain of runners: prompt logits, greedy ids, teacher forcing. */
export async function checkCase(runners: ShardRunner[], c: ReferenceCase): Promise<{ worst: number }> {
  let worst = 0
  const p = new Pipeline(runners.map((r) => r.open()))
  let logits = lastRow(await p.step(c.prompt))
  const promptDiff = maxAbsDiff(logits, c.last_prompt_logits)
  expect(promptDiff, 'logits after the prompt').toBeLessThan(TOLERANCE)
  worst = Math.max(worst, promptDiff)
  // Teacher forcing: feed the reference's own tokens, compare every step's top-5 logits.
  for (const [s, step] of c.steps.entries()) {
    for (const [id, value] of step.top5) {
      const d = Math.abs(logits[id] - value)
      worst = Math.max(worst, d)
      expect(d, `step ${s}: logit of token ${id}`).toBeLessThan(TOLERANCE)
    }
    if (step.margin >= 1e-3) expect(argmax(logits), `step ${s}: top-1`).toBe(step.top5[0][0])
    if (s + 1 < c.steps.length) logits = lastRow(await p.step([c.greedy[s]]))
  }
  p.close()
  const ids = await greedyIds(runners, c.prompt, c.decisive_prefix)
  expect(ids).toEqual(c.greedy.slice(0, c.decisive_prefix))
  return { worst }
}
