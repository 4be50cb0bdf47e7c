// Global-norm gradient clipping (the prior's paper setting clips at 4).
import { Tensor, scaleInPlace, sumSquares } from '../tensor';

/**
 * The global L2 norm of the gradients of `params` (float64 accumulation). When it exceeds `maxNorm`, every gradient
 * is scaled by maxNorm / norm. A non-finite norm is returned as is and nothing is scaled (the caller skips the step).
 */
export function clipGradNorm(params: readonly Tensor[], maxNorm: number): { norm: number; clipped: boolean } {
  let total = 0;
  for (const p of params) if (p.grad) total += sumSquares(p.grad);
  const norm = Math.sqrt(total);
  if (!Number.isFinite(norm) || !(maxNorm > 0) || norm <= maxNorm) return { norm, clipped: false };
  const factor = maxNorm / (norm + 1e-6);
  for (const p of params) if (p.grad) scaleInPlace(p.grad, factor);
  return { norm, clipped: true };
}

/** The global gradient norm without clipping. */
export function gradNorm(params: readonly Tensor[]): number {
  let total = 0;
  for (const p of params) if (p.grad) total += sumSquares(p.grad);
  return Math.sqrt(total);
}
