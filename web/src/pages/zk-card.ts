/**
 * The playground's zero-knowledge card: pick a ZK model the relay publishes, prove a random
 * int8 input on a peer, and verify the proof in this tab (the SDK's zk()). Shows what the
 * proof costs: its size, the peer's proving time, this tab's verification time.
 */
import type { Tessera } from '../sdk.js'
import { byId, formatMs, messageOf, relayOrigin, shortPeer } from './nav.js'

interface Entry {
  name: string
  constraints: number
  power: number
  shape: { layers: Array<{ inputs: number; outputs: number }> }
}

export function mountZkCard(tessera: () => Tessera | undefined): void {
  const ui = {
    model: byId('zk-model', HTMLSelectElement),
    prove: byId('zk-prove', HTMLButtonElement),
    result: byId('zk-result', HTMLElement)
  }
  let models: Entry[] = []
  const load = async (): Promise<void> => {
    try {
      const res = await fetch(`${relayOrigin()}/api/zk/models`)
      models = res.ok ? ((await res.json()) as { models: Entry[] }).models : []
    } catch {
      models = []
    }
    const label = (m: Entry): string =>
      `${m.name}: ${m.shape.layers.map((l) => `${l.inputs}×${l.outputs}`).join(', ')} (${m.constraints.toLocaleString()} constraints)`
    ui.model.replaceChildren(...models.map((m) => new Option(label(m), m.name)))
    ui.prove.disabled = models.length === 0
    if (models.length === 0) ui.result.textContent = 'This relay publishes no ZK model (start it with --zk small).'
  }
  ui.prove.addEventListener('click', () => {
    void (async () => {
      const t = tessera()
      const m = models.find((x) => x.name === ui.model.value)
      if (t === undefined || m === undefined) return
      ui.prove.disabled = true
      ui.result.removeAttribute('data-error')
      ui.result.textContent = 'Proving on a peer…'
      try {
        const input = Array.from(crypto.getRandomValues(new Int8Array(m.shape.layers[0].inputs)))
        const r = await t.zk(m.name, input)
        const { bytes, proveMs, verifyMs } = r.proof
        Object.assign(ui.result.dataset, { output: JSON.stringify(r.output), proofBytes: String(bytes), proveMs: String(proveMs), verifyMs: String(verifyMs) })
        ui.result.textContent =
          `Verified in this tab in ${formatMs(verifyMs)}: proof of ${bytes} bytes, ` +
          `proven by ${shortPeer(r.peer)} in ${formatMs(proveMs)}. ` +
          `Output: ${r.values.map((v) => v.toFixed(3)).join(' ')}`
      } catch (err) {
        ui.result.dataset.error = messageOf(err)
        ui.result.textContent = `Not verified: ${messageOf(err)}`
      } finally {
        ui.prove.disabled = false
      }
    })()
  })
  void load()
}
