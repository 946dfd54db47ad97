/**
 * A WebGPU tab's KV caches, kept on the GPU (RuntimeTraits.deviceKv in shared/runner.ts). Each
 * cache input is a buffer [1, nKv, capacity, hd] that onnxruntime reads where it is; a run leaves
 * its new rows on the GPU too (the session's new_* outputs are 'gpu-buffer'), and one copy per kv
 * head puts them after the cache's length. Without this, every step uploaded the whole cache and
 * read the new rows back.
 */
import type { Tensor } from 'onnxruntime-web/webgpu'
import type { DeviceKv, DeviceKvFactory } from '../../../shared/runner.js'

export interface GpuTensorCtor {
  fromGpuBuffer(buffer: GPUBuffer, o: { dataType: 'float32'; dims: readonly number[] }): Tensor
}

/** Caches on `device`, the one onnxruntime computes with (buffers belong to one device). */
export function gpuKv(device: GPUDevice, Tensor: GpuTensorCtor, nKv: number, hd: number): DeviceKvFactory {
  const rowBytes = hd * 4
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST
  return (names): DeviceKv => {
    let capacity = 0
    let buffers = new Map<string, GPUBuffer>()
    return {
      past(rows, length) {
        if (rows > capacity) {
          // A bigger buffer per cache, each head's first `length` rows copied over at its new stride.
          const enc = device.createCommandEncoder()
          const next = new Map<string, GPUBuffer>()
          for (const name of names) {
            const to = device.createBuffer({ size: nKv * rows * rowBytes, usage })
            const from = buffers.get(name)
            if (from !== undefined && length > 0) {
              for (let h = 0; h < nKv; h++) enc.copyBufferToBuffer(from, h * capacity * rowBytes, to, h * rows * rowBytes, length * rowBytes)
            }
            next.set(name, to)
          }
          device.queue.submit([enc.finish()])
          for (const b of buffers.values()) b.destroy() // work already submitted still sees them
          buffers = next
          capacity = rows
        }
        const feeds: Record<string, Tensor> = {}
        for (const [name, b] of buffers) feeds[name] = Tensor.fromGpuBuffer(b, { dataType: 'float32', dims: [1, nKv, capacity, hd] })
        return feeds
      },
      append(rows, length, seq) {
        const enc = device.createCommandEncoder()
        for (const [name, to] of buffers) {
          const from = rows[name].gpuBuffer as GPUBuffer
          for (let h = 0; h < nKv; h++) enc.copyBufferToBuffer(from, h * seq * rowBytes, to, (h * capacity + length) * rowBytes, seq * rowBytes)
        }
        device.queue.submit([enc.finish()])
        for (const t of Object.values(rows)) t.dispose()
      },
      release() {
        for (const b of buffers.values()) b.destroy()
        buffers.clear()
      }
    }
  }
}
