/**
 * What every page shares: the header with its navigation, typed DOM helpers (no innerHTML:
 * every string a page shows goes in as text), and small formatters.
 */
import { ConfigError } from '../../../shared/errors.js'

export type Page = 'home' | 'contribute' | 'playground' | 'network'

const LINKS: Array<{ page: Page; href: string; label: string }> = [
  { page: 'contribute', href: 'contribute.html', label: 'Contribute' },
  { page: 'playground', href: 'playground.html', label: 'Playground' },
  { page: 'network', href: 'network.html', label: 'Network' }
]

/** Puts the site header at the top of the page, marking `current`. */
export function mountNav(current: Page): void {
  const nav = h('nav', { attrs: { 'aria-label': 'Tessera pages' } })
  for (const l of LINKS) {
    const a = h('a', { text: l.label, attrs: { href: l.href } })
    if (l.page === current) a.setAttribute('aria-current', 'page')
    nav.append(a)
  }
  const brand = h('a', { class: 'brand', text: 'Tessera', attrs: { href: './' } })
  if (current === 'home') brand.setAttribute('aria-current', 'page')
  document.body.prepend(h('header', { class: 'site' }, brand, nav))
}

interface Props {
  class?: string
  text?: string
  attrs?: Record<string, string>
}

/** Creates an element with text, attributes and children. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, props: Props = {}, ...children: Array<Node | string>): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag)
  if (props.class !== undefined) el.className = props.class
  if (props.text !== undefined) el.textContent = props.text
  for (const [k, v] of Object.entries(props.attrs ?? {})) el.setAttribute(k, v)
  el.append(...children)
  return el
}

/** The element with this id, checked to be of the expected kind. */
export function byId<T extends Element>(id: string, kind: abstract new (...args: never[]) => T): T {
  const el = document.getElementById(id)
  if (!(el instanceof kind)) {
    throw new ConfigError(`page is missing #${id} (${kind.name}): its HTML and script are out of step; rebuild the pages (npm run build)`)
  }
  return el
}

/** A coloured badge for a device kind (webgpu, wasm, cuda, cpu, or anything else a peer says). */
export function deviceBadge(device: string): HTMLSpanElement {
  const known = ['webgpu', 'wasm', 'cuda', 'cpu'].includes(device) ? device : 'other'
  return h('span', { class: `badge device-${known}`, text: device })
}

/** The relay this page talks to: the origin that served it. */
export const relayOrigin = (): string => location.origin

/** The tail of a peer id, enough to tell peers apart at a glance. */
export const shortPeer = (peer: string): string => (peer.length > 8 ? `…${peer.slice(-8)}` : peer)

/** Layers [a, b) as "a–b". */
export const layerRange = ([a, b]: [number, number]): string => `${a}–${b}`

/** Bytes in binary units named as the CLI names them (`bytes`: 1 MB = 1024² B). */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return '—'
  const units = ['B', 'KB', 'MB', 'GB', 'TB']
  let i = 0
  while (Math.abs(n) >= 1024 && i < units.length - 1) {
    n /= 1024
    i++
  }
  return `${n.toFixed(i === 0 || n >= 100 ? 0 : 1)} ${units[i]}`
}

export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000))
  if (s < 60) return `${s} s`
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`
  return `${Math.floor(s / 3600)} h ${Math.floor(s / 60) % 60} min`
}

export function formatMs(ms: number): string {
  return `${ms.toFixed(ms >= 100 ? 0 : ms >= 1 ? 1 : 2)} ms`
}

/** The message of anything thrown. */
export const messageOf = (err: unknown): string => (err instanceof Error ? err.message : String(err))

/** Shows or clears the page's "cannot reach the relay" banner (an element of class `banner`). */
export function setRelayBanner(el: HTMLElement, problem: string | undefined): void {
  el.hidden = problem === undefined
  el.dataset.state = problem === undefined ? 'ok' : 'down'
  el.textContent = problem === undefined ? '' : `Cannot reach the relay at ${relayOrigin()}: ${problem}`
}
