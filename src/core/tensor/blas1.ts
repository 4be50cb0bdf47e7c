// Thin typed wrappers over the vector kernels (native/cpu/blas1.cc), on the backend of the tensors given.
import { backendKernel } from '../backend/backend';
import { Tensor, shapeStr } from './tensor';

type Axpy = (n: number, alpha: number, x: number, y: number) => void;
type Scale = (n: number, alpha: number, x: number) => void;
type SumSquares = (n: number, x: number) => number;
type SumSquaresBatch = (addresses: number[], sizes: number[]) => number;

/** The kernels these wrappers call (engine kernels outside ops: runtime.ts lists them for a device). */
export const BLAS1_KERNELS = ['axpy', 'scale', 'sumSquares', 'sumSquaresBatch'] as const;

function checkF32Contiguous(t: Tensor, what: string): void {
  if (t.dtype !== 'f32' || !t.isContiguous()) {
    throw new Error(`dalle: ${what} needs a contiguous f32 tensor, got ${t}`);
  }
}

/** dst += alpha * src (same shape, contiguous f32). */
export function addInPlace(dst: Tensor, src: Tensor, alpha = 1): void {
  checkF32Contiguous(dst, 'addInPlace');
  checkF32Contiguous(src, 'addInPlace');
  if (dst.size !== src.size) throw new Error(`dalle: addInPlace: ${shapeStr(dst.shape)} += ${shapeStr(src.shape)}`);
  if (dst.backend !== src.backend) throw new Error(`dalle: addInPlace: ${dst.device} += ${src.device}: one device only`);
  backendKernel<Axpy>(dst.backend, 'axpy')(dst.size, alpha, src.address, dst.address);
}

/** t *= alpha in place. */
export function scaleInPlace(t: Tensor, alpha: number): void {
  checkF32Contiguous(t, 'scaleInPlace');
  backendKernel<Scale>(t.backend, 'scale')(t.size, alpha, t.address);
}

/** Sum of squares in float64 (thread-count independent). */
export function sumSquares(t: Tensor): number {
  checkF32Contiguous(t, 'sumSquares');
  return backendKernel<SumSquares>(t.backend, 'sumSquares')(t.size, t.address);
}

/**
 * The summed sums of squares of `tensors` (one device), in float64: on the CPU the loop of sumSquares in list order
 * (the same bits); on a GPU one kernel launch and one copy back for all of them instead of a synchronization each.
 */
export function sumSquaresOf(tensors: readonly Tensor[]): number {
  if (tensors.length === 0) return 0;
  const backend = tensors[0].backend;
  for (const t of tensors) {
    checkF32Contiguous(t, 'sumSquaresOf');
    if (t.backend !== backend) throw new Error(`dalle: sumSquaresOf: ${tensors[0].device} and ${t.device}: one device only`);
  }
  return backendKernel<SumSquaresBatch>(backend, 'sumSquaresBatch')(tensors.map((t) => t.address), tensors.map((t) => t.size));
}
