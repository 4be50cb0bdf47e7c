// The CUDA backend: device memory and kernels of the CUDA addon (native/cuda, src/core/cuda). Its kernel table holds
// the addon's functions under the CPU kernels' names, found at run time (`typeof addon[name] === 'function'`), so a
// kernel added to the addon with the CPU kernel's name and signature is used as soon as the addon exports it. The
// addon's older entry points that take another signature (a dtype first, cuBLASLt's gemm, the mask-kind attention)
// get an adapter here that takes the CPU kernel's signature instead; the engine's tensors on the GPU are f32 (as on
// the CPU), so the adapters pass 'f32'.
// One process uses one GPU at a time: the backend selects its device when it is made.
import { AllocStats } from '../native';
import { CudaAddon, CudaCastDType, CudaMaskKind } from '../cuda';
import { Backend, FillKind, Kernel } from './backend';
import { cpuBackend } from './cpu';
import { Device } from './device';

/** Addon exports that are not kernels (memory, device, status): never in the kernel table. */
const NOT_KERNELS = new Set(['info', 'setDevice', 'malloc', 'alloc', 'free', 'trim', 'resetPeak', 'sizeClass', 'copyIn', 'copyOut', 'memset', 'synchronize',
  'cublasLtStatus', 'memcpy', 'cast', 'allocStats']);

/** Addon exports whose signature differs from the CPU kernel of the same name, or that have no CPU twin: they reach
 *  the table only through the adapters below. */
const CUDA_SHAPED = new Set(['gemm', 'layerNormForward', 'layerNormBackward',
  'scaleFilter', 'geluForward', 'geluBackward']);

const MASK_KINDS: readonly CudaMaskKind[] = ['row', 'column', 'conv']; // the CPU's MASK_KIND_CODE order

type Extra = Record<string, unknown>;

export function createCudaBackend(addon: CudaAddon, device: Device, index: number): Backend {
  addon.setDevice(index);
  const raw = addon as unknown as Extra;
  const has = (name: string): boolean => typeof raw[name] === 'function';
  const backend: Backend = {
    device,
    kernels: {},
    // The addon's caching allocator (native/cuda/device_allocator.h), with the main addon's names.
    alloc: (bytes) => addon.alloc(bytes),
    free: (address, bytes) => addon.free(address, bytes),
    copyIn: (address, data) => addon.copyIn(address, data),
    // The CUDA addon takes the typed array first here (the main addon takes the address first).
    copyOut: (address, data) => addon.copyOut(data, address),
    memcpy: (dst, src, bytes) => addon.memcpy(dst, src, bytes),
    fill(dst, count, value, kind: FillKind) {
      // +0 is all-zero bytes in every kind (-0 is not, in f32): a memset then.
      if (Object.is(value, 0)) addon.memset(dst, 0, count * (kind === 'u16' ? 2 : 4));
      else addon.fill(dst, count, value, kind);
    },
    stridedCopy: (dst, src, itemBytes, shape, dstStrides, srcStrides) =>
      addon.stridedCopy(dst, src, itemBytes, shape, dstStrides, srcStrides),
    cast: (dst, dstDtype, src, srcDtype, count) =>
      addon.cast(dst, dstDtype as CudaCastDType, src, srcDtype as CudaCastDType, count),
    allocStats(): AllocStats {
      const s = addon.allocStats();
      return { bytesInUse: s.bytesInUse, bytesCached: s.bytesCached, peakBytesInUse: s.peakBytesInUse, allocs: s.allocs,
        cacheHits: s.cacheHits, osAllocs: s.driverAllocs };
    },
    resetPeak: () => addon.resetPeak(),
  };

  /** Device workspaces of one kernel call, freed when it returns. */
  type Temps = Array<[number, number]>;
  const withTemps = <T>(run: (temps: Temps) => T): T => {
    const temps: Temps = [];
    try {
      return run(temps);
    } finally {
      for (const [address, bytes] of temps) backend.free(address, bytes);
    }
  };
  const temp = (temps: Temps, bytes: number): number => {
    const address = backend.alloc(bytes);
    temps.push([address, bytes]);
    return address;
  };
  /** A contiguous (B, H, T, width) f32 copy of a strided operand (strides of B, H, T; unit last stride), or the
   *  address itself when it already is contiguous. */
  const contiguous = (address: number, strides: number[], B: number, H: number, T: number, width: number, temps: Temps): number => {
    if (strides[0] === H * T * width && strides[1] === T * width && strides[2] === width) return address;
    const copy = temp(temps, B * H * T * width * 4);
    backend.stridedCopy(copy, address, 4, [B, H, T, width], [H * T * width, T * width, width, 1], [...strides, 1]);
    return copy;
  };

  const adapters: Record<string, Kernel> = {
    sgemmBatched: (batch: number, tA: boolean, tB: boolean, M: number, N: number, K: number, alpha: number, a: number,
      lda: number, sA: number, b: number, ldb: number, sB: number, beta: number, c: number, ldc: number, sC: number) =>
      addon.gemm('f32', tA, tB, M, N, K, alpha, a, lda, sA, b, ldb, sB, beta, c, ldc, sC, batch, false),
    // bf16 x bf16 -> f32 C: the operands widened to f32 (exact) in a workspace, then the f32 GEMM.
    gemmBf16: (tA: boolean, tB: boolean, M: number, N: number, K: number, alpha: number, a: number, lda: number,
      b: number, ldb: number, beta: number, c: number, ldc: number) =>
      withTemps((temps) => {
        // Elements spanned by A (M x K, or K x M transposed, rows lda apart) and B; none when a side is empty.
        const na = Math.max(0, (tA ? K - 1 : M - 1) * lda + (tA ? M : K));
        const nb = Math.max(0, (tB ? N - 1 : K - 1) * ldb + (tB ? K : N));
        const a32 = temp(temps, na * 4);
        const b32 = temp(temps, nb * 4);
        addon.cast(a32, 'f32', a, 'bf16', na);
        addon.cast(b32, 'f32', b, 'bf16', nb);
        addon.gemm('f32', tA, tB, M, N, K, alpha, a32, lda, 0, b32, ldb, 0, beta, c, ldc, 0, 1, false);
      }),
    layerNormForward: (x: number, gain: number, bias: number, y: number, mean: number, rstd: number, R: number,
      C: number, eps: number) => addon.layerNormForward('f32', x, gain, bias, y, mean, rstd, R, C, eps),
    layerNormBackward: (x: number, gain: number, mean: number, rstd: number, g: number, dx: number | null,
      dgain: number | null, dbias: number | null, R: number, C: number) =>
      addon.layerNormBackward('f32', x, gain, mean, rstd, g, dx, dgain, dbias, R, C),
    scaleFilter: (n: number, x: number, y: number, alpha: number) => addon.scaleFilter('f32', n, x, y, alpha),
    // The block-sparse attention: the CUDA kernels take contiguous (B, H, T, D) operands, and the backward also the
    // forward's output (recomputed here into a workspace: the CPU kernel's signature does not carry it) and a delta
    // workspace; gradients the caller does not want go to workspaces.
    sparseAttentionForward: (q: number, qs: number[], k: number, ks: number[], v: number, vs: number[], out: number,
      lse: number, kind: number, textLen: number, gridSide: number, convKernel: number, B: number, H: number, D: number,
      Dv: number, scale: number) =>
      withTemps((temps) => {
        const T = textLen + gridSide * gridSide;
        const cq = contiguous(q, qs, B, H, T, D, temps);
        const ck = contiguous(k, ks, B, H, T, D, temps);
        const cv = contiguous(v, vs, B, H, T, Dv, temps);
        addon.blockSparseAttentionForward('f32', MASK_KINDS[kind], textLen, gridSide, convKernel, cq, ck, cv, out, lse, B, H, D, Dv, scale);
      }),
    sparseAttentionBackward: (q: number, qs: number[], k: number, ks: number[], v: number, vs: number[], dO: number,
      dOs: number[], lse: number, dq: number | null, dk: number | null, dv: number | null, kind: number,
      textLen: number, gridSide: number, convKernel: number, B: number, H: number, D: number, Dv: number,
      scale: number) =>
      withTemps((temps) => {
        const T = textLen + gridSide * gridSide;
        const rows = B * H * T;
        const cq = contiguous(q, qs, B, H, T, D, temps);
        const ck = contiguous(k, ks, B, H, T, D, temps);
        const cv = contiguous(v, vs, B, H, T, Dv, temps);
        const cdo = contiguous(dO, dOs, B, H, T, Dv, temps);
        const o = temp(temps, rows * Dv * 4);
        const lse2 = temp(temps, rows * 4);
        const delta = temp(temps, rows * 4);
        const mask = MASK_KINDS[kind];
        addon.blockSparseAttentionForward('f32', mask, textLen, gridSide, convKernel, cq, ck, cv, o, lse2, B, H, D, Dv, scale);
        addon.blockSparseAttentionBackward('f32', mask, textLen, gridSide, convKernel, cq, ck, cv, o, cdo, lse, dq ?? temp(temps, rows * D * 4),
          dk ?? temp(temps, rows * D * 4), dv ?? temp(temps, rows * Dv * 4), delta, B, H, D, Dv, scale);
      }),
  };

  // Only names the CPU backend also has: an export of another name (a GPU-only entry point) is no kernel of the table.
  const kernels: Record<string, unknown> = {};
  for (const name of Object.keys(raw)) {
    if (!NOT_KERNELS.has(name) && !CUDA_SHAPED.has(name) && has(name) && typeof cpuBackend.kernels[name] === 'function') {
      kernels[name] = raw[name];
    }
  }
  Object.assign(kernels, adapters);
  (backend as { kernels: Record<string, unknown> }).kernels = kernels;
  return backend;
}
