// Thin typed wrappers over the native vector kernels (native/cpu/blas1.cc).
import { kernel } from '../native';
import { Tensor, shapeStr } from './tensor';

const axpy = kernel<(n: number, alpha: number, x: number, y: number) => void>('axpy');
const scale = kernel<(n: number, alpha: number, x: number) => void>('scale');
const sumSquaresKernel = kernel<(n: number, x: number) => number>('sumSquares');

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
  axpy(dst.size, alpha, src.address, dst.address);
}

/** t *= alpha in place. */
export function scaleInPlace(t: Tensor, alpha: number): void {
  checkF32Contiguous(t, 'scaleInPlace');
  scale(t.size, alpha, t.address);
}

/** Sum of squares in float64 (thread-count independent). */
export function sumSquares(t: Tensor): number {
  checkF32Contiguous(t, 'sumSquares');
  return sumSquaresKernel(t.size, t.address);
}
