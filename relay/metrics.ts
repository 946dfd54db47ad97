/**
 * Prometheus metrics of the relay: counters and histograms that the HTTP app updates, and gauges
 * that read the network view at scrape time (so they are never stale and cost nothing between
 * scrapes).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Metric } from 'prom-client'
import type { NetworkView } from '../shared/client/types.js'

export const METRIC_NAMES = {
  requests: 'tessera_http_requests_total',
  tokens: 'tessera_generated_tokens_total',
  generation: 'tessera_generation_seconds',
  firstToken: 'tessera_first_token_seconds',
  peers: 'tessera_peers',
  peersByDevice: 'tessera_peers_by_device',
  models: 'tessera_models',
  minCoverage: 'tessera_model_min_coverage',
  fileBytes: 'tessera_file_bytes_served_total'
} as const

export interface RelayMetrics {
  registry: Registry
  requests: Counter<'method' | 'route' | 'status'>
  tokens: Counter<'model'>
  generation: Histogram<'model'>
  firstToken: Histogram<'model'>
  fileBytes: Counter<'via'>
}

// Generation over a WAN of tabs spans from sub-second to minutes.
const SECONDS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]

/** A fresh Registry holding the relay's metrics; `process` adds prom-client's default process metrics. */
export function createMetricsRegistry(network: () => NetworkView, o: { process?: boolean } = {}): Registry {
  const registry = new Registry()
  if (o.process === true) collectDefaultMetrics({ register: registry, prefix: 'tessera_' })
  relayMetrics(registry, network)
  return registry
}

/**
 * The relay's metrics in `registry`, created there if missing. Idempotent, so a caller may pass
 * any Registry (shared with other subsystems) and the HTTP app still finds its counters.
 */
export function relayMetrics(registry: Registry, network: () => NetworkView): RelayMetrics {
  const get = <M extends Metric>(name: string, make: () => M): M => (registry.getSingleMetric(name) as M | undefined) ?? make()
  const registers = [registry]
  get(
    METRIC_NAMES.peers,
    () =>
      new Gauge({
        name: METRIC_NAMES.peers,
        help: 'Live peers serving layers',
        registers,
        collect() {
          this.set(network().peers.length)
        }
      })
  )
  get(
    METRIC_NAMES.peersByDevice,
    () =>
      new Gauge({
        name: METRIC_NAMES.peersByDevice,
        help: 'Live peers by device kind (cpu, cuda, wasm, webgpu, …)',
        labelNames: ['device'],
        registers,
        collect() {
          const counts = new Map<string, number>()
          for (const p of network().peers) counts.set(p.device, (counts.get(p.device) ?? 0) + 1)
          this.reset() // devices that left must disappear, not linger at their last count
          for (const [device, n] of counts) this.set({ device }, n)
        }
      })
  )
  get(
    METRIC_NAMES.models,
    () =>
      new Gauge({
        name: METRIC_NAMES.models,
        help: 'Models known to the network',
        registers,
        collect() {
          this.set(network().models.length)
        }
      })
  )
  get(
    METRIC_NAMES.minCoverage,
    () =>
      new Gauge({
        name: METRIC_NAMES.minCoverage,
        help: 'Peers serving the least-served layer of each model (0: the model cannot be run)',
        labelNames: ['model'],
        registers,
        collect() {
          this.reset()
          for (const m of network().models) this.set({ model: m.name }, m.coverage.length === 0 ? 0 : Math.min(...m.coverage))
        }
      })
  )
  const counter = <L extends string>(name: string, help: string, labelNames: readonly L[]): Counter<L> =>
    get(name, () => new Counter({ name, help, labelNames, registers }))
  const histogram = (name: string, help: string): Histogram<'model'> =>
    get(name, () => new Histogram({ name, help, labelNames: ['model'] as const, buckets: SECONDS, registers }))
  return {
    registry,
    requests: counter(METRIC_NAMES.requests, 'HTTP requests by method, route and status', ['method', 'route', 'status'] as const),
    tokens: counter(METRIC_NAMES.tokens, 'Tokens generated through the HTTP API', ['model'] as const),
    generation: histogram(METRIC_NAMES.generation, 'Whole generation latency'),
    firstToken: histogram(METRIC_NAMES.firstToken, 'Time to first token'),
    fileBytes: counter(METRIC_NAMES.fileBytes, 'Bytes of model files served: "libp2p" to nodes (chunks), "http" to tabs (/shards)', ['via'] as const)
  }
}
