/**
 * The Playground: generates through the network with the SDK (this tab dials the peers), streams
 * the answer (text through the model's tokenizer, or ids), and draws the route: who served which
 * layers on what device, and any failover.
 */
import {
  connect,
  type ChatRequest,
  type GenerateRequest,
  type Generation,
  type GenerationResult,
  type ModelText,
  type NetworkView,
  type Tessera,
  type TextTokenEvent,
  type TokenEvent,
  type VerificationOptions
} from '../sdk.js'
import { InputError, TesseraError } from '../../../shared/errors.js'
import { mountZkCard } from './zk-card.js'
import { byId, deviceBadge, formatMs, h, layerRange, messageOf, mountNav, relayOrigin, setRelayBanner, shortPeer } from './nav.js'

type Hop = TokenEvent['hops'][number]
type Switch = GenerationResult['route']['switches'][number]
type VerificationMode = VerificationOptions['mode']

mountNav('playground')

const ui = {
  banner: byId('relay-banner', HTMLElement),
  model: byId('model', HTMLSelectElement),
  prompt: byId('prompt', HTMLTextAreaElement),
  promptIds: byId('prompt-ids', HTMLInputElement),
  chat: byId('chat', HTMLInputElement),
  textNote: byId('text-note', HTMLElement),
  maxTokens: byId('max-tokens', HTMLInputElement),
  temperature: byId('temperature', HTMLInputElement),
  topP: byId('top-p', HTMLInputElement),
  seed: byId('seed', HTMLInputElement),
  generate: byId('generate', HTMLButtonElement),
  cancel: byId('cancel', HTMLButtonElement),
  output: byId('output', HTMLElement),
  error: byId('generation-error', HTMLElement),
  ttft: byId('ttft', HTMLElement),
  tps: byId('tps', HTMLElement),
  count: byId('count', HTMLElement),
  route: byId('route', HTMLElement),
  switches: byId('switches', HTMLUListElement),
  verification: byId('verification', HTMLSelectElement),
  verificationSummary: byId('verification-summary', HTMLElement),
  settlement: byId('settlement', HTMLElement),
  faults: byId('faults', HTMLUListElement)
}

const RETRY_MS = 5000
let tessera: Tessera | undefined
let running: AbortController | undefined
let shownModels = '' // the model list as last drawn, so a poll that changes nothing leaves the select alone
/** The selected model's text, as far as it is known: undefined while it loads, null when it has no tokenizer. */
let modelText: { root: string; text?: ModelText | null } | undefined

ui.generate.addEventListener('click', () => {
  void generate()
})
ui.model.addEventListener('change', () => {
  void loadText()
})
// The standard abort reason; its message is what the page shows.
ui.cancel.addEventListener('click', () => {
  running?.abort(new DOMException('cancelled', 'AbortError'))
})
addEventListener('pagehide', () => {
  void tessera?.close()
})
void join()
mountZkCard(() => tessera)
setInterval(() => {
  if (tessera !== undefined && running === undefined) void loadModels()
}, RETRY_MS)

/** Joins the network through the relay; retries until it answers. */
async function join(): Promise<void> {
  try {
    // connect() would fail on a relay without /api/relay with a less helpful message; ask first.
    const res = await fetch(`${relayOrigin()}/api/relay`)
    if (!res.ok) throw new TesseraError('BAD_REPLY', `/api/relay answered HTTP ${res.status}`)
    tessera = await connect({ relay: relayOrigin() })
    await loadModels()
  } catch (err) {
    tessera = undefined
    shownModels = ''
    setRelayBanner(ui.banner, `${messageOf(err)} (retrying every ${RETRY_MS / 1000} s)`)
    ui.model.replaceChildren(h('option', { text: 'relay unreachable' }))
    ui.model.disabled = true
    syncButtons()
    setTimeout(() => {
      void join()
    }, RETRY_MS)
  }
}

/** Fills the model list from the network view; keeps the current choice when it is still there. */
async function loadModels(): Promise<void> {
  if (tessera === undefined) return
  let view: NetworkView
  try {
    view = await tessera.network()
    setRelayBanner(ui.banner, undefined)
  } catch (err) {
    setRelayBanner(ui.banner, messageOf(err))
    return
  }
  const key = JSON.stringify(view.models)
  if (key === shownModels) return
  shownModels = key
  const full = (m: NetworkView['models'][number]): boolean => m.coverage.length > 0 && m.coverage.every((c) => c > 0)
  const previous = ui.model.value
  const options = view.models.map((m) =>
    h('option', {
      text: `${m.name} · ${m.layers} layers · ${full(m) ? `≥ ${Math.min(...m.coverage)} peer(s) per layer` : 'not fully covered'}`,
      attrs: { value: m.root }
    })
  )
  ui.model.replaceChildren(...(options.length > 0 ? options : [h('option', { text: 'no model on the network yet', attrs: { value: '' } })]))
  ui.model.disabled = options.length === 0
  const keep = view.models.find((m) => m.root === previous) ?? view.models.find(full) ?? view.models[0]
  if (keep !== undefined) ui.model.value = keep.root
  syncButtons()
  void loadText()
}

/**
 * Fetches the selected model's tokenizer and chat template (the SDK keeps them for the
 * generations to come) and says what the prompt fields can take.
 */
async function loadText(): Promise<void> {
  const root = ui.model.value
  if (tessera === undefined || root === '' || modelText?.root === root) return
  modelText = { root }
  const name = ui.model.selectedOptions[0]?.text.split(' · ')[0] ?? root
  ui.textNote.textContent = `Loading the tokenizer of ${name}…`
  ui.textNote.className = 'muted'
  let text: ModelText | undefined
  try {
    text = await tessera.text(root)
  } catch (err) {
    if (modelText?.root === root) modelText = undefined // tried again with the next poll or choice
    ui.textNote.textContent = `The tokenizer of ${name} could not be loaded (${messageOf(err)}): give token ids, or try again.`
    ui.textNote.className = 'error'
    return
  }
  if (modelText?.root !== root) return // another model was chosen meanwhile
  modelText.text = text ?? null
  showText(name, text)
}

function showText(name: string, text: ModelText | undefined): void {
  ui.prompt.disabled = text === undefined
  ui.chat.disabled = text?.chat === undefined
  if (ui.chat.disabled) ui.chat.checked = false
  ui.textNote.className = 'muted'
  ui.textNote.textContent =
    text === undefined
      ? `${name} ships no tokenizer, so it cannot read text: give the prompt as token ids below.`
      : `Text is read with ${name}'s own tokenizer (BOS as the model wants it), fetched from the relay and checked against its manifest.` +
        (text.chat === undefined ? ' It has no chat template, so no chat.' : ' Chat sends the prompt through its chat template.')
}

async function generate(): Promise<void> {
  if (tessera === undefined || running !== undefined) return
  let ask: (t: Tessera, signal: AbortSignal) => Generation
  try {
    ask = readRequest()
  } catch (err) {
    ui.error.textContent = messageOf(err)
    return
  }
  const abort = new AbortController()
  running = abort
  syncButtons()
  resetOutput()
  const tokens: number[] = []
  let text: string | undefined
  const started = performance.now()
  let firstAt: number | undefined
  try {
    const gen = ask(tessera, abort.signal)
    for await (const t of gen) {
      firstAt ??= performance.now()
      tokens.push(t.id)
      if (t.text !== undefined) text = (text ?? '') + t.text
      showToken(t)
      showSpeed(tokens.length, firstAt - started, performance.now() - started)
      drawRoute(t.hops)
    }
    const result = await gen.result
    showSpeed(result.tokens.length, result.timings.firstTokenMs, result.timings.totalMs)
    drawRoute(result.route.hops)
    drawSwitches(result.route.switches)
    drawVerification(result.verification)
    if (result.settlement !== undefined) void showSettlement(result.verification.window ?? 0, result.settlement)
    ui.output.dataset.tokens = JSON.stringify(result.tokens)
    if (result.text !== undefined) ui.output.dataset.text = result.text
    ui.output.dataset.done = 'true'
  } catch (err) {
    ui.output.dataset.tokens = JSON.stringify(tokens)
    if (text !== undefined) ui.output.dataset.text = text
    ui.output.dataset.error = messageOf(err)
    ui.error.textContent = messageOf(err)
  } finally {
    running = undefined
    syncButtons()
  }
}

/** One token: its text as it streams, or its id when the model has no tokenizer. */
function showToken(t: TextTokenEvent): void {
  if (t.text === undefined) {
    ui.output.append(h('span', { class: 'tok', text: String(t.id) }), ' ')
    return
  }
  ui.output.classList.add('text')
  ui.output.append(h('span', { class: 'tok', text: t.text, attrs: { title: `token ${t.id}`, 'data-id': String(t.id) } }))
}

/**
 * The generation the form describes, or an error that says which field is wrong: token ids when
 * given (sent as they are), else the text, as a completion or as one user message of a chat.
 */
function readRequest(): (t: Tessera, signal: AbortSignal) => Generation {
  const o = readOptions()
  if (ui.promptIds.value.trim() !== '') {
    const req: GenerateRequest = { ...o, prompt: readIds() }
    return (t, signal) => t.generate(req, signal)
  }
  if (modelText?.text === null) throw new InputError('this model ships no tokenizer, so it cannot read text: give the prompt as token ids')
  const prompt = ui.prompt.value
  if (prompt.trim() === '') throw new InputError('write a prompt, or give token ids')
  if (ui.chat.checked) {
    const req: ChatRequest = { ...o, messages: [{ role: 'user', content: prompt }] }
    return (t, signal) => t.chat(req, signal)
  }
  const req: GenerateRequest = { ...o, prompt }
  return (t, signal) => t.generate(req, signal)
}

function readIds(): number[] {
  const ids = ui.promptIds.value
    .split(/[\s,]+/)
    .filter((s) => s !== '')
    .map(Number)
  if (!ids.every((n) => Number.isInteger(n) && n >= 0)) throw new InputError('token ids are non-negative integers separated by commas')
  return ids
}

/** Everything but the prompt. */
function readOptions(): Omit<GenerateRequest, 'prompt'> {
  const maxTokens = Number(ui.maxTokens.value)
  if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new InputError('max tokens must be a whole number ≥ 1')
  const temperature = Number(ui.temperature.value)
  if (!(temperature >= 0)) throw new InputError('temperature must be ≥ 0 (0 is greedy)')
  const topP = Number(ui.topP.value)
  if (!(topP > 0 && topP <= 1)) throw new InputError('top-p must be in (0, 1]')
  const seed = ui.seed.value.trim() === '' ? undefined : Number(ui.seed.value)
  if (seed !== undefined && !Number.isInteger(seed)) throw new InputError('the seed must be a whole number')
  const mode = ui.verification.value as VerificationMode
  const model = ui.model.value !== '' ? { model: ui.model.value } : {}
  return { maxTokens, temperature, topP, verification: { mode }, ...(seed !== undefined ? { seed } : {}), ...model }
}

function resetOutput(): void {
  ui.output.replaceChildren()
  ui.output.classList.remove('text')
  for (const k of ['done', 'tokens', 'text', 'error']) delete ui.output.dataset[k]
  ui.error.textContent = ''
  ui.switches.replaceChildren()
  ui.faults.replaceChildren()
  ui.settlement.textContent = ''
  delete ui.settlement.dataset.status
  ui.verificationSummary.textContent = ui.verification.value === 'none' ? 'Not checked: one peer per hop (receipts are still verified).' : 'checking…'
  ui.ttft.textContent = '—'
  ui.tps.textContent = '—'
  ui.count.textContent = '0'
}

/** Time to first token, and decode speed: the tokens after the first over the time after it. */
function showSpeed(n: number, firstMs: number, totalMs: number): void {
  ui.count.textContent = String(n)
  ui.ttft.textContent = formatMs(firstMs)
  ui.tps.textContent = n > 1 && totalMs > firstMs ? ((n - 1) / ((totalMs - firstMs) / 1000)).toFixed(1) : '—'
}

/** One box per hop, in order: peer, device, layers and round-trip time, and who checked it. */
function drawRoute(hops: Hop[]): void {
  const boxes = hops.map((hop, i) => {
    const ms = hop.nodeMs !== undefined ? `${formatMs(hop.ms)} (node ${formatMs(hop.nodeMs)})` : formatMs(hop.ms)
    const checked = hop.checkedBy !== undefined && hop.checkedBy.length > 0 ? ` · checked by ${hop.checkedBy.map(shortPeer).join(', ')}` : ''
    const attrs = {
      'data-device': hop.device,
      'data-peer': hop.peer,
      'data-layers': hop.layers.join(','),
      'data-verdict': hop.verdict ?? 'unchecked',
      title: hop.peer
    }
    const box = h(
      'div',
      { class: 'hop', attrs },
      h('div', {}, h('span', { class: 'peer', text: shortPeer(hop.peer) }), ' ', deviceBadge(hop.device)),
      h('div', { class: 'meta', text: `layers ${layerRange(hop.layers)} · ${ms}` }),
      h('div', { class: `meta verdict-${hop.verdict ?? 'unchecked'}`, text: `${hop.verdict ?? 'unchecked'}${checked}` })
    )
    return i === 0 ? [box] : [h('span', { class: 'arrow', text: '→', attrs: { 'aria-hidden': 'true' } }), box]
  })
  ui.route.replaceChildren(...boxes.flat())
}

function drawSwitches(switches: Switch[]): void {
  ui.switches.replaceChildren(
    ...switches.map((s) => {
      const to = s.replacement.map((r) => shortPeer(r.peer)).join(' + ') || 'nobody'
      return h('li', { text: `layers ${layerRange(s.layers)}: peer ${shortPeer(s.failed)} failed (${s.reason}) → ${to}, at step ${s.step}` })
    })
  )
}

/** Optimistic: pending until the window closes, then final, unverified (not every part checked), or overturned with the corrected tokens. */
async function showSettlement(windowMs: number, settlement: NonNullable<GenerationResult['settlement']>): Promise<void> {
  ui.settlement.dataset.status = 'pending'
  ui.settlement.textContent = `Pending: watchers may challenge these tokens for ${formatMs(windowMs)}…`
  try {
    const s = await settlement
    ui.settlement.dataset.status = s.status
    const audited = (a: (typeof s.audits)[number]): string => (a.watcher !== undefined ? `audited by ${shortPeer(a.watcher)}` : 'not audited')
    const audits = s.audits.map((a) => `layers ${layerRange(a.layers)}: ${audited(a)} (${a.note})`).join('; ')
    const challenges = s.challenges
      .map((c) => {
        const referee = c.referee !== undefined ? shortPeer(c.referee) : 'none'
        const reran = c.reexecuted !== undefined ? ` re-executed ${c.reexecuted.what} (${c.reexecuted.layers} of ${c.reexecuted.of} blocks)` : ''
        const slashed = c.slashed !== undefined ? `, ${shortPeer(c.slashed.peer)} slashed ${c.slashed.amount}` : ''
        return `${c.outcome}: ${shortPeer(c.accused)} challenged by ${shortPeer(c.challenger)}, referee ${referee}${reran}${slashed}`
      })
      .join('; ')
    const after = formatMs(s.afterMs)
    const said = challenges !== '' ? ` ${challenges}.` : ''
    ui.settlement.textContent =
      s.status === 'final'
        ? `Final after ${after}. ${audits}.${said}`
        : s.status === 'unverified'
          ? // Nothing proved these tokens wrong, but not every hop was re-executed or every challenge decided.
            `Unverified after ${after}: not every part of the claim could be checked. ${audits}.${said}`
          : `Overturned after ${after}: ${challenges}. Corrected tokens: ${s.tokens?.join(' ') ?? 'could not be regenerated'}.`
    ui.settlement.className = s.status === 'final' ? 'muted' : s.status === 'unverified' ? 'warning' : 'error'
  } catch (err) {
    ui.settlement.textContent = `The claim could not be settled: ${messageOf(err)}`
  }
}

/** What was checked, how close honest peers came to the thresholds, and who was caught. */
function drawVerification(v: GenerationResult['verification']): void {
  // For scripts and tests: the numbers behind the sentence.
  Object.assign(ui.verificationSummary.dataset, {
    checks: String(v.checks),
    mismatches: String(v.mismatches),
    hops: JSON.stringify(v.hops),
    closest: JSON.stringify(v.closest)
  })
  if (v.mode === 'none') return
  const per = v.hops
    .map(({ layers, verdicts: n }) => `layers ${layerRange(layers)}: ${n.agreed} agreed, ${n.overruled} overruled, ${n.unchecked} unchecked`)
    .join('; ')
  const { minOverlap, maxRelErr } = v.closest
  const margin = v.checks > 0 ? ` Closest honest agreement: top-k overlap ${minOverlap.toFixed(2)}, relative error ${maxRelErr.toExponential(1)}.` : ''
  ui.verificationSummary.textContent = `${v.mode}: ${v.checks} hop-steps re-run and compared, ${v.mismatches} disagreed. ${per}.${margin}`
  ui.faults.replaceChildren(
    ...v.faults.map((f) =>
      h('li', {
        class: 'error',
        attrs: { 'data-accused': f.accused },
        text:
          `step ${f.step}, layers ${layerRange(f.layers)}: peer ${shortPeer(f.accused)}` +
          ` ${f.slashed ? `was slashed ${f.amount}` : 'was caught'} (${f.reason})`
      })
    )
  )
}

function syncButtons(): void {
  ui.generate.disabled = tessera === undefined || running !== undefined || ui.model.disabled
  ui.cancel.disabled = running === undefined
}
