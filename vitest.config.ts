import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 300_000,
    // CI has 2 cores: two files at a time keeps onnxruntime's threads from fighting.
    maxWorkers: 2,
    reporters: ['default']
  }
})
