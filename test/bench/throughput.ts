/**
 * Throughput benchmarks (measure only). First: what a decode step costs as the context grows, for
 * each KV cache layout of the same weights (`small`, whole model, onnxruntime-node), the two
 * sessions stepped alternately so both see the same machine. Writes a plot of ms per step against
 * position to bench-results/throughput-context.svg.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { loadModel } from '../../native-node/store.js'
import { Pipeline } from '../../shared/pipeline.js'
import type { KvLayout } from '../../shared/shard/build.js'
import { ensureModel } from './spine.js'
import { median } from './median.js'

const LAYOUTS: KvLayout[] = ['append', 'gqa', 'concat']

export interface ContextRow {
  kv: KvLayout
  /** Median ms of the decode steps around each mark. */
  earlyMs: number
  lateMs: number
  /** lateMs ÷ earlyMs. */
  ratio: number
}

export async function benchThroughput(cacheDir: string, outDir: string, o: { preset?: string; until?: number } = {}): Promise<Record<string, unknown>> {
  const name = o.preset ?? 'small'
  const until = o.until ?? 1000
  const [early, late] = [30, 900]
  const models = await Promise.all(LAYOUTS.map(async (kv) => await loadModel(await ensureModel(cacheDir, name, 'fp32', 1, kv), { device: 'cpu' })))
  const steps: number[][] = LAYOUTS.map(() => [])
  try {
    const pipes = models.map((m) => new Pipeline(m.runners.map((r) => r.open())))
    for (const p of pipes) await p.step([1, 2, 3, 4, 5, 6, 7, 8])
    // Position by position, alternating layouts, so a burst of load falls on both alike.
    for (let pos = 8; pos < until; pos++) {
      for (const [i, p] of pipes.entries()) {
        const t = performance.now()
        await p.step([1 + (pos % 97)])
        steps[i].push(performance.now() - t)
      }
    }
    for (const p of pipes) p.close()
  } finally {
    for (const m of models) for (const r of m.runners) await r.dispose()
  }
  const around = (xs: number[], at: number): number => median(xs.slice(at - 8 - 16, at - 8 + 16))
  const context: ContextRow[] = LAYOUTS.map((kv, i) => {
    const earlyMs = around(steps[i], early)
    const lateMs = around(steps[i], late)
    return { kv, earlyMs, lateMs, ratio: lateMs / earlyMs }
  })
  for (const r of context)
    console.log(`${name}, kv ${r.kv}: ${r.earlyMs.toFixed(2)} ms a step at position ~${early}, ${r.lateMs.toFixed(2)} at ~${late}: × ${r.ratio.toFixed(2)}`)
  const series = LAYOUTS.map((kv, i) => ({ kv, msPerStep: smooth(steps[i], 16) }))
  const plot = join(outDir, 'throughput-context.svg')
  await writeFile(plot, contextPlot(series, 8, `${name}, whole model, onnxruntime-node: ms per decode step against position`))
  console.log(`wrote ${plot}`)
  return { preset: name, positions: [early, late], context, plot: 'bench-results/throughput-context.svg' }
}

/** Medians of consecutive windows of `n` steps (the plot's points). */
function smooth(xs: number[], n: number): number[] {
  const out: number[] = []
  for (let i = 0; i + n <= xs.length; i += n) out.push(median(xs.slice(i, i + n)))
  return out
}

/** A line chart, one line per layout, x = position, y = ms per step (a plain SVG: no dependency for a plot). */
function contextPlot(series: Array<{ kv: string; msPerStep: number[] }>, firstPos: number, title: string): string {
  const W = 720
  const H = 360
  const m = { l: 56, r: 16, t: 36, b: 44 }
  const window = 16
  const n = Math.max(...series.map((s) => s.msPerStep.length))
  const yMax = Math.max(...series.flatMap((s) => s.msPerStep)) * 1.1
  const xMax = firstPos + n * window
  const x = (pos: number): number => m.l + ((pos - firstPos) / (xMax - firstPos)) * (W - m.l - m.r)
  const y = (ms: number): number => H - m.b - (ms / yMax) * (H - m.t - m.b)
  const colours = ['#1a7f37', '#1f6feb', '#d1242f']
  const lines = series.map((s, k) => {
    const pts = s.msPerStep.map((v, i) => `${x(firstPos + (i + 0.5) * window).toFixed(1)},${y(v).toFixed(1)}`).join(' ')
    return (
      `<polyline fill="none" stroke="${colours[k % colours.length]}" stroke-width="2" points="${pts}"/>` +
      `<text x="${W - m.r - 120}" y="${m.t + 18 * (k + 1)}" fill="${colours[k % colours.length]}">kv ${s.kv}</text>`
    )
  })
  const yTicks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const v = f * yMax
    return `<line x1="${m.l}" x2="${W - m.r}" y1="${y(v)}" y2="${y(v)}" stroke="#eee"/><text x="${m.l - 6}" y="${y(v) + 4}" text-anchor="end">${v.toFixed(1)}</text>`
  })
  const xTicks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const pos = Math.round(firstPos + f * (xMax - firstPos))
    return `<text x="${x(pos)}" y="${H - m.b + 18}" text-anchor="middle">${pos}</text>`
  })
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${m.l}" y="20" font-size="14">${title}</text>`,
    ...yTicks,
    ...xTicks,
    `<text x="${(W + m.l) / 2}" y="${H - 8}" text-anchor="middle">position (tokens in the cache)</text>`,
    `<text x="14" y="${(H + m.t) / 2}" transform="rotate(-90 14 ${(H + m.t) / 2})" text-anchor="middle">ms per step</text>`,
    `<line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${H - m.b}" stroke="#333"/><line x1="${m.l}" x2="${W - m.r}" y1="${H - m.b}" y2="${H - m.b}" stroke="#333"/>`,
    ...lines,
    '</svg>',
    ''
  ].join('\n')
}
