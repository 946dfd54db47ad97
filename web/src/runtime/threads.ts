/**
 * How many WASM threads a lent tab uses. Threads need SharedArrayBuffer, which a page has only
 * when crossOriginIsolated (the relay sends COOP/COEP for that); without it, one. By default half
 * the visitor's cores, at most 4 (onnxruntime-web's own default share: the tab stays usable and
 * more threads rarely help a decode step); the visitor's allowance caps it.
 */
export function wasmThreads(o: { isolated: boolean; cores: number; allowance?: number }): number {
  if (!o.isolated) return 1
  const cores = Math.max(1, Math.floor(o.cores) || 1)
  const share = Math.min(4, Math.ceil(cores / 2))
  const allowed = o.allowance === undefined ? share : Math.floor(o.allowance)
  return Math.max(1, Math.min(allowed, cores))
}

/** This page's thread count for the given allowance. */
export const pageWasmThreads = (allowance?: number): number =>
  wasmThreads({ isolated: globalThis.crossOriginIsolated === true, cores: globalThis.navigator?.hardwareConcurrency ?? 1, allowance })
