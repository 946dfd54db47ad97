/// <reference types="@webgpu/types" />
/** What this tab can compute with: WebGPU when an adapter is there and big enough, WASM otherwise. */
import type { Backend } from './runtime/ort-browser.js'
import { TesseraError } from '../../shared/errors.js'

export interface AdapterInfo {
  vendor: string
  architecture: string
  description: string
  isFallbackAdapter: boolean
  maxBufferSize: number
  maxStorageBufferBindingSize: number
}

export async function detectBackend(want: Backend | 'auto', biggestBuffer: number): Promise<{ backend: Backend; adapter?: AdapterInfo; reason?: string }> {
  if (want === 'wasm') return { backend: 'wasm', reason: 'asked for WASM' }
  const adapter = await navigator.gpu?.requestAdapter().catch(() => null)
  if (adapter === undefined || adapter === null) {
    if (want === 'webgpu') throw new TesseraError('CONFIG', 'WebGPU was asked for, but this browser offers no WebGPU adapter; choose WASM or enable WebGPU')
    return { backend: 'wasm', reason: 'no WebGPU adapter in this browser' }
  }
  const info = adapter.info
  const a: AdapterInfo = {
    vendor: info.vendor,
    architecture: info.architecture,
    description: info.description,
    isFallbackAdapter: (info as GPUAdapterInfo & { isFallbackAdapter?: boolean }).isFallbackAdapter ?? false,
    maxBufferSize: adapter.limits.maxBufferSize,
    maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize
  }
  if (biggestBuffer > a.maxStorageBufferBindingSize) {
    const reason = `the model's largest weight (${biggestBuffer} bytes) exceeds this adapter's storage buffer limit (${a.maxStorageBufferBindingSize})`
    if (want === 'webgpu') throw new TesseraError('CONFIG', `WebGPU was asked for, but ${reason}; choose WASM for this model`)
    return { backend: 'wasm', adapter: a, reason }
  }
  return { backend: 'webgpu', adapter: a }
}
