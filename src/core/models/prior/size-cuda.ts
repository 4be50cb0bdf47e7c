// The prior's memory on a GPU (--device cuda) without a GPU: what `dalle config --device cuda` prints. The engine's
// tensors are f32 on a GPU as on the CPU (fp16 / bf16 are emulated by rounding there too), so size.ts's counting holds;
// only the allocator differs: the CUDA addon's caching allocator (native/cuda/device_allocator.h) has other size
// classes, and the CUDA backend's adapters (src/core/backend/cuda.ts) take workspaces from it that the CPU kernels do
// not need. Both are counted here, so the totals are comparable with the device's allocStats().peakBytesInUse (the
// trainers' final JSON peakBytesInUse). What the addon takes with cudaMalloc outside that allocator (the cuBLASLt
// workspace, its own scratch) is given apart, and the CUDA context (hundreds of MiB, by driver) is not estimated.
// Key as size.ts: B = batch rows, H = heads, T = L + N positions, C = d_model.
import type { PriorConfig } from '../../config/schemas/prior';
import {
  PriorGenerationMemoryEstimate, PriorMemoryEstimate, PriorTrainingMemoryOptions, parameterSizes, priorGenerationMemory,
  priorTrainingMemory,
} from './size';

type Arch = PriorConfig['model'];

/** The bytes a request of `bytes` takes in the device allocator (device_allocator.h size_class: 512-byte steps up to
 *  4 KiB, then 8 classes per power of two, with no huge-page rounding; the addon's sizeClass computes the same). */
export function deviceAllocatorBytes(bytes: number): number {
  const b = Math.max(1, bytes);
  if (b <= 4096) return Math.ceil(b / 512) * 512;
  let top = 4096; // the largest power of two <= b (a loop: Math.log2 may round just below a power of two up)
  while (top * 2 <= b) top *= 2;
  const step = top / 8;
  return Math.ceil(b / step) * step;
}

/** native/cuda/gemm.cc kWorkspace: cuBLASLt's workspace, cudaMalloc'd once with the first GEMM. */
export const CUBLASLT_WORKSPACE_BYTES = 32 * 2 ** 20;
/** native/cuda/blas1_kernels.cuh kSumSquaresChunk: gradient clipping's sum of squares, one float64 per chunk. */
const SUM_SQUARES_CHUNK = 2 ** 14;

export interface PriorDeviceTrainingEstimate extends PriorMemoryEstimate {
  /** The block-sparse attention backward's workspaces in the allocator (cuda.ts sparseAttentionBackward): contiguous
   *  copies of q, k, v and dO (the prior's heads are (B, H, T, D) views of (B, T, C) tensors), the forward's output
   *  recomputed (B, H, T, D), and the lse and delta rows (B, H, T); held during one layer's attention backward. */
  readonly workspaceBytes: number;
  /** Device memory outside the allocator (not in peakBytesInUse): cuBLASLt's workspace and the addon's scratch, grown
   *  to its largest request (gradient clipping's table of the parameters and one float64 per 16384 values). */
  readonly outsideAllocatorBytes: number;
}

/**
 * Peak device memory of a training step on a GPU: priorTrainingMemory counted in the device allocator's classes
 * (stateBytes, activationBytes), plus the attention workspaces (the same at every precision: the tensors are f32, and
 * one attention backward runs at a time, with or without recompute). totalBytes = the three, what peakBytesInUse reads.
 */
export function priorDeviceTrainingMemory(m: Arch, batchSize: number, options: PriorTrainingMemoryOptions = {}): PriorDeviceTrainingEstimate {
  const tensors = priorTrainingMemory(m, batchSize, { ...options, sizeClass: deviceAllocatorBytes });
  const rows = batchSize * m.n_heads * (m.text_len + m.image_grid * m.image_grid); // B * H * T
  const workspaceBytes = 5 * deviceAllocatorBytes(4 * rows * m.head_dim) + 2 * deviceAllocatorBytes(4 * rows);
  const sizes = parameterSizes(m);
  const chunks = sizes.reduce((a, n) => a + Math.ceil(n / SUM_SQUARES_CHUNK), 0);
  const clipScratch = 8 * (3 * sizes.length + 1) + 8 * chunks;
  return {
    stateBytes: tensors.stateBytes,
    activationBytes: tensors.activationBytes,
    workspaceBytes,
    totalBytes: tensors.totalBytes + workspaceBytes,
    outsideAllocatorBytes: CUBLASLT_WORKSPACE_BYTES + clipScratch,
  };
}

export interface PriorDeviceGenerationEstimate extends PriorGenerationMemoryEstimate {
  /** cuBLASLt's workspace (not in peakBytesInUse). Generation's attention (dense, the CPU kernel's signature) takes
   *  no workspace from the allocator. */
  readonly outsideAllocatorBytes: number;
}

/** Peak device memory of the prior in `dalle generate --device cuda --batch B`: priorGenerationMemory in the device
 *  allocator's classes. */
export function priorDeviceGenerationMemory(m: Arch, batch: number, options: { condScale?: number } = {}): PriorDeviceGenerationEstimate {
  return { ...priorGenerationMemory(m, batch, { ...options, sizeClass: deviceAllocatorBytes }), outsideAllocatorBytes: CUBLASLT_WORKSPACE_BYTES };
}
