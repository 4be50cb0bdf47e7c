/**
 * A batch statistic over the global batch, inside a data-parallel forward pass: the mean over ranks of each rank's
 * statistic of its part (ranks hold equal parts, so this is the statistic of the whole batch, for a mean).
 *
 * Forward: the values are all-reduced (blocking: the forward needs them now) and divided by N. Backward: the incoming
 * gradient passes unchanged. Why not divided by N: every rank computes the same loss term from the same global value,
 * so its incoming gradient g is the same everywhere; the loop averages the ranks' parameter gradients, which gives
 * (1/N) sum_r g . d(stat_r)/d(theta) = g . d(global)/d(theta), the gradient one process on the whole batch gets.
 */
import { Tensor } from '../tensor';
import { Collective } from './collective';

export const MEAN_OVER_RANKS_OP = 'meanOverRanks';

/** x: a small f32 tensor (a statistic); the same shape on every rank. One process: x itself. */
export function meanOverRanks(x: Tensor, collective: Collective): Tensor {
  if (collective.worldSize === 1) return x;
  const values = Float32Array.from(x.toArray() as ArrayLike<number>);
  collective.allReduceSync(values, 'sum');
  const N = collective.worldSize;
  for (let i = 0; i < values.length; i++) values[i] /= N;
  const out = Tensor.from(values, x.shape, 'f32', x.device);
  if (x.requiresGrad) {
    out.requiresGrad = true;
    out.gradFn = { op: MEAN_OVER_RANKS_OP, inputs: [x], backward: (g: Tensor) => [g] };
  }
  return out;
}
