/**
 * What a simulated peer's hardware costs per layer, from facts. Decoding one token reads every
 * weight of a layer once, so a layer's decode time is at least its weight bytes ÷ the memory
 * bandwidth (the physical limit; real kernels reach 60–90% of it). Bandwidths are the vendors'
 * datasheet figures.
 */
import type { ComputeCost } from './model.js'

export interface Gpu {
  name: string
  /** Memory bandwidth, GB/s (datasheet). */
  gbPerS: number
  /** Memory, GB. */
  memoryGb: number
  source: string
}

export const GPUS: Record<string, Gpu> = {
  rtx3090: { name: 'RTX 3090', gbPerS: 936, memoryGb: 24, source: 'NVIDIA GeForce RTX 3090 datasheet: 936 GB/s GDDR6X, 24 GB' },
  rtx4090: { name: 'RTX 4090', gbPerS: 1008, memoryGb: 24, source: 'NVIDIA GeForce RTX 4090 specifications: 1,008 GB/s GDDR6X, 24 GB' },
  a100: { name: 'A100 80GB SXM', gbPerS: 2039, memoryGb: 80, source: 'NVIDIA A100 datasheet: 2,039 GB/s HBM2e (80 GB SXM)' },
  h100: { name: 'H100 SXM', gbPerS: 3350, memoryGb: 80, source: 'NVIDIA H100 datasheet: 3.35 TB/s HBM3 (SXM)' }
}

export interface ModelFacts {
  name: string
  layers: number
  hidden: number
  /** Parameters in the transformer blocks (embedding and head left out). */
  blockParams: number
  /** Bytes per parameter as stored: int4 with an fp16 scale per 32 weights is 4.5 bits. */
  bytesPerParam: number
  source: string
}

/** Llama 2 70B: 80 blocks of hidden 8192, FFN 28672, 64 heads with 8 KV heads. */
export const LLAMA2_70B_INT4: ModelFacts = {
  name: 'Llama-2-70B int4',
  layers: 80,
  hidden: 8192,
  // Per block: attention q,o 8192² each + k,v 8192×1024 each; FFN 3 × 8192 × 28672.
  blockParams: 80 * (2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672),
  bytesPerParam: 4.5 / 8,
  source: 'Touvron et al. 2023, Llama 2 (Table 1 and the released config.json: hidden 8192, 80 layers, FFN 28672, GQA with 8 KV heads)'
}

/** Bytes of one block's weights. */
export const layerBytes = (m: ModelFacts): number => (m.blockParams / m.layers) * m.bytesPerParam

/**
 * A layer's decode cost on `gpu` at `efficiency` of its bandwidth, and its prefill cost per row
 * (compute-bound, batched: taken as a tenth of a decode row's, which only the prompt's step feels).
 */
export function gpuCost(m: ModelFacts, gpu: Gpu, efficiency = 0.7): ComputeCost {
  const msPerLayer = (layerBytes(m) / (gpu.gbPerS * 1e9 * efficiency)) * 1000
  return { msPerLayer, msPerPrefillRowLayer: msPerLayer / 10 }
}

/** How many of the model's layers fit on `gpu`, keeping `reserveGb` for the KV cache and the runtime. */
export const layersThatFit = (m: ModelFacts, gpu: Gpu, reserveGb = 2): number => Math.floor(((gpu.memoryGb - reserveGb) * 1e9) / layerBytes(m))

/** How the GPUs of one tensor-parallel group talk: a message's latency and the bandwidth each way. */
export interface GroupLink {
  name: string
  latencyUs: number
  gbPerS: number
  source: string
}

export const GROUP_LINKS: Record<string, GroupLink> = {
  pcie4: {
    name: 'PCIe 4.0 x16 in one box',
    latencyUs: 10,
    gbPerS: 25,
    source: 'PCI-SIG: PCIe 4.0 x16 carries 31.5 GB/s each way (taken at 80%); 10 µs a message through host memory is an assumption'
  },
  lan10g: {
    name: '10 GbE on a LAN',
    latencyUs: 50,
    gbPerS: 1.25,
    source: 'IEEE 802.3ae: 10 Gbit/s = 1.25 GB/s; 50 µs a message over TCP is an assumption'
  }
}

/**
 * A layer split over `gpus` GPUs by attention heads and FFN columns (Megatron-LM, Shoeybi et al.
 * 2019): each holds and reads 1/gpus of the weights, and the group all-reduces the activations
 * twice a layer (after attention, after the MLP). A ring all-reduce of B bytes over g GPUs takes
 * 2(g−1) messages of B/g each; decode moves one fp16 row (hidden × 2 bytes), so at these sizes
 * the messages' latency, not the bandwidth, is its cost.
 */
export function tensorParallelCost(m: ModelFacts, gpu: Gpu, gpus: number, link: GroupLink, efficiency = 0.7): ComputeCost {
  const one = gpuCost(m, gpu, efficiency)
  if (gpus === 1) return one
  const steps = 2 * (gpus - 1)
  const rowBytes = m.hidden * 2
  const allReduceMs = (steps * link.latencyUs) / 1000 + (steps * rowBytes) / gpus / (link.gbPerS * 1e6)
  const perRowMs = (steps * rowBytes) / gpus / (link.gbPerS * 1e6) // a further row adds only bytes to the same messages
  return { msPerLayer: one.msPerLayer / gpus + 2 * allReduceMs, msPerPrefillRowLayer: one.msPerPrefillRowLayer / gpus + 2 * perRowMs }
}
