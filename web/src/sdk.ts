/**
 * The Tessera SDK for web apps, served by every relay at /sdk.js:
 *
 *   import { connect } from 'http://127.0.0.1:8080/sdk.js'
 *   const tessera = await connect()
 *   const gen = tessera.generate({ prompt: [1, 403], maxTokens: 32, verification: { mode: 'redundant', k: 2 } })
 *   for await (const token of gen) console.log(token.id, token.hops)
 *   console.log((await gen.result).verification)
 *
 * Same client, routing and failover as Node: this tab dials the peers itself (WebSockets to
 * native nodes, WebRTC to other tabs); the relay only introduces them. Reputations and the
 * blacklist come from the relay's ledger (GET /api/ledger); evidence of a cheating peer goes
 * back to it (POST /api/evidence), where it is checked again before anyone is slashed; optimistic
 * claims go to its board (POST /api/claims) and `(await gen.result).settlement` says how they end.
 */
import { createClient, type Client } from '../../shared/client/client.js'
import { libp2pDialer, relayDirectory } from '../../shared/route/directory.js'
import type { ZkResult } from '../../shared/client/zk.js'
import type { ZkModelEntry } from '../../shared/zk/types.js'
import type { SamplingEntry, SamplingProofJson } from '../../shared/zk/argmax.js'
import { httpLedgerLink } from '../../shared/client/ledger-link.js'
import { httpClaimSink } from '../../shared/optimistic/claim-sink.js'
import type { GenerationRequest, GenerationResult, NetworkView, TokenEvent, VerificationOptions } from '../../shared/client/types.js'
import { createTabPeer } from './p2p.js'
import { TesseraError } from '../../shared/errors.js'
import { type KeyPins, pinnedModel, pinnedSampling } from '../../shared/zk/pin.js'

export type { GenerationRequest, GenerationResult, NetworkView, TokenEvent, VerificationOptions }
export type { ZkResult, SamplingProofJson, KeyPins }
export { verificationKeyHash } from '../../shared/zk/pin.js'

export interface ConnectOptions {
  /** The relay's HTTP origin. Default: where this module was loaded from. */
  relay?: string
  iceServers?: RTCIceServer[]
  /** Verification for requests that do not choose their own (default none). */
  verification?: VerificationOptions
  /**
   * sha256 of each verification key (verificationKeyHash, from the model owner, not the relay):
   * with pins, zk() and verifySampling() refuse a key the relay serves whose hash differs, or an
   * unpinned one. Without them the relay's keys are taken as served, so a hostile relay could
   * serve a key of its own setup and forge proofs.
   */
  keys?: KeyPins
}

/** What the app knows of a sampled answer without the relay: see Tessera.verifySampling. */
export interface SamplingKnown {
  prompt?: number[]
  root?: string
  nLayers?: number
  peers?: string[]
}

export interface Generation extends AsyncIterable<TokenEvent> {
  /** The whole result (tokens, route, timings) once the generation ends. */
  result: Promise<GenerationResult>
}

export interface Tessera {
  peerId: string
  generate(req: GenerationRequest, signal?: AbortSignal): Generation
  network(): Promise<NetworkView>
  /**
   * `verification: "zk"`: a peer proves one inference of a small ZK model (GET /api/zk/models
   * lists them); this tab verifies the Groth16 proof itself against the published verification
   * key and weight commitment, and returns the output only if it holds.
   */
  zk(model: string, input: ArrayLike<number>): Promise<ZkResult>
  /**
   * For an answer of the relay's HTTP API asked with `tessera_prove_sampling: true` (its `tessera`
   * field): checks here that each token is the argmax of the logits its last hop signed. That is
   * the sampling step only, not the layers. Throws on the first proof that does not hold.
   * `known` binds each proof to what this app knows, not to the relay's word: the prompt it sent
   * (each receipt's position, and its context when one hop ran the whole model), the model's
   * root and layer count (from the app's own pin), and the peers it accepts as last hops.
   */
  verifySampling(answer: { tokens: number[]; sampling?: SamplingProofJson[] }, known?: SamplingKnown): Promise<{ tokens: number; ms: number }>
  close(): Promise<void>
}

export async function connect(o: ConnectOptions = {}): Promise<Tessera> {
  const origin = o.relay ?? new URL(import.meta.url).origin
  const res = await fetch(`${origin}/api/relay`).catch((err: Error) => {
    throw new TesseraError('UNREACHABLE', `cannot reach the Tessera relay at ${origin}: ${err.message}`)
  })
  if (!res.ok) throw new TesseraError('BAD_REPLY', `${origin} is not a Tessera relay (GET /api/relay answered HTTP ${res.status})`)
  const { addrs } = (await res.json()) as { addrs: string[] }
  const { node, relay } = await createTabPeer({ relayAddrs: addrs, listen: false, iceServers: o.iceServers })
  const ledger = httpLedgerLink(origin, node.peerId.toString())
  await ledger.refresh()
  const refresh = setInterval(() => {
    void ledger.refresh()
  }, 5000)
  // Optimistic claims go to the relay's board; corrected tokens, if any, are generated here.
  const client: Client = createClient({
    dialer: libp2pDialer(node),
    directory: relayDirectory(node, relay),
    ledger,
    board: httpClaimSink(origin),
    verification: o.verification
  })
  return {
    peerId: node.peerId.toString(),
    generate(req, signal) {
      const gen = client.generate(req, signal)
      let settle!: { resolve: (r: GenerationResult) => void; reject: (e: unknown) => void }
      const result = new Promise<GenerationResult>((resolve, reject) => {
        settle = { resolve, reject }
      })
      result.catch(() => {}) // the iterator reports the same error
      return {
        result,
        async *[Symbol.asyncIterator]() {
          try {
            for (let r = await gen.next(); ; r = await gen.next()) {
              if (r.done === true) {
                settle.resolve(r.value)
                return
              }
              yield r.value
            }
          } catch (err) {
            settle.reject(err)
            throw err
          }
        }
      }
    },
    network: async () => await client.network(),
    async zk(model, input) {
      const res = await fetch(`${origin}/api/zk/models`)
      if (!res.ok) throw new TesseraError('BAD_REPLY', `GET /api/zk/models answered HTTP ${res.status}`)
      const { models } = (await res.json()) as { models: ZkModelEntry[] }
      // snarkjs (~1 MB) loads with the first proof, not with the SDK.
      const { zkInfer } = await import('../../shared/client/zk.js')
      // A directory of its own (its own cache), as the zk path always had.
      const directory = relayDirectory(node, relay)
      const deps = {
        dialer: libp2pDialer(node),
        peers: async () => await directory.list(),
        models: (n: string) => {
          const m = models.find((e) => e.name === n)
          return m === undefined || o.keys === undefined ? m : pinnedModel(m, o.keys)
        },
        ledger
      }
      return await zkInfer(deps, model, input)
    },
    async verifySampling(answer, known) {
      const res = await fetch(`${origin}/api/zk/models`)
      if (!res.ok) throw new TesseraError('BAD_REPLY', `GET /api/zk/models answered HTTP ${res.status}`)
      const { sampling } = (await res.json()) as { sampling: SamplingEntry[] }
      const [{ verifySampledTokens }, { samplingFromJson }] = await Promise.all([
        import('../../shared/verify/sampling.js'),
        import('../../shared/zk/argmax.js')
      ])
      const each = (i: number) => ({
        root: known?.root,
        nLayers: known?.nLayers,
        peers: known?.peers,
        ...(known?.prompt !== undefined ? { context: [...known.prompt, ...answer.tokens.slice(0, i)] } : {})
      })
      const entries = o.keys === undefined ? sampling : pinnedSampling(sampling, o.keys)
      const { ms } = await verifySampledTokens(entries, answer.tokens, answer.sampling?.map(samplingFromJson), each)
      return { tokens: answer.tokens.length, ms }
    },
    close: async () => {
      clearInterval(refresh)
      await node.stop()
    }
  }
}
