import { defineConfig } from 'vitest/config'
import base from './vitest.config.js'

/**
 * `npm run test:fast`: what a developer runs on every change. The core tested directly and in
 * one process (routing, failover, every verifier, the board, over an in-memory network), the
 * protocol, ledger, HTTP handlers and both runtimes on the reference model: no child processes,
 * no browser, no chain, no ceremony beyond the 2^11 one. The whole suite (`npm test`) adds the
 * multi-process, browser, chain and ZK network end-to-end tests.
 */
export default defineConfig({
  ...base,
  test: {
    ...base.test,
    include: [
      'test/core/**/*.test.ts',
      'test/verify.test.ts',
      'test/relay-http.test.ts',
      'test/ledger.test.ts',
      'test/manifest.test.ts',
      'test/serve.test.ts',
      'test/int4.test.ts',
      'test/hf.test.ts',
      'test/gguf.test.ts',
      'test/families.test.ts',
      'test/text.test.ts',
      'test/reference.test.ts',
      'test/batch.test.ts',
      'test/kv.test.ts',
      'test/bench-readme.test.ts'
    ]
  }
})
