import { defineConfig } from 'vitest/config'
import { BaseSequencer, type TestSpecification } from 'vitest/node'

/**
 * On a clean clone the ZK network suite spends most of the run on its 2^15 powers-of-tau
 * ceremony: it starts first, so every other file runs beside it instead of after it. With a
 * warm cache vitest's own order (longest first) already does the same.
 */
class CeremonyFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (f: TestSpecification): number => (f.moduleId.endsWith('zk-network.test.ts') ? 0 : 1)
    return (await super.sort(files)).sort((a, b) => rank(a) - rank(b))
  }
}

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // libp2p 3 on Node 20 needs the start-up shim in test processes too (a no-op on 22+).
    setupFiles: ['host/shim.ts'],
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 300_000,
    // CI has 2 cores: two files at a time keeps onnxruntime's threads from fighting.
    maxWorkers: 2,
    sequence: { sequencer: CeremonyFirst },
    reporters: ['default']
  }
})
