/**
 * KV caches in one buffer per layer for keys and one for values, [slots, nKv, capacity, hd]:
 * a session's cache is a slot, its first `length` rows per head. Slots are kept dense (a closed
 * session's slot gets the last one's cache), so the sessions of a batch are a few contiguous runs
 * of slots, and a run of them is a view of the buffer that the runtime reads where it is: a
 * batched step copies nothing proportional to the context.
 *
 * The runner keeps one pool per capacity (64, 128, … rows per slot, up to the model's context) and
 * moves a session that outgrows its pool to the next (`adopt`, one copy of its rows), so memory
 * stays within about twice the tokens held however lengths differ. Slots double as a pool fills
 * and halve once it is a quarter full (emptied, it shrinks back to one): sessions opened and
 * closed in waves must not leave a pool at its peak, or one peer could cycle sessions through
 * every capacity and hold several times the KV memory the node's token cap allows.
 * `reserve` grows every slot instead (a one-session pool).
 */
import type { Tensor } from 'onnxruntime-common'
import type { OrtTensorCtor } from './runner.js'

/** A cache starts with room for this many positions and doubles when full. */
export const KV_FIRST_CAPACITY = 64

/** The capacity that holds `rows`: KV_FIRST_CAPACITY doubled as often as needed, at most the model's context. */
export function kvCapacity(rows: number, maxSeqLen: number): number {
  let c = Math.min(KV_FIRST_CAPACITY, maxSeqLen)
  while (c < rows) c = Math.min(c * 2, maxSeqLen)
  return c
}

/** One session's place in the pool. */
export interface KvSlot {
  slot: number
  length: number
  closed: boolean
  pool: KvPool
}

export class KvPool {
  private readonly buffers = new Map<string, Float32Array>()
  private readonly owners: KvSlot[] = []
  private slots = 0
  private capacity = 0

  constructor(
    private readonly names: string[],
    private readonly heads: number,
    private readonly hd: number,
    private readonly maxSeqLen: number,
    private readonly firstCapacity = Math.min(KV_FIRST_CAPACITY, maxSeqLen)
  ) {
    this.allocate(1, firstCapacity)
  }

  /** Live sessions. */
  get size(): number {
    return this.owners.length
  }

  get rowsPerSlot(): number {
    return this.capacity
  }

  /** Bytes of the pool's buffers (fp32). */
  get bytes(): number {
    return this.names.length * this.slots * this.stride() * 4
  }

  acquire(): KvSlot {
    if (this.owners.length === this.slots) this.resize(this.slots * 2, this.capacity)
    const s: KvSlot = { slot: this.owners.length, length: 0, closed: false, pool: this }
    this.owners.push(s)
    return s
  }

  /** Moves `s` here from its pool, its rows copied. Only between runs, as release. */
  adopt(s: KvSlot): void {
    const from = s.pool
    if (from === this) return
    if (s.length > this.capacity) throw new RangeError(`a ${s.length}-row cache does not fit ${this.capacity} rows`)
    if (this.owners.length === this.slots) this.resize(this.slots * 2, this.capacity)
    const to = this.owners.length
    for (const [name, buf] of this.buffers) this.copyRows(from.buffers.get(name)!, from.capacity, s.slot, buf, this.capacity, to, s.length)
    from.release(s)
    s.slot = to
    s.pool = this
    this.owners.push(s)
  }

  /** Frees `s`'s slot, moving the last live cache into it. Only between runs: a running batch reads the buffers. */
  release(s: KvSlot): void {
    const i = this.owners.indexOf(s)
    if (i < 0) return
    const last = this.owners.pop()!
    if (last !== s) {
      for (const buf of this.buffers.values()) this.copyRows(buf, this.capacity, last.slot, buf, this.capacity, i, last.length)
      last.slot = i
      this.owners[i] = last
    }
    if (this.owners.length === 0) this.allocate(1, this.firstCapacity)
    else if (this.owners.length * 4 <= this.slots) this.resize(this.slots / 2, this.capacity) // live slots are the first ones
  }

  /** Room for `total` rows in every slot. */
  reserve(total: number): void {
    if (total > this.capacity) this.resize(this.slots, kvCapacity(total, this.maxSeqLen))
  }

  /** Slots [from, from + n) as tensors by input name ([n, nKv, capacity, hd] views, not copies). */
  views(Tensor: OrtTensorCtor, from: number, n: number): Record<string, Tensor> {
    const stride = this.stride()
    const out: Record<string, Tensor> = {}
    for (const [name, buf] of this.buffers)
      out[name] = new Tensor('float32', buf.subarray(from * stride, (from + n) * stride), [n, this.heads, this.capacity, this.hd])
    return out
  }

  /** Copies `seq` new rows per head ([nKv, seq, hd], from `rows` at `offset`) into slot `s` after its length. */
  write(name: string, s: KvSlot, rows: Float32Array, offset: number, seq: number): void {
    const to = this.buffers.get(name)!
    const { heads, hd, capacity } = this
    const base = s.slot * this.stride()
    for (let h = 0; h < heads; h++) {
      const from = offset + h * seq * hd
      to.set(rows.subarray(from, from + seq * hd), base + (h * capacity + s.length) * hd)
    }
  }

  private stride(): number {
    return this.heads * this.capacity * this.hd
  }

  private allocate(slots: number, capacity: number): void {
    this.slots = slots
    this.capacity = capacity
    for (const name of this.names) this.buffers.set(name, new Float32Array(slots * this.stride()))
  }

  private resize(slots: number, capacity: number): void {
    const old = new Map(this.buffers)
    const oldCapacity = this.capacity
    this.allocate(slots, capacity)
    for (const [name, from] of old) {
      const to = this.buffers.get(name)!
      if (capacity === oldCapacity) to.set(from.subarray(0, Math.min(from.length, to.length)))
      else for (const o of this.owners) this.copyRows(from, oldCapacity, o.slot, to, capacity, o.slot, o.length)
    }
  }

  /** Copies a slot's first `length` rows per head between buffers (or within one) of the given capacities. */
  private copyRows(from: Float32Array, fromCapacity: number, fromSlot: number, to: Float32Array, toCapacity: number, toSlot: number, length: number): void {
    const { heads, hd } = this
    for (let h = 0; h < heads; h++) {
      const src = (fromSlot * heads + h) * fromCapacity * hd
      const dst = (toSlot * heads + h) * toCapacity * hd
      if (from === to) to.copyWithin(dst, src, src + length * hd)
      else to.set(from.subarray(src, src + length * hd), dst)
    }
  }
}
