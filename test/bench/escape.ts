/**
 * How often a colluding share of a slot's peers gets wrong tokens accepted, measured through the
 * real client, ledger and claim board on the in-process network (helpers/memory-drill.ts), beside
 * what a formula derived from the code predicts.
 *
 * Per trial: stories260K cut [0,2) [2,5); n = 4 peers on [0,2), c of them with the same wrong
 * weights (`wrong-weights=7`: they agree with each other and with no honest peer), three honest
 * peers on [2,5). Every trial is a fresh drill (peers, SQLite ledger re-executing disputed hops as
 * the relay does, client, claim board, one seeded draw), so every peer is staked with reputation
 * 0.5 and every weighted draw is uniform: what is measured is the chance per generation before
 * any conviction (a caught colluder is slashed and banned, and reputation and the blacklist would
 * change later draws). A generation is T = 3 greedy tokens (3 session steps: the prefill, then two
 * decode steps) of a reference prompt.
 *
 * An escape: the generation comes back with an ok status (redundant, spot: no VerificationError
 * and not `unverified`; optimistic: the claim settles `final`) and its tokens differ from
 * llama2.c's. Beside it: optimistic claims overturned whose corrected tokens are wrong anyway
 * (the correction is a redundant generation avoiding the accused, whose two lanes may both be
 * colluders), and trials in which any honest peer lost stake.
 */
import '../../host/shim.js'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { VerificationError } from '../../shared/errors.js'
import { setQuiet } from '../../shared/log.js'
import type { Client } from '../../shared/client/client.js'
import type { GenerationRequest, GenerationResult, VerificationOptions } from '../../shared/client/types.js'
import { buildStories, modelRunners, type ModelRunners } from '../helpers/memory-model.js'
import { drillNetwork } from '../helpers/memory-drill.js'
import { reference, type ReferenceCase } from '../helpers/reference.js'

/** Peers on the colluders' slot [0,2). */
const N = 4
/** Tokens per generation (= session steps: the prefill and T − 1 decode steps). */
const T = 3
/** An optimistic claim's window (ms): the least a request may ask for, so a trial settles soon. */
const WINDOW = 100
/** Watchers the board draws per hop (shared/optimistic/config.ts BOARD_DEFAULTS.watchers). */
const W = 2

const choose = (n: number, k: number): number => {
  if (k < 0 || k > n) return 0
  let r = 1
  for (let i = 0; i < k; i++) r = (r * (n - i)) / (i + 1)
  return r
}
/** a/b, 0 where b is 0 (nobody left to draw). */
const ratio = (a: number, b: number): number => (b > 0 ? a / b : 0)

interface Mode {
  name: string
  verification: VerificationOptions
  /** The chance per generation that c colluders of n escape. */
  escape: (n: number, c: number) => number
  /** optimistic: the chance that a claim is overturned and its corrected tokens are wrong anyway. */
  overturnedWrong?: (n: number, c: number) => number
  /** The chance that an honest peer loses stake (else 0). */
  honestSlashed?: (n: number, c: number) => number
  text: string
}

/**
 * redundant: k lanes drawn without replacement (picker.ts `exact`, equal weights); escape needs
 * every lane a colluder (any honest lane disagrees, and the ledger's re-execution convicts the
 * colluders whatever their number). An audit (each step with chance a, independently) draws a
 * fresh peer among the n − k outside the lanes (session.ts runChecker), honest with chance
 * (n − c)/(n − k); an honest auditor always catches them (a catch at the prefill is corrected, a
 * later one taints the generation: VERIFICATION_FAILED), a colluding one never does.
 */
const redundant = (k: number, a: number): Mode => ({
  name: `redundant k=${k}${a > 0 ? ` audit=${a}` : ''}`,
  verification: { mode: 'redundant', k, audit: a },
  escape: (n, c) => (choose(c, k) / choose(n, k)) * (1 - a * ratio(n - c, n - k)) ** T,
  text: a > 0 ? `C(c,${k})/C(n,${k}) · (1 − ${a}·(n − c)/(n − ${k}))^T` : `C(c,${k})/C(n,${k})`
})

/** spot: one lane, a colluder with chance c/n; each sampled step (chance p) a fresh checker among the n − 1 others, as above. */
const spot = (p: number): Mode => ({
  name: `spot p=${p}`,
  verification: { mode: 'spot', p },
  escape: (n, c) => (c / n) * (1 - p * ratio(n - c, n - 1)) ** T,
  text: `(c/n) · (1 − ${p}·(n − c)/(n − 1))^T`
})

/**
 * optimistic: one lane; the board draws W = 2 watchers among the n − 1 other holders (draw.ts).
 * Every dispute's evidence carries the hop's rows, and the ledger re-executes the hop before it
 * slashes anyone (verify/evidence.ts), so a referee in league with one side decides nothing: an
 * honest peer is never slashed, and a vote the re-execution contradicts leaves the claim
 * undecided (`unverified`). A colluding claim is final only when both watchers collude (nobody
 * honest challenges it). A claim overturned is corrected by a redundant (k = 2) generation
 * avoiding the accused: wrong only when both its lanes are colluders, C(c − 1, 2)/C(n − 1, 2),
 * of claims that could be overturned at all (at least one honest watcher): an upper bound, since
 * not every such claim is overturned (a colluding watcher vouching for it leaves it undecided).
 */
const optimistic: Mode = {
  name: `optimistic window=${WINDOW}ms`,
  verification: { mode: 'optimistic', window: WINDOW },
  escape: (n, c) => (c / n) * (choose(c - 1, W) / choose(n - 1, W)),
  overturnedWrong: (n, c) => {
    const bothBad = choose(c - 1, 2) / choose(n - 1, 2)
    return (c / n) * (1 - choose(c - 1, W) / choose(n - 1, W)) * bothBad
  },
  honestSlashed: () => 0,
  text: 'final with wrong tokens: (c/n) · C(c−1,2)/C(n−1,2); corrected to wrong tokens at most (c/n) · (1 − C(c−1,2)/C(n−1,2)) · C(c−1,2)/C(n−1,2)'
}

type Outcome = 'escape' | 'right' | 'refused' | 'unverified' | 'overturned' | 'overturnedWrong' | 'error'

/** 95% Wilson score interval. */
function wilson(x: number, n: number, z = 1.96): [number, number] {
  if (n === 0) return [0, 1]
  const p = x / n
  const d = 1 + (z * z) / n
  const centre = (p + (z * z) / (2 * n)) / d
  const half = (z * Math.sqrt((p * (1 - p)) / n + (z * z) / (4 * n * n))) / d
  return [Math.max(0, centre - half), Math.min(1, centre + half)]
}

async function generate(client: Client, req: GenerationRequest): Promise<GenerationResult> {
  const gen = client.generate(req)
  for (let r = await gen.next(); ; r = await gen.next()) if (r.done === true) return r.value
}

const same = (a: number[] | undefined, b: number[]): boolean => a !== undefined && a.length === b.length && a.every((x, i) => x === b[i])

/** One generation on a fresh drill with c colluders among N peers on [0,2). */
async function trial(
  model: ModelRunners,
  mode: Mode,
  c: number,
  seed: number,
  ref: ReferenceCase
): Promise<{ outcome: Outcome; honestSlashed: boolean; note?: string }> {
  const d = await drillNetwork(model, { honest: [[2, 5], [2, 5], [2, 5], ...Array.from({ length: N - c }, (): [number, number] => [0, 2])], seed })
  try {
    for (let i = 0; i < c; i++) await d.add({ layers: [0, 2], fault: 'wrong-weights=7' })
    const want = ref.greedy.slice(0, T)
    const outcome = await (async (): Promise<{ outcome: Outcome; note?: string }> => {
      let r: GenerationResult
      try {
        r = await generate(d.client, { prompt: ref.prompt, maxTokens: T, verification: mode.verification })
      } catch (err) {
        if (err instanceof VerificationError) return { outcome: 'refused' }
        return { outcome: 'error', note: (err as Error).message }
      }
      if (mode.verification.mode === 'optimistic') {
        const s = await r.settlement!
        if (s.status === 'overturned') return { outcome: same(s.tokens, want) ? 'overturned' : 'overturnedWrong' }
        if (s.status === 'unverified') return { outcome: 'unverified' }
      } else if (r.verification.status === 'unverified') return { outcome: 'unverified' }
      return { outcome: same(r.tokens, want) ? 'right' : 'escape' }
    })()
    const honestSlashed = (await Promise.all(d.honest.map(async (p) => (await d.ledger.standing(p.id)).slashed))).some((n) => n > 0)
    return { ...outcome, honestSlashed }
  } finally {
    await d.stop()
  }
}

export interface EscapeRow {
  mode: string
  n: number
  c: number
  share: number
  trials: number
  escapes: number
  rate: number
  ci95: [number, number]
  formula: number
  /** Whether the formula's value lies in the measured 95% interval. */
  within: boolean
  outcomes: Record<Outcome, number>
  /** Trials in which an honest peer lost stake. */
  honestSlashed: number
  /** optimistic: claims overturned whose corrected tokens are wrong, measured and predicted. */
  overturnedWrong?: { rate: number; ci95: [number, number]; formula: number }
  /** The formula for honestSlashed / trials. */
  honestSlashedFormula: number
  seconds: number
  errors?: string[]
}

/** `trials` per (mode, share); the default keeps the section near 3 minutes on 2 cores (ESCAPE_TRIALS overrides it). */
export async function benchEscape(o: { trials?: number; colluders?: number[]; seed?: number } = {}): Promise<Record<string, unknown>> {
  const trials = o.trials ?? Number(process.env.ESCAPE_TRIALS ?? 200)
  const colluders = o.colluders ?? [1, 2, 3]
  // Each trial's ledger and the model's build go to temp dirs: keep them all in one of our own, removed at the end.
  const oldTmp = process.env.TMPDIR
  const tmp = mkdtempSync(join(tmpdir(), 'tessera-escape-'))
  process.env.TMPDIR = tmp
  // Every conviction logs a line (vote.ts, board.ts): thousands of them here. Warnings still show.
  setQuiet(true)
  const started = performance.now()
  // Only prompts whose greedy tokens are decisive for T steps: an honest run must match llama2.c exactly.
  const cases = reference().filter((r) => r.decisive_prefix >= T)
  const modes = [redundant(2, 0), redundant(2, 0.25), redundant(3, 0), spot(0.2), optimistic]
  const rows: EscapeRow[] = []
  let model: ModelRunners | undefined
  console.log(`n = ${N} peers on the colluders' slot, T = ${T} tokens a generation, ${trials} trials per row, a fresh drill per trial`)
  try {
    model = await modelRunners(await buildStories([2]))
    let seed = o.seed ?? Number(process.env.ESCAPE_SEED ?? 1)
    for (const mode of modes) {
      for (const c of colluders) {
        const t0 = performance.now()
        const outcomes: Record<Outcome, number> = { escape: 0, right: 0, refused: 0, unverified: 0, overturned: 0, overturnedWrong: 0, error: 0 }
        let honestSlashed = 0
        const errors: string[] = []
        for (let i = 0; i < trials; i++) {
          const r = await trial(model, mode, c, seed++, cases[i % cases.length])
          outcomes[r.outcome]++
          if (r.honestSlashed) honestSlashed++
          if (r.note !== undefined && errors.length < 3) errors.push(r.note)
        }
        const ci = wilson(outcomes.escape, trials)
        const f = mode.escape(N, c)
        const wrongFix =
          mode.overturnedWrong === undefined
            ? undefined
            : { rate: outcomes.overturnedWrong / trials, ci95: wilson(outcomes.overturnedWrong, trials), formula: mode.overturnedWrong(N, c) }
        const slashedFormula = mode.honestSlashed?.(N, c) ?? 0
        const row: EscapeRow = {
          mode: mode.name,
          n: N,
          c,
          share: c / N,
          trials,
          escapes: outcomes.escape,
          rate: outcomes.escape / trials,
          ci95: ci,
          formula: f,
          within: f >= ci[0] - 1e-12 && f <= ci[1] + 1e-12,
          outcomes,
          honestSlashed,
          honestSlashedFormula: slashedFormula,
          ...(wrongFix !== undefined ? { overturnedWrong: wrongFix } : {}),
          seconds: (performance.now() - t0) / 1000,
          ...(errors.length > 0 ? { errors } : {})
        }
        rows.push(row)
        const rest = Object.entries(outcomes)
          .filter(([k, v]) => k !== 'escape' && v > 0)
          .map(([k, v]) => `${k} ${v}`)
          .join(', ')
        const fix =
          wrongFix === undefined
            ? ''
            : `; overturned, corrected to wrong tokens ${wrongFix.rate.toFixed(3)} [${wrongFix.ci95.map((x) => x.toFixed(3)).join(', ')}] formula ${wrongFix.formula.toFixed(3)}`
        console.log(
          `${mode.name.padEnd(25)} c=${c}/${N}: escaped ${String(outcomes.escape).padStart(3)}/${trials} = ${row.rate.toFixed(3)} ` +
            `[${ci[0].toFixed(3)}, ${ci[1].toFixed(3)}]  formula ${f.toFixed(3)}${row.within ? '' : ' OUTSIDE'}${fix}` +
            `  (${rest}; an honest peer slashed in ${(honestSlashed / trials).toFixed(3)}, formula ${slashedFormula.toFixed(3)}; ${row.seconds.toFixed(1)} s)`
        )
        for (const e of errors) console.log(`    error: ${e}`)
      }
    }
  } finally {
    await model?.dispose()
    if (oldTmp === undefined) delete process.env.TMPDIR
    else process.env.TMPDIR = oldTmp
    rmSync(tmp, { recursive: true, force: true })
    setQuiet(false)
  }
  const formulas = Object.fromEntries(modes.map((m) => [m.name, m.text]))
  for (const [name, text] of Object.entries(formulas)) console.log(`  ${name}: ${text}`)
  const wallSeconds = (performance.now() - started) / 1000
  console.log(`${rows.length} rows, ${rows.length * trials} generations in ${wallSeconds.toFixed(0)} s`)
  return {
    n: N,
    tokens: T,
    trialsPerRow: trials,
    firstSeed: o.seed ?? Number(process.env.ESCAPE_SEED ?? 1),
    colluders: 'wrong-weights=7 on [0,2)',
    measures: 'per generation of T tokens, before any conviction: a fresh drill (peers, ledger, client, board) per trial',
    formulas,
    rows,
    wallSeconds
  }
}
