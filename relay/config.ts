/**
 * The relay's defaults, in one place, each with the reason for its value (as Petals' client/config.py
 * does). `startRelay` resolves its options against them once (resolveRelayOptions); the CLI shows
 * the same values in its help. The chain tooling's knobs (relay/chain/, the EVM ledger) are at the end.
 * Client defaults (ban time, retries, time-outs) live in shared/client/config.ts, the claim board's
 * in shared/optimistic/config.ts.
 */
import { join } from 'node:path'
import type { PrivateKey } from '@libp2p/interface'
import type { ClientConfig } from '../shared/client/client.js'
import { MAX_MESSAGE_BYTES, RECORD_TTL_MS } from '../shared/protocol/limits.js'
import type { EvmLedgerConfig } from './ledger-evm.js'
import type { Reexecute } from '../shared/verify/reexec.js'
import { ConfigError } from '../shared/errors.js'

/** One WebRTC ICE server, as browsers take it (RTCIceServer). */
export interface IceServer {
  urls: string | string[]
  username?: string
  credential?: string
}

/**
 * `stun:host:port`, or `turn:USER:PASS@host:port` (TURN needs credentials; this form keeps them in
 * one flag): the RTCIceServer a browser takes.
 */
export function parseIceServer(url: string): IceServer {
  const m = /^(turns?):([^:@]+):([^@]+)@(.+)$/.exec(url)
  if (m !== null) return { urls: `${m[1]}:${m[4]}`, username: decodeURIComponent(m[2]), credential: decodeURIComponent(m[3]) }
  if (!/^(stun|turns?):[^\s]+$/.test(url)) throw new ConfigError(`--ice-server ${url}: expected stun:HOST[:PORT] or turn:USER:PASS@HOST[:PORT]`)
  return { urls: url }
}

export interface RelayOptions {
  /** HTTP port (0 = any free one). */
  httpPort?: number
  /** libp2p WebSocket port (0 = any free one). */
  p2pPort?: number
  host?: string
  /** Multiaddrs to announce instead of the listening ones (a public name, a TLS terminator's wss address). */
  announce?: string[]
  /**
   * Other relays of the same network (multiaddrs with /p2p/): records announced to any of them are
   * listed here and the other way round (relay/federation.ts). Relays that meet others join them too.
   */
  relays?: string[]
  /** A block list: peer ids, one per line, read again every second while the relay runs (host/deny-list.ts). */
  denyFile?: string
  /** STUN/TURN servers the relay tells tabs to use for WebRTC (GET /api/relay): needed for tabs behind NAT. */
  iceServers?: IceServer[]
  /** Model directories whose files the relay serves (and whose tokenizers it uses). */
  models?: string[]
  webRoot?: string
  client?: Partial<ClientConfig>
  /** SQLite file of the ledger (stakes, slashes, reputation, audit log) and of pending claims; created if missing. */
  ledger?: string
  /**
   * Settle on an EVM chain instead (relay/ledger-evm.ts): stakes, slashes and the audit log live in
   * the TesseraStake contract and are rebuilt from its events; the SQLite file keeps only claims.
   */
  evm?: EvmLedgerConfig
  /** Stake granted to any peer the first time it announces: off by default (RELAY_DEFAULTS.joinStake says why); for open test networks. */
  joinStake?: number
  /** Stake granted on first announce to these peers only (the operator's allow-list: `--stake-file`), whatever joinStake says. */
  stakeFor?: ReadonlyMap<string, number>
  /** ZK models whose entries (verification key, weight commitment) the relay publishes and checks proofs against. */
  zk?: string[]
  /**
   * Set up the sampling circuit for each served model's vocabulary (cached in .cache/zk; minutes
   * the first time) so that requests may ask for tessera_prove_sampling.
   */
  proveSampling?: boolean
  /** How often the relay's view of the network (metrics, /api/network) and of the ledger is refreshed. */
  viewRefreshMs?: number
  /**
   * The file the relay's libp2p key is kept in (created, mode 0600, if missing): the same peer id,
   * and so the same multiaddr, after a restart, so nodes' announces reach it again. Without this
   * or `privateKey`, a fresh identity on every start.
   */
  keyFile?: string
  /** The relay's libp2p key itself (wins over keyFile). */
  privateKey?: PrivateKey
  /** The largest HTTP request body the API accepts, in bytes (HTTP_DEFAULTS.maxBodyBytes says why its default). */
  maxBodyBytes?: number
  /**
   * Re-runs a disputed hop over the shards this relay serves, so that evidence carrying the hop's
   * inputs is judged by recomputation, not by witnesses (shared/verify/reexec.ts). The relay may not
   * import native-node/: the CLI composes it (native-node/reexec.ts).
   */
  reexecute?: Reexecute
  /**
   * Hops `reexecute` can run: receipt evidence about them must carry the inputs, so the witness rule
   * (which staked colluders can win) is never what decides them. The CLI passes the arbiter's `serves`.
   */
  requireInputs?: (root: string, layers: [number, number]) => boolean
}

/** The ports `tessera relay` and `tessera up` listen on unless told otherwise: what the docs and pages name. */
export const RELAY_PORTS = {
  http: 8080,
  /** The libp2p WebSocket port nodes and tabs dial (the /ws multiaddr the relay prints). */
  p2p: 9090
} as const

export const RELAY_DEFAULTS = {
  /** 0 (any free port) for a relay started as a library: tests and embedded relays never collide. */
  httpPort: 0,
  p2pPort: 0,
  /** Loopback: a relay is reachable from elsewhere only when its operator says so (--host 0.0.0.0). */
  host: '127.0.0.1',
  /** In the working directory's .tessera/, beside the chain files; created on first start. */
  ledger: join('.tessera', 'ledger.sqlite'),
  /**
   * 0: an identity costs nothing to make, so stake granted on a first announce would make sybils free
   * (each fresh key a staked witness, voter and reporter). Stake comes from the operator
   * (`tessera stake`, `--stake-file`, `tessera up` for its own nodes); `--join-stake` opts an open test network in.
   */
  joinStake: 0,
  /**
   * What `tessera up` stakes each node it starts with. A slash takes half (shared/ledger DEFAULT_RULES):
   * a peer still has stake at its third slash, which blacklists it.
   */
  operatorStake: 100,
  /** 1 s: metrics, /api/network and the blacklist lag an announce or a slash by a second at most, for one registry and one ledger read. */
  viewRefreshMs: 1000
} as const

/** The HTTP API's limits and the OpenAI surface's defaults. */
export const HTTP_DEFAULTS = {
  /**
   * 1 MiB: the largest body a POST to /v1/* or /api/* may have (a claim may be as large as maxClaimChars).
   * An OpenAI request is a prompt and a few fields: 1 MiB holds a long text prompt, or ten times the
   * token ids a node takes in one step (MAX_STEP_TOKENS), and bounds what one request makes the relay read.
   */
  maxBodyBytes: 1024 * 1024,
  /**
   * Evidence is a handful of receipts and, for the relay to re-execute the disputed hop, every row
   * that hop was fed: only the body limit (maxBodyBytes, --max-body) bounds it. Such a report costs
   * the relay a prefill, so one remote address may POST a burst of 6, then 6 a minute (429 beyond).
   */
  reexecBurst: 6,
  reexecPerMinute: 6,
  /** A claim carries every row each hop was fed: as large as a step may be, in base64, plus its receipts. */
  maxClaimChars: Math.ceil((MAX_MESSAGE_BYTES * 4) / 3) + 1024 * 1024,
  /**
   * Claims one remote address may POST to /api/claims: a burst of 20, then 60 a minute. Each claim
   * is held and audited for up to an hour, so an unbounded poster could fill the board (its bound:
   * shared/optimistic/config.ts maxPending); a client posts one claim per generation.
   */
  claimBurst: 20,
  claimsPerMinute: 60,
  /** Values in a ZK input: the seeded models take 64 at most; this bounds what one request makes the relay parse. */
  maxZkInput: 4096,
  /** Audit entries `GET /api/ledger` returns (the newest): enough for a page, small enough to poll each second. */
  auditEntries: 100,
  /** OpenAI's own default for max_tokens. */
  maxTokens: 16,
  /**
   * 0 (greedy), not OpenAI's 1: the same request gives the same tokens on any route, which is what
   * makes a network's answers comparable and checkable.
   */
  temperature: 0
} as const

/** The registry's protocols (/tessera/announce, /tessera/peers). */
export const REGISTRY_DEFAULTS = {
  /** A request is one small message: a peer that sends nothing for 10 s is not going to. */
  readTimeoutMs: 10_000,
  /** Every node re-announces and every client lists peers: room for a busy network's bursts. */
  maxInboundStreams: 256,
  /** The protocol's TTL: peers re-announce every third of it, so a record claiming a later expiry is listed this long at most. */
  ttlMs: RECORD_TTL_MS,
  /**
   * Distinct reporters (remote addresses; the relay's own client is one) whose failed dials drop a
   * record: one client's bad link drops nothing, and a dropped live peer is back at its next announce.
   */
  unreachableReports: 3,
  /** A report of a failed dial counts this long: two TTLs, long after a live peer has re-announced. */
  unreachableWindowMs: 2 * RECORD_TTL_MS,
  /** Weight of the newest measured step in a peer's speed: a few steps settle it, one outlier does not. */
  speedAlpha: 0.3,
  /**
   * Records another relay may have listed here at once. A relay's own peers are bounded by its
   * connections (maxConnections 1,024), and it passes on what it relays: room for a few such relays' worth.
   */
  maxPerRelay: 8_192,
  /**
   * How long a record's `moving` (layers a peer says it is loading) counts where it goes. A move is a
   * download and a load (a 40-layer int4 shard of 70B is ~20 GB: minutes at 100 MB/s); a claim older
   * than this is a peer that never arrives, holding others off a gap, and is listed as where it is.
   */
  moveGraceMs: 15 * 60_000
} as const

/** Relays federated over gossipsub (relay/federation.ts). */
export const FEDERATION_DEFAULTS = {
  /** All relays nobody configured, together: a swarm of fresh keys fills this pool, never the configured relays' shares. */
  maxFromStrangers: 4_096,
  /** Reading a relay's registry when it is met, and dialling a configured relay. */
  syncTimeoutMs: 10_000,
  /** A configured relay not connected is dialled again this often. */
  redialMs: 3_000
} as const

/** The chain tooling (relay/chain/) and the EVM ledger. */
export const CHAIN_DEFAULTS = {
  /** The environment variable commands read the arbiter's key from (on a local anvil, its dev key 0 when unset). */
  keySource: 'TESSERA_CHAIN_KEY',
  /** Where `tessera chain deploy` writes the deployment and `tessera relay --ledger evm` reads it. */
  deploymentFile: join('.tessera', 'chain.json'),
  /** `tessera up --ledger evm`: the local anvil's state (stakes and slashes survive a restart) and its deployment. */
  localState: join('.tessera', 'anvil-state.json'),
  localDeployment: join('.tessera', 'chain-local.json'),
  /** Compiled contracts, cached by content (git ignores .cache). */
  cacheDir: join('.cache', 'chain'),
  /** One day: long enough for a slash to land on stake that its owner is trying to pull out. */
  withdrawDelayS: 86_400,
  /** Blocks a write waits for, and how far behind the head events are read: 1 (its own block) suits a local or fast chain. */
  confirmations: 1,
  /** How often viem polls for receipts: 50 ms, as anvil mines a block per transaction at once. */
  pollingIntervalMs: 50,
  /** A federation's ledger re-checks other arbiters' published evidence this often. */
  cosignEveryMs: 1_000,
  /** An RPC call that takes longer than 30 s is a node that is not answering. */
  rpcTimeoutMs: 30_000,
  /** Sends of one signed transaction when the node does not answer, before giving up (back-off 200 ms, 400 ms, …). */
  sendTries: 4,
  sendBackoffMs: 100,
  /** anvil prints "Listening on" within a second; 10 s allows for a slow, loaded machine. */
  anvilStartTimeoutMs: 10_000,
  /** SIGTERM lets anvil dump its state; after 5 s it is killed. */
  anvilStopTimeoutMs: 5000
} as const

/** Options that stay optional once resolved: absent means none (for the keys: a fresh identity). */
type Unset = 'webRoot' | 'client' | 'evm' | 'keyFile' | 'privateKey' | 'stakeFor' | 'reexecute' | 'requireInputs' | 'denyFile'
export type ResolvedRelayOptions = Required<Omit<RelayOptions, Unset>> & Pick<RelayOptions, Unset>

/** Every option with its default filled in: startRelay reads only this. */
export function resolveRelayOptions(o: RelayOptions = {}): ResolvedRelayOptions {
  return {
    httpPort: o.httpPort ?? RELAY_DEFAULTS.httpPort,
    p2pPort: o.p2pPort ?? RELAY_DEFAULTS.p2pPort,
    host: o.host ?? RELAY_DEFAULTS.host,
    announce: o.announce ?? [],
    relays: o.relays ?? [],
    iceServers: o.iceServers ?? [],
    models: o.models ?? [],
    webRoot: o.webRoot,
    client: o.client,
    ledger: o.ledger ?? RELAY_DEFAULTS.ledger,
    evm: o.evm,
    joinStake: o.joinStake ?? RELAY_DEFAULTS.joinStake,
    stakeFor: o.stakeFor,
    zk: o.zk ?? [],
    proveSampling: o.proveSampling ?? false,
    viewRefreshMs: o.viewRefreshMs ?? RELAY_DEFAULTS.viewRefreshMs,
    keyFile: o.keyFile,
    denyFile: o.denyFile,
    privateKey: o.privateKey,
    maxBodyBytes: o.maxBodyBytes ?? HTTP_DEFAULTS.maxBodyBytes,
    reexecute: o.reexecute,
    requireInputs: o.requireInputs
  }
}
