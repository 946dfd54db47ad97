import { describe, expect, it } from 'vitest'
import { wasmThreads } from '../../web/src/runtime/threads.js'

describe('wasmThreads (a lent tab)', () => {
  it('uses one thread where the page is not cross-origin isolated (no SharedArrayBuffer)', () => {
    expect(wasmThreads({ isolated: false, cores: 16 })).toBe(1)
    expect(wasmThreads({ isolated: false, cores: 16, allowance: 8 })).toBe(1)
  })
  it('takes half the cores by default, at most 4', () => {
    expect(wasmThreads({ isolated: true, cores: 1 })).toBe(1)
    expect(wasmThreads({ isolated: true, cores: 2 })).toBe(1)
    expect(wasmThreads({ isolated: true, cores: 6 })).toBe(3)
    expect(wasmThreads({ isolated: true, cores: 32 })).toBe(4)
  })
  it("lets the visitor's allowance cap it or raise it up to the cores", () => {
    expect(wasmThreads({ isolated: true, cores: 8, allowance: 2 })).toBe(2)
    expect(wasmThreads({ isolated: true, cores: 2, allowance: 2 })).toBe(2)
    expect(wasmThreads({ isolated: true, cores: 2, allowance: 64 })).toBe(2)
    expect(wasmThreads({ isolated: true, cores: 0 })).toBe(1)
  })
})
