/**
 * The batching scheduler (shared/batch.ts) and the KV pool (shared/kv-pool.ts) with fakes: what a
 * batch is made of, what waits, what a closed session's steps get, how slots move.
 */
import { describe, expect, it } from 'vitest'
import { batchLimits, StepBatcher, type QueuedStep } from '../../shared/batch.js'
import { KV_FIRST_CAPACITY, KvPool } from '../../shared/kv-pool.js'
import type { OrtTensorCtor } from '../../shared/runner.js'
import { InputError } from '../../shared/errors.js'

interface Owner {
  name: string
  closed: boolean
}
const owner = (name: string): Owner => ({ name, closed: false })

/** A batcher whose runs are recorded and finish when the test says. */
function recorder(limits = batchLimits({ maxRows: 4 }), open = (): number => 8) {
  const runs: string[][] = []
  const gates: Array<() => void> = []
  const b = new StepBatcher<Owner, string, string>(
    limits,
    async (steps: Array<QueuedStep<Owner, string>>) => {
      runs.push(steps.map((s) => `${s.owner.name}:${s.input}`))
      await new Promise<void>((r) => gates.push(r))
      return steps.map((s) => `out ${s.input}`)
    },
    open
  )
  const release = async (): Promise<void> => {
    for (let i = 0; i < 20 && gates.length === 0; i++) await new Promise((r) => setTimeout(r, 1))
    gates.shift()?.()
  }
  return { b, runs, release }
}

describe('StepBatcher', () => {
  it('steps queued behind a running batch run together next, one row per session, up to the cap; prefills alone', async () => {
    const { b, runs, release } = recorder()
    const [a, c, d, e, f] = ['a', 'c', 'd', 'e', 'f'].map(owner)
    const first = b.submit(a, 'a0', 1)
    await new Promise((r) => setTimeout(r, 1)) // a0 is running now
    const rest = [b.submit(c, 'c0', 1), b.submit(d, 'd0', 5), b.submit(c, 'c1', 1), b.submit(e, 'e0', 1), b.submit(f, 'f0', 1), b.submit(a, 'a1', 1)]
    await release()
    expect(await first).toBe('out a0')
    await release()
    await release()
    await release()
    expect(await Promise.all(rest)).toEqual(['out c0', 'out d0', 'out c1', 'out e0', 'out f0', 'out a1'])
    // a0 alone (nothing else was queued yet); then the oldest, c0, with every other session's decode
    // step up to 4 rows (c1 waits: c already has a row); then the prefill d0 alone; then c1.
    expect(runs).toEqual([['a:a0'], ['c:c0', 'e:e0', 'f:f0', 'a:a1'], ['d:d0'], ['c:c1']])
    expect(b.stats).toMatchObject({ runs: 4, rows: 7, widest: 4 })
    await b.idle()
  })

  it("a closed session's queued steps are refused, the others run", async () => {
    const { b, runs, release } = recorder()
    const [a, c, d] = ['a', 'c', 'd'].map(owner)
    const first = b.submit(a, 'a0', 1)
    const gone = expect(b.submit(c, 'c0', 1)).rejects.toBeInstanceOf(InputError)
    const kept = b.submit(d, 'd0', 1)
    c.closed = true
    await release()
    await gone
    expect(await first).toBe('out a0')
    expect(await kept).toBe('out d0')
    expect(runs).toEqual([['a:a0', 'd:d0']])
  })

  it('a failed run fails its own rows only; the next batch runs', async () => {
    let calls = 0
    const b = new StepBatcher<Owner, string, string>(
      batchLimits({ maxRows: 2 }),
      async (steps) => {
        calls++
        if (steps.some((s) => s.input === 'bad')) throw new Error('runtime failed')
        return steps.map((s) => s.input)
      },
      () => 2
    )
    const [a, c] = [owner('a'), owner('c')]
    const bad = b.submit(a, 'bad', 1)
    const good = b.submit(c, 'good', 5)
    await expect(bad).rejects.toThrow('runtime failed')
    expect(await good).toBe('good')
    expect(calls).toBe(2)
  })

  it('waits up to waitMs for other open sessions, not when every open session has a step queued', async () => {
    const timed = async (open: number): Promise<number> => {
      const b = new StepBatcher<Owner, string, string>(
        batchLimits({ maxRows: 8, waitMs: 40 }),
        async (s) => s.map((x) => x.input),
        () => open
      )
      const t = performance.now()
      await b.submit(owner('a'), 'x', 1)
      return performance.now() - t
    }
    expect(await timed(3)).toBeGreaterThanOrEqual(35)
    expect(await timed(1)).toBeLessThan(30)
  })

  it('refuses nonsense limits', () => {
    expect(() => batchLimits({ maxRows: 0 })).toThrow(InputError)
    expect(() => batchLimits({ waitMs: -1 })).toThrow(InputError)
    expect(() => batchLimits({ prefillChunk: 1.5 })).toThrow(InputError)
  })
})

/** Enough of onnxruntime's Tensor for the pool: it keeps the data and dims. */
class FakeTensor {
  constructor(
    readonly type: string,
    readonly data: Float32Array,
    readonly dims: readonly number[]
  ) {}
}
const Tensor = FakeTensor as unknown as OrtTensorCtor

describe('KvPool', () => {
  const heads = 2
  const hd = 3
  /** Writes `n` rows whose values name the owner, the position and the head. */
  const fill = (pool: KvPool, s: ReturnType<KvPool['acquire']>, tag: number, n: number): void => {
    const rows = new Float32Array(heads * n * hd)
    for (let h = 0; h < heads; h++) for (let i = 0; i < n; i++) rows.fill(tag * 1000 + (s.length + i) * 10 + h, (h * n + i) * hd, (h * n + i + 1) * hd)
    pool.reserve(s.length + n)
    pool.write('k', s, rows, 0, n)
    s.length += n
  }
  /** Slot `slot`'s first `length` rows per head, read back through a view. */
  const read = (pool: KvPool, slot: number, length: number): number[] => {
    const t = pool.views(Tensor, slot, 1).k as unknown as FakeTensor
    const c = t.dims[2]
    const out: number[] = []
    for (let h = 0; h < heads; h++) for (let i = 0; i < length; i++) out.push(t.data[(h * c + i) * hd])
    return out
  }
  const expected = (tag: number, length: number): number[] =>
    Array.from({ length: heads * length }, (_, j) => tag * 1000 + (j % length) * 10 + Math.floor(j / length))

  it('keeps each cache through slot growth, capacity growth and the compaction a close does', () => {
    const pool = new KvPool(['k', 'v'], heads, hd, 256)
    const a = pool.acquire()
    const b = pool.acquire()
    const c = pool.acquire()
    expect([a.slot, b.slot, c.slot]).toEqual([0, 1, 2])
    fill(pool, a, 1, 5)
    fill(pool, b, 2, KV_FIRST_CAPACITY + 3) // the capacity doubles: every slot's rows move
    fill(pool, c, 3, 7)
    expect(pool.rowsPerSlot).toBe(2 * KV_FIRST_CAPACITY)
    expect(read(pool, a.slot, 5)).toEqual(expected(1, 5))
    pool.release(a) // the last slot's cache (c's) moves into slot 0
    expect(c.slot).toBe(0)
    expect(pool.size).toBe(2)
    expect(read(pool, c.slot, 7)).toEqual(expected(3, 7))
    expect(read(pool, b.slot, b.length)).toEqual(expected(2, b.length))
    // A view of two slots is one contiguous [2, heads, capacity, hd] tensor over the pool's memory.
    const both = pool.views(Tensor, 0, 2).k as unknown as FakeTensor
    expect(both.dims).toEqual([2, heads, 2 * KV_FIRST_CAPACITY, hd])
    pool.release(b)
    pool.release(c)
    expect(pool.size).toBe(0)
    expect(pool.rowsPerSlot).toBe(KV_FIRST_CAPACITY) // emptied, it shrinks back
  })

  it('a cache that outgrows its pool moves to a larger one with its rows; the small pool compacts', () => {
    const small = new KvPool(['k', 'v'], heads, hd, 256)
    const large = new KvPool(['k', 'v'], heads, hd, 256, 2 * KV_FIRST_CAPACITY)
    const a = small.acquire()
    const b = small.acquire()
    fill(small, a, 1, 40)
    fill(small, b, 2, 50)
    large.adopt(a)
    expect([a.pool, a.slot, b.slot, small.size, large.size]).toEqual([large, 0, 0, 1, 1])
    expect(read(large, a.slot, 40)).toEqual(expected(1, 40))
    expect(read(small, b.slot, 50)).toEqual(expected(2, 50))
    fill(large, a, 1, 80) // room for 120 without growing
    expect(large.rowsPerSlot).toBe(2 * KV_FIRST_CAPACITY)
    expect(read(large, a.slot, 120)).toEqual(expected(1, 120))
    expect(() => small.adopt(a)).toThrow(RangeError)
  })

  it('never grows past the model context', () => {
    const pool = new KvPool(['k'], heads, hd, 100)
    const a = pool.acquire()
    fill(pool, a, 1, 99)
    expect(pool.rowsPerSlot).toBe(100)
    expect(read(pool, a.slot, 99)).toEqual(expected(1, 99))
  })
})
