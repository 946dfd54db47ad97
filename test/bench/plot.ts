/** Plots for the benches: a plain SVG line chart, no dependency. */

export interface Series {
  label: string
  points: Array<[number, number]>
}

/** A line chart (a plain SVG: no dependency for a plot). */
/** `logX`: the x axis in powers of ten (give `xTicks` in the data's own units). */
export function linePlot(o: { title: string; x: string; y: string; series: Series[]; xTicks?: number[]; logX?: boolean }): string {
  const W = 720
  const H = 360
  const m = { l: 56, r: 16, t: 36, b: 44 }
  const tx = (v: number): number => (o.logX === true ? Math.log10(v) : v)
  const xs = o.series.flatMap((s) => s.points.map((p) => tx(p[0])))
  const [xMin, xMax] = [Math.min(...xs), Math.max(...xs)]
  const yMax = Math.max(...o.series.flatMap((s) => s.points.map((p) => p[1]))) * 1.1
  const x = (v: number): number => m.l + ((tx(v) - xMin) / (xMax - xMin)) * (W - m.l - m.r)
  const y = (v: number): number => H - m.b - (v / yMax) * (H - m.t - m.b)
  const colours = ['#1a7f37', '#1f6feb', '#d1242f', '#8250df']
  const lines = o.series.map((s, k) => {
    const c = colours[k % colours.length]
    const pts = s.points.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(' ')
    const dots = s.points.length <= 12 ? s.points.map(([a, b]) => `<circle cx="${x(a).toFixed(1)}" cy="${y(b).toFixed(1)}" r="3" fill="${c}"/>`).join('') : ''
    return `<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts}"/>${dots}<text x="${m.l + 12}" y="${m.t + 18 * (k + 1)}" fill="${c}">${s.label}</text>`
  })
  const yTicks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const v = f * yMax
    return `<line x1="${m.l}" x2="${W - m.r}" y1="${y(v)}" y2="${y(v)}" stroke="#eee"/><text x="${m.l - 6}" y="${y(v) + 4}" text-anchor="end">${v.toFixed(v < 10 ? 1 : 0)}</text>`
  })
  const xTicks = (
    o.xTicks ?? [0, 0.25, 0.5, 0.75, 1].map((f) => Math.round(o.logX === true ? 10 ** (xMin + f * (xMax - xMin)) : xMin + f * (xMax - xMin)))
  ).map((v) => `<text x="${x(v)}" y="${H - m.b + 18}" text-anchor="middle">${v}</text>`)
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${m.l}" y="20" font-size="14">${o.title}</text>`,
    ...yTicks,
    ...xTicks,
    `<text x="${(W + m.l) / 2}" y="${H - 8}" text-anchor="middle">${o.x}</text>`,
    `<text x="14" y="${(H + m.t) / 2}" transform="rotate(-90 14 ${(H + m.t) / 2})" text-anchor="middle">${o.y}</text>`,
    `<line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${H - m.b}" stroke="#333"/><line x1="${m.l}" x2="${W - m.r}" y1="${H - m.b}" y2="${H - m.b}" stroke="#333"/>`,
    ...lines,
    '</svg>',
    ''
  ].join('\n')
}
