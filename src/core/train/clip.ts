// Global-norm gradient clipping (the prior's paper setting clips at 4).
import { Tensor, scaleInPlace, sumSquaresOf } from '../tensor';

/**
 * The global L2 norm of the gradients of `params` (float64 accumulation). When it exceeds `maxNorm`, every gradient
 * is scaled by maxNorm / norm. A non-finite norm is returned as is and nothing is scaled (the caller skips the step).
 */
export function clipGradNorm(params: readonly Tensor[], maxNorm: number): { norm: number; clipped: boolean } {
  const norm = gradNorm(params);
  if (!Number.isFinite(norm) || !(maxNorm > 0) || norm <= maxNorm) return { norm, clipped: false };
  const factor = maxNorm / (norm + 1e-6);
  for (const p of params) if (p.grad) scaleInPlace(p.grad, factor);
  return { norm, clipped: true };
}

/** The global gradient norm without clipping. */
export function gradNorm(params: readonly Tensor[]): number {
  // One batched call (on a GPU one synchronization, not one a parameter); on the CPU the same sums in the same order.
  return Math.sqrt(sumSquaresOf(params.flatMap((p) => (p.grad ? [p.grad] : []))));
}
