/**
 * The Contribute page: lends this tab to the network through startContributor and shows each
 * stage (backend, download, load, serving) as it happens. URL parameters for operators and
 * tests: layers=A-B, backend=webgpu|wasm, memory=512MB, threads=N, kv=memory (WebGPU: KV cache in the tab's memory), autostart=1.
 */
import { startContributor, type Backend, type Contributor, type ContributorEvent, type ContributorOptions } from '../contributor.js'
import { TesseraError } from '../../../shared/errors.js'
import { byId, formatBytes, formatDuration, formatMs, h, layerRange, messageOf, mountNav, relayOrigin, setRelayBanner } from './nav.js'

type State = 'idle' | 'downloading' | 'loading' | 'serving' | 'refused' | 'error' | 'stopped'

mountNav('contribute')

const ui = {
  banner: byId('relay-banner', HTMLElement),
  relayInfo: byId('relay-info', HTMLElement),
  backend: byId('backend', HTMLElement),
  adapter: byId('adapter', HTMLElement),
  memory: byId('memory', HTMLInputElement),
  backendChoice: byId('backend-choice', HTMLSelectElement),
  layersChoice: byId('layers-choice', HTMLElement),
  start: byId('start', HTMLButtonElement),
  stop: byId('stop', HTMLButtonElement),
  status: byId('status', HTMLElement),
  error: byId('error', HTMLElement),
  downloadsCard: byId('downloads-card', HTMLElement),
  plan: byId('plan', HTMLElement),
  downloads: byId('downloads', HTMLElement),
  stats: byId('stats', HTMLElement)
}
const stat = (name: string): HTMLElement => byId(`stat-${name}`, HTMLElement)

const MB = 1024 * 1024
const params = new URLSearchParams(location.search)
const layers = parseLayers(params.get('layers'))
let contributor: Contributor | undefined
let running = false // between Contribute and the 'stopped' event (or a failed start)
let stopRequested = false
let state: State = 'idle'
const files = new Map<string, { bar: HTMLProgressElement; size: HTMLElement }>()
let uptime: { ms: number; at: number } | undefined

// URL parameters prefill the form.
const backendParam = params.get('backend')
if (backendParam === 'webgpu' || backendParam === 'wasm') ui.backendChoice.value = backendParam
const memoryParam = parseBytes(params.get('memory'))
if (memoryParam !== undefined) ui.memory.value = String(Math.round(memoryParam / MB))
const threadsParam = /^[1-9][0-9]?$/.test(params.get('threads') ?? '') ? Number(params.get('threads')) : undefined
// kv=memory: a WebGPU tab keeps its KV caches in the tab's memory instead of on the GPU (the bench compares the two).
const deviceKv = params.get('kv') !== 'memory'
if (layers !== undefined) ui.layersChoice.textContent = `Layers: ${layerRange(layers)} (from the URL).`

ui.start.addEventListener('click', () => {
  void start()
})
ui.stop.addEventListener('click', () => {
  void stop()
})
addEventListener('pagehide', () => {
  void contributor?.stop()
}) // withdraws our record at once
setInterval(renderUptime, 1000)
void checkRelay()
if (params.get('autostart') === '1') void start()

async function start(): Promise<void> {
  if (running) return
  running = true
  stopRequested = false
  files.clear()
  ui.downloads.replaceChildren()
  ui.downloadsCard.hidden = true
  showError(undefined)
  setState('downloading', 'starting…')
  syncButtons()
  const choice = ui.backendChoice.value
  const options: ContributorOptions = {
    relay: relayOrigin(),
    backend: choice === 'webgpu' || choice === 'wasm' ? choice : 'auto',
    memoryBytes: Math.max(1, Number(ui.memory.value) || 512) * MB,
    ...(threadsParam !== undefined ? { threads: threadsParam } : {}),
    deviceKv,
    ...(layers !== undefined ? { layers } : {})
  }
  try {
    contributor = await startContributor(options, onEvent)
    if (stopRequested) await stop()
  } catch (err) {
    running = false
    if (state !== 'refused') {
      setState('error', 'error')
      showError(messageOf(err))
    }
  }
  syncButtons()
}

async function stop(): Promise<void> {
  stopRequested = true
  ui.stop.disabled = true
  ui.status.textContent = 'stopping…'
  if (contributor === undefined) return // start() stops it as soon as it exists
  try {
    await contributor.stop()
  } catch (err) {
    showError(messageOf(err))
  }
  contributor = undefined
  running = false
  if (state !== 'refused' && state !== 'error') setState('stopped', 'stopped')
  syncButtons()
}

function onEvent(e: ContributorEvent): void {
  switch (e.type) {
    case 'backend':
      return showBackend(e.backend, e.adapter, e.reason)
    case 'plan':
      ui.downloadsCard.hidden = false
      ui.plan.textContent = `Layers ${layerRange(e.layers)} of ${e.model} (root ${e.root.slice(0, 12)}…): ${e.files} file(s), ${formatBytes(e.bytes)}.`
      stat('model').textContent = e.model
      stat('layers').textContent = layerRange(e.layers)
      return setState('downloading', `downloading layers ${layerRange(e.layers)}`)
    case 'download':
      return showDownload(e.file, e.loaded, e.total, e.cached)
    case 'refused':
      setState('refused', 'refused')
      ui.error.classList.add('refused')
      files.get(e.file)?.size.replaceChildren(h('span', { class: 'error', text: 'refused' }))
      return showError(`Refused ${e.file}\n${e.reason}\nNothing from this tab is served.`)
    case 'loading':
      return setState('loading', 'loading the shard…')
    case 'ready':
      stat('peer').textContent = e.peer
      stat('peer').title = e.peer
      stat('layers').textContent = `${layerRange(e.layers)} (${formatMs(e.msPerLayer)} per layer, measured)`
      stat('backend').textContent = e.backend
      stat('threads').textContent =
        e.backend === 'wasm'
          ? `${e.threads}${e.isolated ? '' : ' (this page is not cross-origin isolated)'}`
          : `${e.threads} (WASM only; WebGPU runs on the GPU)`
      stat('threads').dataset.threads = String(e.threads)
      stat('kv').textContent = e.kvOnDevice ? 'on the GPU, between steps too' : "in the tab's memory"
      stat('kv').dataset.place = e.kvOnDevice ? 'device' : 'memory'
      stat('signer').textContent =
        e.signer.kind === 'webcrypto'
          ? `the browser's Ed25519 (WebCrypto), ${formatUs(e.signer.us.webcrypto!)} a receipt; JavaScript's ${formatUs(e.signer.us.js)}`
          : `JavaScript Ed25519, ${formatUs(e.signer.us.js)} a receipt (this browser's WebCrypto has none)`
      stat('signer').dataset.signer = e.signer.kind
      return setState('serving', `serving layers ${layerRange(e.layers)}`)
    case 'stats':
      ui.stats.dataset.requests = String(e.requests)
      ui.stats.dataset.tokens = String(e.tokens)
      ui.stats.dataset.steps = String(e.steps)
      ui.stats.dataset.busyMs = String(e.msPerStep * e.steps)
      stat('requests').textContent = `${e.requests} (${e.steps} steps)`
      stat('tokens').textContent = String(e.tokens)
      if (e.steps > 0) stat('ms').textContent = formatMs(e.msPerStep)
      stat('sessions').textContent = String(e.sessions)
      stat('reputation').textContent = e.reputation === null ? '—' : e.reputation.toFixed(2)
      uptime = { ms: e.uptimeMs, at: Date.now() }
      return renderUptime()
    case 'stopped':
      contributor = undefined
      running = false
      uptime = undefined
      if (state !== 'refused' && state !== 'error') setState('stopped', 'stopped')
      return syncButtons()
    case 'error':
      if (state !== 'refused') setState('error', 'error')
      return showError(e.message)
  }
}

function showBackend(backend: Backend, adapter: Extract<ContributorEvent, { type: 'backend' }>['adapter'], reason?: string): void {
  ui.backend.textContent =
    adapter !== undefined
      ? `${backend}: ${[adapter.vendor, adapter.architecture].filter((s) => s !== '').join(' ') || 'unnamed adapter'}`
      : `${backend}${reason !== undefined ? `: ${reason}` : ''}`
  stat('backend').textContent = backend
  const rows: Array<[string, string]> =
    adapter === undefined
      ? []
      : [
          ['Description', adapter.description || '—'],
          ['Fallback adapter', adapter.isFallbackAdapter ? 'yes (software)' : 'no'],
          ['Max buffer', formatBytes(adapter.maxBufferSize)],
          ['Max storage binding', formatBytes(adapter.maxStorageBufferBindingSize)]
        ]
  ui.adapter.replaceChildren(...rows.flatMap(([k, v]) => [h('dt', { text: k }), h('dd', { text: v })]))
}

function showDownload(file: string, loaded: number, total: number, cached: boolean): void {
  ui.downloadsCard.hidden = false
  let row = files.get(file)
  if (row === undefined) {
    row = { bar: h('progress'), size: h('span', { class: 'size' }) }
    files.set(file, row)
    ui.downloads.append(h('div', { class: 'file' }, h('span', { class: 'mono', text: file }), row.bar, row.size))
  }
  row.bar.max = Math.max(total, 1)
  row.bar.value = Math.min(loaded, row.bar.max)
  row.size.textContent = cached ? `${formatBytes(total)} (cached)` : `${formatBytes(loaded)} / ${formatBytes(total)}`
}

function setState(s: State, label: string): void {
  state = s
  ui.status.dataset.state = s
  ui.status.textContent = label
  if (s !== 'refused') ui.error.classList.remove('refused')
}

function showError(message: string | undefined): void {
  ui.error.textContent = message ?? ''
}

function syncButtons(): void {
  ui.start.disabled = running
  ui.stop.disabled = !running
}

function renderUptime(): void {
  stat('uptime').textContent = uptime === undefined ? '—' : formatDuration(uptime.ms + Date.now() - uptime.at)
}

async function checkRelay(): Promise<void> {
  try {
    const res = await fetch(`${relayOrigin()}/api/network`)
    if (!res.ok) throw new TesseraError('BAD_REPLY', `HTTP ${res.status}`)
    const view = (await res.json()) as { peers: unknown[]; models: Array<{ name: string; layers: number }> }
    setRelayBanner(ui.banner, undefined)
    const models = view.models.map((m) => `${m.name} (${m.layers} layers)`).join(', ') || 'no model yet'
    ui.relayInfo.textContent = `Relay ${location.host}: ${view.peers.length} peer(s) serving ${models}.`
  } catch (err) {
    setRelayBanner(ui.banner, messageOf(err))
    ui.relayInfo.textContent = 'Relay: unreachable.'
  }
}

/** "A-B" → [A, B]; anything else → undefined (the contributor picks). */
function parseLayers(s: string | null): [number, number] | undefined {
  const m = /^(\d+)\s*[-–]\s*(\d+)$/.exec(s ?? '')
  if (m === null) return undefined
  const [a, b] = [Number(m[1]), Number(m[2])]
  return b > a ? [a, b] : undefined
}

/** "512MB", "2GB", "1.5 GiB", "800" (MB) → bytes, binary units as the CLI reads them. */
function parseBytes(s: string | null): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib)?$/i.exec((s ?? '').trim())
  if (m === null) return undefined
  const unit = (m[2] ?? 'mb').toLowerCase().replace('i', '')
  const scale: Record<string, number> = { b: 1, kb: 1024, mb: MB, gb: 1024 * MB }
  return Number(m[1]) * scale[unit]
}

const formatUs = (us: number): string => (us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${Math.round(us)} µs`)
