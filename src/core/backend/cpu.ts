// The CPU backend: the main addon (native/src, native/cpu) itself. Its memory functions and kernels are the addon's
// functions, unwrapped, so the CPU path costs exactly what it did before backends existed (plus COMPOSED below).
import { native } from '../native';
import { Backend, KernelTable } from './backend';

/** The main addon's exports that are not kernels: memory, threads and ISA, self-tests, reference GEMMs, block and plan
 *  tuning and introspection, the CUDA launch-shape mirror. Every other export is a kernel that ops or the engine may
 *  look up by name, and so one that every device backend must have (test/cuda/backend-wiring.test.ts). */
export const CPU_NOT_KERNELS: readonly string[] = ['alloc', 'free', 'sizeClass', 'allocStats', 'trim', 'resetPeak',
  'minorFaults', 'copyIn', 'copyOut', 'memcpy', 'cast', 'setThreads', 'numThreads', 'cpuInfo', 'setIsa', 'selfTestError',
  'selfTestParallelError', 'sgemm', 'sgemmBatchedSharedA', 'sgemmReference', 'gemmBf16Reference', 'gemmSetBlocking', 'sparseAttentionSetBlocks',
  'sparseAttentionPlan', 'attnPlanTiles', 'attnPlanLayout', 'attnPlanAllowed', 'attnPlanRuns', 'attnPlanLaunch',
  'cudaLaunchShape'];

type SumSquares = (n: number, x: number) => number;

/** Kernels of the CPU backend composed from the addon's own: batched forms whose CPU work is exactly the loop they
 *  replace (the same calls in the same order, so the same bits), for a device where one call instead of many saves a
 *  synchronization each. */
const COMPOSED = {
  /** sum over t of sumSquares(sizes[t], addresses[t]), added in list order. */
  sumSquaresBatch(addresses: readonly number[], sizes: readonly number[]): number {
    const sumSquares = native.sumSquares as SumSquares;
    let total = 0;
    for (let t = 0; t < addresses.length; t++) total += sumSquares(sizes[t], addresses[t]);
    return total;
  },
};

export const cpuBackend: Backend = {
  device: 'cpu',
  kernels: { ...(native as unknown as KernelTable), ...COMPOSED },
  alloc: native.alloc,
  free: native.free,
  copyIn: native.copyIn,
  copyOut: native.copyOut,
  memcpy: native.memcpy,
  fill: native.fill,
  stridedCopy: native.stridedCopy,
  cast: native.cast,
  allocStats: native.allocStats,
  resetPeak: native.resetPeak,
};
