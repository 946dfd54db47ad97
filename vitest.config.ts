import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // libp2p 3 on Node 20 needs the start-up shim in test processes too (a no-op on 22+).
    setupFiles: ['native-node/shim.ts'],
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 300_000,
    // CI has 2 cores: two files at a time keeps onnxruntime's threads from fighting.
    maxWorkers: 2,
    reporters: ['default']
  }
})
