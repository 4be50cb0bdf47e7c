// A stand-in for the CUDA addon on a machine without a GPU, for measuring device memory: host memory from the main
// addon, the CPU kernels behind the addon's own signatures (gemm, the block-sparse attention on contiguous operands,
// the dtype-first row kernels), and allocation statistics counted in the DEVICE allocator's size classes (the built
// CUDA addon's sizeClass, device_allocator.h's pure logic). Passed to createCudaBackend, it runs the real CUDA
// backend's adapters (src/core/backend/cuda.ts), workspaces included, so a test can read the peak a GPU would report
// for the same work. It proves the counting, not the CUDA kernels (fake-device.ts: the same for placement).
import { Backend, cpuBackend, createCudaBackend, registerBackend } from '../../src/core/backend';
import { CudaAddon, CudaAllocStats, cudaAddonIfLoaded, cudaStatus } from '../../src/core/cuda';
import { MASK_KIND_CODE } from '../../src/core/ops/sparse-attention';

type Fn = (...args: never[]) => unknown;

/** The built CUDA addon's sizeClass, or why there is none (the addon is built wherever nvcc is; no GPU needed). */
export function deviceSizeClass(): ((bytes: number) => number) | string {
  const addon = cudaAddonIfLoaded() as Partial<CudaAddon> | null;
  if (!addon) return `the CUDA addon is not built or did not load here (${cudaStatus().reason})`;
  if (typeof addon.sizeClass !== 'function') return 'the built CUDA addon has no sizeClass (rebuild it: node native/cuda/build.js)';
  return (bytes) => addon.sizeClass!(bytes);
}

export interface FakeCudaDevice {
  readonly backend: Backend;
  /** Unregisters the stand-in. */
  remove(): void;
}

/** Registers createCudaBackend(stand-in addon) as 'cuda:0', its statistics in the classes of `sizeClass`. */
export function installFakeCudaAddon(sizeClass: (bytes: number) => number): FakeCudaDevice {
  const cpu = cpuBackend.kernels as unknown as Record<string, Fn>;
  const call = (name: string, ...args: unknown[]): unknown => (cpu[name] as (...a: unknown[]) => unknown)(...args);
  const live = new Map<number, number>(); // address -> size class
  const stats: CudaAllocStats = { bytesInUse: 0, bytesCached: 0, peakBytesInUse: 0, allocs: 0, cacheHits: 0, driverAllocs: 0, driverFrees: 0 };
  const alloc = (bytes: number): number => {
    const address = cpuBackend.alloc(bytes);
    const cls = sizeClass(bytes);
    live.set(address, cls);
    stats.allocs++;
    stats.bytesInUse += cls;
    stats.peakBytesInUse = Math.max(stats.peakBytesInUse, stats.bytesInUse);
    return address;
  };
  /** (B, H, T, width) contiguous strides of [batch, head, time]. */
  const contiguous = (H: number, T: number, width: number): number[] => [H * T * width, T * width, width];
  const seq = (textLen: number, gridSide: number): number => textLen + gridSide * gridSide;
  const addon: Record<string, unknown> = {
    ...cpu,
    setDevice: () => undefined,
    alloc,
    malloc: alloc,
    free(address: number, bytes?: number) {
      const cls = live.get(address);
      if (cls === undefined) throw new Error(`fake cuda: free of ${address}, not a live block`);
      live.delete(address);
      stats.bytesInUse -= cls;
      cpuBackend.free(address, bytes ?? 0);
    },
    allocStats: () => ({ ...stats }),
    resetPeak: () => void (stats.peakBytesInUse = stats.bytesInUse),
    trim: () => undefined,
    sizeClass,
    copyIn: (address: number, data: ArrayBufferView) => cpuBackend.copyIn(address, data),
    copyOut: (data: ArrayBufferView, address: number) => cpuBackend.copyOut(address, data),
    memcpy: (dst: number, src: number, bytes: number) => cpuBackend.memcpy(dst, src, bytes),
    memset: (address: number, byte: number, bytes: number) => {
      if (byte !== 0 || bytes % 4 !== 0) throw new Error('fake cuda: memset of zeros in whole words only');
      cpuBackend.fill(address, bytes / 4, 0, 'f32');
    },
    fill: (dst: number, count: number, value: number, kind: never) => cpuBackend.fill(dst, count, value, kind),
    stridedCopy: (...args: never[]) => (cpuBackend.stridedCopy as Fn)(...args),
    cast: (...args: never[]) => (cpuBackend.cast as Fn)(...args),
    gemm: (_dtype: string, tA: boolean, tB: boolean, M: number, N: number, K: number, alpha: number, a: number, lda: number,
      sA: number, b: number, ldb: number, sB: number, beta: number, c: number, ldc: number, sC: number, batch: number) =>
      call('sgemmBatched', batch, tA, tB, M, N, K, alpha, a, lda, sA, b, ldb, sB, beta, c, ldc, sC),
    layerNormForward: (_dtype: string, ...args: unknown[]) => call('layerNormForward', ...args),
    layerNormBackward: (_dtype: string, ...args: unknown[]) => call('layerNormBackward', ...args),
    scaleFilter: (_dtype: string, ...args: unknown[]) => call('scaleFilter', ...args),
    blockSparseAttentionForward: (_dtype: string, kind: keyof typeof MASK_KIND_CODE, textLen: number, gridSide: number,
      convKernel: number, q: number, k: number, v: number, o: number, lse: number, B: number, H: number, D: number,
      Dv: number, scale: number) => {
      const T = seq(textLen, gridSide);
      call('sparseAttentionForward', q, contiguous(H, T, D), k, contiguous(H, T, D), v, contiguous(H, T, Dv), o, lse,
        MASK_KIND_CODE[kind], textLen, gridSide, convKernel, B, H, D, Dv, scale);
    },
    // The CPU kernel recomputes what the GPU's takes as o and delta: those are workspaces it leaves alone.
    blockSparseAttentionBackward: (_dtype: string, kind: keyof typeof MASK_KIND_CODE, textLen: number, gridSide: number,
      convKernel: number, q: number, k: number, v: number, _o: number, dO: number, lse: number, dq: number, dk: number,
      dv: number, _delta: number, B: number, H: number, D: number, Dv: number, scale: number) => {
      const T = seq(textLen, gridSide);
      call('sparseAttentionBackward', q, contiguous(H, T, D), k, contiguous(H, T, D), v, contiguous(H, T, Dv), dO,
        contiguous(H, T, Dv), lse, dq, dk, dv, MASK_KIND_CODE[kind], textLen, gridSide, convKernel, B, H, D, Dv, scale);
    },
  };
  const backend = createCudaBackend(addon as unknown as CudaAddon, 'cuda:0', 0);
  const remove = registerBackend(backend);
  return { backend, remove };
}
