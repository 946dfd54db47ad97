/**
 * `tessera node` — serve a run of a model's layers to the network until Ctrl-C; prints one JSON
 * ready line (peer id, layers, addresses) that `tessera up` and tests wait for.
 */
import type { Command } from 'commander'
import { InvalidArgumentError, Option } from 'commander'
import { startNode } from '../../native-node/node.js'
import type { DevicePreference } from '../../native-node/ort.js'
import { FAULT_KINDS, parseFault, type Fault } from '../../shared/node/fault.js'
import { REBALANCE_S } from '../config.js'
import { BATCH_DEFAULTS } from '../../shared/batch.js'
import { int, memory, repeated } from './options.js'
import { untilSignal } from './lifecycle.js'
import { hopMarksToStderr } from '../../host/hop-marks.js'
import cliProgress from 'cli-progress'
import type { DownloadProgress } from '../../shared/files/download.js'

interface NodeFlags {
  relay: string[]
  model: string
  cache?: string
  mirror?: string[]
  maxDownloadRate?: number
  layers?: [number, number]
  memory?: number
  maxLayers?: number
  rebalance: number
  device: DevicePreference
  batch: number
  batchWaitMs: number
  prefillChunk: number
  listen?: string[]
  key?: string
  fault?: Fault
  zk?: string[]
  zkForge?: boolean
}

function layerRange(v: string): [number, number] {
  const m = /^(\d+)-(\d+)$/.exec(v)
  if (m === null || Number(m[1]) >= Number(m[2])) throw new InvalidArgumentError('expected START-END with START < END, e.g. 0-16 (END exclusive)')
  return [Number(m[1]), Number(m[2])]
}

/** A bad --fault is a usage error, reported by commander like any other. */
function fault(v: string): Fault {
  try {
    return parseFault(v)
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message)
  }
}

const faultHelp = FAULT_KINDS.map((k) => (k === 'perturb' ? 'perturb=EPS' : k === 'skip-layer' ? 'skip-layer=N' : k === 'slow' ? 'slow=MS' : k)).join(', ')

export function registerNode(program: Command): void {
  program
    .command('node')
    .description("serve a run of a model's layers to the network")
    .requiredOption(
      '--relay <multiaddr>',
      'the relay to join, e.g. /ip4/127.0.0.1/tcp/9090/ws/p2p/12D3…; give it again for more relays of one federation (each lists this node)',
      repeated
    )
    .requiredOption(
      '--model <dir|name>',
      "a built model directory (tessera build-model), or a model's name or root on the relay: then only the shards this node serves are downloaded, into --cache"
    )
    .option('--cache <dir>', 'where downloaded shard files are kept (default $XDG_CACHE_HOME/tessera or ~/.cache/tessera)')
    .option(
      '--mirror <url>',
      "joining by name: also fetch shard files over HTTP from URL/shards/SHA256 (a relay's HTTP address, a mirror, a CDN); give it again for more",
      repeated
    )
    .option('--max-download-rate <size>', 'joining by name: download at most this much per second, e.g. 20MB (default: as fast as the sources send)', memory)
    .option('--layers <a-b>', 'layers to serve, [a, b) on shard boundaries (default: what the network lacks, sized to memory)', layerRange)
    .option('--memory <size>', 'memory this node may use (default: free VRAM on CUDA, 70% of free RAM on CPU)', memory)
    .option('--max-layers <k>', 'serve at most this many layers (default: as many as fit in memory)', int(1))
    .option('--rebalance <seconds>', 'without --layers: how often to check whether moving to other layers would help the network', int(1), REBALANCE_S)
    .addOption(new Option('--device <device>', 'execution provider').choices(['auto', 'cuda', 'cpu']).default('auto'))
    .option('--batch <rows>', 'one-token steps of different sessions run together at most (1: no batching)', int(1), BATCH_DEFAULTS.maxRows)
    .option('--batch-wait-ms <ms>', 'how long a ready step waits for other open sessions to join its batch', int(0), BATCH_DEFAULTS.waitMs)
    .option(
      '--prefill-chunk <tokens>',
      "a longer step is fed in chunks of this many tokens, other sessions' decode steps between",
      int(1),
      BATCH_DEFAULTS.prefillChunk
    )
    .option('--listen <multiaddrs>', 'comma-separated listen addresses (default: loopback TCP and WebSockets)', (v: string) => v.split(','))
    .option('--key <file>', "keep the node's identity in this file (created if missing)")
    .option('--zk <models>', 'also prove inferences of these ZK models, comma-separated (e.g. small; set up once with tessera zk setup)', (v: string) =>
      v.split(',')
    )
    .option('--zk-forge', 'a drill: answer ZK requests with a changed output (the proof no longer verifies; the client should reject it)')
    .option('--fault <kind>', `commit a fault, for drills (verification should catch it): ${faultHelp}`, fault)
    .action(async (o: NodeFlags) => {
      // The network bench's anatomy of a hop in place (host/hop-marks.ts): each step's stages on stderr.
      if (process.env.TESSERA_HOP_MARKS === '1') hopMarksToStderr()
      const progress = downloadBar()
      const node = await startNode({
        relay: o.relay,
        model: o.model,
        download: { cache: o.cache, mirrors: o.mirror, maxBytesPerSecond: o.maxDownloadRate, progress: progress.update },
        layers: o.layers,
        memory: o.memory,
        maxLayers: o.maxLayers,
        rebalanceMs: o.rebalance * 1000,
        device: o.device,
        batch: { maxRows: o.batch, waitMs: o.batchWaitMs, prefillChunk: o.prefillChunk },
        listen: o.listen,
        keyFile: o.key,
        fault: o.fault,
        zk: o.zk,
        zkForge: o.zkForge
      })
      progress.stop()
      // One line on stdout that scripts (tessera up, tests) can wait for; what was downloaded, when joining by name.
      const downloaded = node.weights.downloads.at(-1)
      console.log(
        JSON.stringify({
          ready: true,
          peer: node.peerId,
          layers: node.layers,
          addrs: node.addrs,
          ...(node.weights.joined ? { cache: node.weights.dir, downloaded } : {})
        })
      )
      await untilSignal()
      await node.stop()
    })
}

/** A progress bar on stderr while shard files download (drawn only on a terminal; cli-progress skips others). */
function downloadBar(): { update: (p: DownloadProgress) => void; stop: () => void } {
  const mib = (n: number): string => (n / 2 ** 20).toFixed(1)
  const format = 'downloading {bar} {percentage}% | {done}/{all} MiB | {rate} MiB/s | {eta} left | {sources} sources'
  const bar = new cliProgress.SingleBar({ format, stream: process.stderr, hideCursor: true }, cliProgress.Presets.shades_classic)
  let started = false
  return {
    update(p) {
      const fields = {
        done: mib(p.done),
        all: mib(p.total),
        rate: mib(p.bytesPerSecond),
        eta: p.etaS === undefined ? '?' : `${Math.ceil(p.etaS)} s`,
        sources: p.sources
      }
      if (!started) bar.start(p.total, p.done, fields)
      else bar.update(p.done, fields)
      started = true
    },
    stop() {
      if (started) bar.stop()
      started = false
    }
  }
}
