/**
 * Which model a request gets: the one it names (by name or root), or else the first one the
 * network covers fully. The client routes it and the relay picks its tokenizer by the same rule.
 */
import { InputError, NoRouteError } from '../errors.js'
import type { NetworkView } from '../client/types.js'

export type ModelView = NetworkView['models'][number]

export function chooseModel<M extends ModelView>(models: M[], want?: string): M {
  const chosen =
    want === undefined ? models.find((m) => m.coverage.length > 0 && m.coverage.every((c) => c > 0)) : models.find((m) => m.name === want || m.root === want)
  if (chosen !== undefined) return chosen
  const known = models.map((m) => `${m.name} (${m.root.slice(0, 12)}…)`).join(', ') || 'none'
  throw want === undefined
    ? new NoRouteError(`no model is fully served by the network; models seen: ${known}`)
    : new InputError(`unknown model "${want}"; models on the network: ${known}`)
}
