import { checkManifest, type Manifest } from '../manifest.js'
import { InputError, TesseraError } from '../errors.js'
import { loadModelText, type ModelText } from './model-text.js'

/**
 * A model's text from a relay's HTTP API, for clients that run the network themselves (the SDK in
 * a page, the CLI through --relay): the manifest from /models/:root/manifest.json, the tokenizer
 * files from /shards/:sha256, each checked against the manifest's hash before it is used.
 */
export async function fetchModelText(api: string, model?: string): Promise<{ manifest: Manifest; text?: ModelText }> {
  const base = api.replace(/\/+$/, '')
  const get = async (path: string): Promise<Response> => {
    const res = await fetch(`${base}${path}`)
    if (!res.ok) throw new TesseraError('UNREACHABLE', `GET ${base}${path}: HTTP ${res.status}`)
    return res
  }
  const { models } = (await (await get('/api/models')).json()) as { models: Array<{ name: string; root: string }> }
  const m = model === undefined ? models[0] : models.find((x) => x.name === model || x.root === model)
  if (m === undefined) {
    const known = models.map((x) => x.name).join(', ') || 'none'
    throw new InputError(
      model === undefined ? `the relay at ${base} serves no model files` : `the relay at ${base} serves no model ${model} (it serves: ${known})`
    )
  }
  const manifest = checkManifest(await (await get(`/models/${m.root}/manifest.json`)).json(), `${base}/models/${m.root}/manifest.json`)
  if (manifest.root !== m.root) throw new TesseraError('UNREACHABLE', `the relay at ${base} answered the manifest of ${manifest.root} for ${m.root}`)
  const text = await loadModelText(manifest, async (f) => new Uint8Array(await (await get(`/shards/${f.sha256}`)).arrayBuffer()))
  return { manifest, text }
}
