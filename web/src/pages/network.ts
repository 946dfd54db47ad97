/**
 * The Network page: polls the relay's /api/network every second (peers, coverage per layer), its
 * Prometheus /metrics (throughput from the change of the generated-tokens counter) and its
 * /api/ledger (stakes, reputation, blacklist and the hash-chained audit log).
 */
import type { NetworkView } from '../sdk.js'
import type { LedgerEntry, PeerStanding } from '../../../shared/ledger/types.js'
import type { BoardStats } from '../../../shared/optimistic/stats.js'
import { TesseraError } from '../../../shared/errors.js'
import { byId, deviceBadge, formatMs, h, layerRange, messageOf, mountNav, relayOrigin, setRelayBanner, shortPeer } from './nav.js'

type Model = NetworkView['models'][number]

mountNav('network')

const ui = {
  banner: byId('relay-banner', HTMLElement),
  live: byId('live', HTMLElement),
  peerCount: byId('peer-count', HTMLElement),
  deviceCounts: byId('device-counts', HTMLElement),
  throughput: byId('throughput', HTMLElement),
  tokensTotal: byId('tokens-total', HTMLElement),
  modelCount: byId('model-count', HTMLElement),
  updated: byId('updated', HTMLElement),
  coverage: byId('coverage', HTMLElement),
  peers: byId('peers', HTMLTableSectionElement),
  ledgerChain: byId('ledger-chain', HTMLElement),
  standings: byId('standings', HTMLTableSectionElement),
  audit: byId('audit', HTMLTableSectionElement),
  claims: byId('claims', HTMLElement)
}

const LEDGER_EVERY = 3 // polls: the ledger changes far less often than the registry
let polls = 0

const POLL_MS = 1000
const TOKENS_METRIC = 'tessera_generated_tokens_total'
const SVG = 'http://www.w3.org/2000/svg'
let previous: { tokens: number; at: number } | undefined
let everLoaded = false

void poll()

async function poll(): Promise<void> {
  try {
    const res = await fetch(`${relayOrigin()}/api/network`, { cache: 'no-store' })
    if (!res.ok) throw new TesseraError('BAD_REPLY', `/api/network answered HTTP ${res.status}`)
    render((await res.json()) as NetworkView)
    setRelayBanner(ui.banner, undefined)
    ui.live.classList.remove('stale')
    everLoaded = true
    await pollThroughput()
    if (polls++ % LEDGER_EVERY === 0) await pollLedger()
  } catch (err) {
    setRelayBanner(ui.banner, `${messageOf(err)} (retrying every second)`)
    ui.live.classList.add('stale')
    previous = undefined
    if (!everLoaded) ui.peers.replaceChildren(emptyRow('No data: the relay is unreachable.'))
  }
  setTimeout(() => {
    void poll()
  }, POLL_MS)
}

function render(view: NetworkView): void {
  const now = Date.now()
  ui.peerCount.textContent = String(view.peers.length)
  ui.modelCount.textContent = String(view.models.length)
  const relays = view.relays ?? []
  ui.updated.textContent = `updated ${new Date(now).toLocaleTimeString()}${relays.length > 0 ? `; one network with ${relays.length} other relay${relays.length === 1 ? '' : 's'}: ${relays.map(shortPeer).join(', ')}` : ''}`

  const devices = new Map<string, number>()
  for (const p of view.peers) devices.set(p.device, (devices.get(p.device) ?? 0) + 1)
  ui.deviceCounts.replaceChildren(...[...devices].sort().map(([d, n]) => h('span', { attrs: { 'data-device': d } }, deviceBadge(d), ` ${n}`)))

  const peers = [...view.peers].sort((a, b) => a.model.localeCompare(b.model) || a.layers[0] - b.layers[0] || a.peer.localeCompare(b.peer))
  ui.peers.replaceChildren(
    ...(peers.length === 0
      ? [emptyRow('No peers yet: open the Contribute page or start a node.')]
      : peers.map((p) =>
          h(
            'tr',
            { attrs: { 'data-device': p.device, 'data-peer': p.peer } },
            h(
              'td',
              { class: 'mono', attrs: { title: p.via === undefined ? p.peer : `${p.peer}, listed here by relay ${p.via}` } },
              shortPeer(p.peer),
              ...(p.via !== undefined ? [h('span', { class: 'muted', text: ` via ${shortPeer(p.via)}` })] : [])
            ),
            h('td', {}, deviceBadge(p.device)),
            h('td', { text: p.model, attrs: { title: p.root } }),
            h('td', { text: layerRange(p.layers) }),
            h('td', { text: formatMs(p.msPerLayer) }),
            h('td', { text: String(p.sessions) }),
            h('td', { text: `${p.kvRoom.toLocaleString()} tokens` }),
            h('td', { text: `${Math.max(0, Math.round((p.expires - now) / 1000))} s` })
          )
        ))
  )

  ui.coverage.replaceChildren(
    ...(view.models.length === 0 ? [h('p', { class: 'muted', text: 'No model on the network yet.' })] : view.models.map(coverageChart))
  )
}

/** One bar per layer, as tall as the number of peers serving it; red where nobody does. */
function coverageChart(m: Model): HTMLElement {
  const n = m.coverage.length
  const most = Math.max(1, ...m.coverage)
  const barW = Math.max(4, Math.min(28, Math.floor(960 / Math.max(n, 1)) - 2))
  const chartH = 96
  const width = n * (barW + 2) + 2
  const svg = svgEl('svg', { width, height: chartH + 30, viewBox: `0 0 ${width} ${chartH + 30}`, role: 'img', 'aria-label': `coverage of ${m.name}` })
  m.coverage.forEach((count, layer) => {
    const x = 1 + layer * (barW + 2)
    const barH = count === 0 ? 4 : Math.max(4, Math.round((count / most) * chartH))
    const bar = svgEl('rect', {
      x,
      y: 14 + chartH - barH,
      width: barW,
      height: barH,
      rx: 2,
      class: count === 0 ? 'bar uncovered' : 'bar',
      'data-layer': layer,
      'data-peers': count
    })
    const title = svgEl('title', {})
    title.textContent = `layer ${layer}: ${count} peer(s)`
    bar.append(title)
    svg.append(bar)
    if (barW >= 12) svg.append(svgText(x + barW / 2, 10 + chartH - barH, String(count)))
    const stride = Math.ceil(24 / (barW + 2))
    if (layer % stride === 0) svg.append(svgText(x + barW / 2, chartH + 28, String(layer)))
  })
  const uncovered = m.coverage.flatMap((c, i) => (c === 0 ? [i] : []))
  const caption = h(
    'figcaption',
    {},
    h('strong', { text: m.name }),
    ` · ${n} layers · root ${m.root.slice(0, 12)}… · `,
    uncovered.length === 0
      ? h('span', { text: `every layer served by ≥ ${Math.min(...m.coverage)} peer(s)` })
      : h('span', { class: 'error', text: `cannot run: ${uncovered.length} layer(s) nobody serves` })
  )
  return h('figure', { attrs: { 'data-root': m.root } }, caption, svg)
}

/** Tokens per second from the change of the generated-tokens counter since the last poll. */
async function pollThroughput(): Promise<void> {
  try {
    const res = await fetch(`${relayOrigin()}/metrics`, { cache: 'no-store' })
    if (!res.ok) throw new TesseraError('BAD_REPLY', `HTTP ${res.status}`)
    const now = performance.now()
    const tokens = sumMetric(await res.text(), TOKENS_METRIC)
    ui.tokensTotal.textContent = `${tokens.toLocaleString()} generated through the relay's API so far`
    if (previous !== undefined && now > previous.at) {
      const rate = Math.max(0, tokens - previous.tokens) / ((now - previous.at) / 1000)
      ui.throughput.textContent = rate.toFixed(rate >= 10 ? 0 : 1)
    }
    previous = { tokens, at: now }
  } catch (err) {
    previous = undefined
    ui.throughput.textContent = '—'
    ui.tokensTotal.textContent = `metrics unavailable: ${messageOf(err)}`
  }
}

/** GET /api/ledger and GET /api/claims, as the relay answers them. */
interface LedgerReply {
  backend?: { kind: string; chainId?: number; contract?: string }
  standings: PeerStanding[]
  audit: LedgerEntry[]
  chainOk: boolean
}

/** Standings (blacklisted first, then by reputation) and the newest audit entries. */
async function pollLedger(): Promise<void> {
  try {
    const res = await fetch(`${relayOrigin()}/api/ledger`, { cache: 'no-store' })
    if (res.status === 404) {
      ui.ledgerChain.textContent = 'This relay keeps no ledger.'
      return
    }
    if (!res.ok) throw new TesseraError('BAD_REPLY', `HTTP ${res.status}`)
    const l = (await res.json()) as LedgerReply
    const where =
      l.backend?.kind === 'evm'
        ? `Kept in the TesseraStake contract ${l.backend.contract ?? ''} on chain ${l.backend.chainId ?? '?'}, rebuilt from its events. `
        : ''
    ui.ledgerChain.textContent =
      where +
      (l.chainOk
        ? `Audit chain verified from genesis: ${l.audit.at(-1)?.seq ?? 0} entries, each hashing the one before.`
        : 'The audit chain does NOT verify: the log was tampered with.')
    ui.ledgerChain.className = l.chainOk ? 'muted' : 'error'
    const standings = [...l.standings].sort((a, b) => Number(b.blacklisted) - Number(a.blacklisted) || b.reputation - a.reputation)
    ui.standings.replaceChildren(
      ...(standings.length === 0
        ? [h('tr', {}, h('td', { class: 'empty', text: 'No peer has staked yet.', attrs: { colspan: '5' } }))]
        : standings.map((s) =>
            h(
              'tr',
              { attrs: { 'data-peer': s.peer, 'data-blacklisted': String(s.blacklisted) } },
              h('td', { class: 'mono', text: shortPeer(s.peer), attrs: { title: s.peer } }),
              h('td', { text: s.stake.toLocaleString(undefined, { maximumFractionDigits: 2 }) }),
              h('td', { text: s.reputation.toFixed(2) }),
              h('td', { text: String(s.slashed) }),
              h('td', s.blacklisted ? { class: 'error', text: 'blacklisted' } : { text: 'in good standing' })
            )
          ))
    )
    ui.audit.replaceChildren(
      ...[...l.audit]
        .reverse()
        .slice(0, 30)
        .map((e) =>
          h(
            'tr',
            { attrs: { 'data-kind': e.kind } },
            h('td', { text: String(e.seq) }),
            h('td', { text: new Date(e.at).toLocaleTimeString() }),
            h('td', { class: e.kind === 'slash' || e.kind === 'blacklist' ? 'error' : '', text: e.kind }),
            h('td', { class: 'mono', text: shortPeer(e.peer), attrs: { title: e.peer } }),
            h('td', { text: e.amount === undefined ? '' : e.amount.toLocaleString(undefined, { maximumFractionDigits: 2 }) }),
            h('td', { text: auditDetail(e) }),
            h('td', { class: 'mono', text: `${e.hash.slice(0, 10)}…`, attrs: { title: e.hash } })
          )
        )
    )
  } catch (err) {
    ui.ledgerChain.textContent = `ledger unavailable: ${messageOf(err)}`
  }
  try {
    const res = await fetch(`${relayOrigin()}/api/claims`, { cache: 'no-store' })
    if (!res.ok) throw new TesseraError('BAD_REPLY', `HTTP ${res.status}`)
    const c = (await res.json()) as BoardStats
    const settled = c.final + c.overturned
    Object.assign(ui.claims.dataset, { pending: String(c.pending), final: String(c.final), overturned: String(c.overturned) })
    const challenged = settled > 0 ? ((100 * c.challenges) / settled).toFixed(1) : '0'
    ui.claims.textContent =
      settled + c.pending === 0
        ? 'Optimistic claims: none yet.'
        : `Optimistic claims: ${c.pending} pending, ${c.final} final (after ${formatMs(c.meanFinalMs)} on average), ${c.overturned} overturned; ` +
          `${c.challenges} challenge(s), ${c.frivolous} frivolous (${challenged}% of settled claims challenged)` +
          `${c.refereeBlocks.of > 0 ? `; referees re-executed ${c.refereeBlocks.ran} of the ${c.refereeBlocks.of} blocks disputed` : ''}.`
  } catch (err) {
    ui.claims.textContent = `claims unavailable: ${messageOf(err)}`
  }
}

function auditDetail(e: LedgerEntry): string {
  const d = e.data as Record<string, unknown>
  if (e.kind === 'slash' || e.kind === 'reject') return String(d.reason ?? '')
  if (e.kind === 'reputation') return `${d.ok === true ? 'verified' : 'failed'} → ${Number(d.reputation).toFixed(2)}`
  if (e.kind === 'reward') return `for evidence against ${shortPeer(String(d.accused))}`
  if (e.kind === 'blacklist') return `reputation ${Number(d.reputation).toFixed(2)}, slashed ${String(d.slashed)}×`
  if (e.kind === 'stake') return `stake now ${Number(d.stake).toLocaleString()}`
  return ''
}

/** Sums every series of one metric in Prometheus text format (`name{labels} value [timestamp]`). */
function sumMetric(text: string, name: string): number {
  let sum = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || !/^[{ ]/.test(line.slice(name.length, name.length + 1))) continue
    const rest = line.includes('}') ? line.slice(line.lastIndexOf('}') + 1) : line.slice(name.length)
    const value = Number(rest.trim().split(/\s+/)[0])
    if (Number.isFinite(value)) sum += value
  }
  return sum
}

function emptyRow(text: string): HTMLTableRowElement {
  return h('tr', {}, h('td', { class: 'empty', text, attrs: { colspan: '8' } }))
}

function svgEl(tag: string, attrs: Record<string, string | number>): SVGElement {
  const el = document.createElementNS(SVG, tag) as SVGElement
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v))
  return el
}

function svgText(x: number, y: number, text: string): SVGElement {
  const t = svgEl('text', { x, y, 'text-anchor': 'middle' })
  t.textContent = text
  return t
}
