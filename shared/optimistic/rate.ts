/**
 * Claim posts per caller: a token bucket per remote address, so that one address cannot fill a
 * board with claims each held pending for up to an hour. Bounded: the oldest idle callers are forgotten.
 */
export interface PostLimit {
  /** 0 when `key` may post now (and the post is counted), else ms until it may. */
  take(key: string, now?: number): number
}

export function postLimit(o: { perMinute: number; burst: number; keys?: number }): PostLimit {
  const buckets = new Map<string, { tokens: number; at: number }>()
  const perMs = o.perMinute / 60_000
  const keys = o.keys ?? 10_000
  return {
    take(key, now = Date.now()) {
      const b = buckets.get(key) ?? { tokens: o.burst, at: now }
      b.tokens = Math.min(o.burst, b.tokens + (now - b.at) * perMs)
      b.at = now
      buckets.delete(key)
      buckets.set(key, b) // most recent last, so the first is the one to forget
      if (buckets.size > keys) buckets.delete(buckets.keys().next().value!)
      if (b.tokens >= 1) {
        b.tokens -= 1
        return 0
      }
      return Math.ceil((1 - b.tokens) / perMs)
    }
  }
}
