/**
 * The rows of every rank, inside a data-parallel forward pass: (b, E) on each of N ranks -> (N b, E), rank r's rows at
 * [r b, (r + 1) b), for a loss over the whole global batch (CLIP's contrastive loss compares every pair of it).
 *
 * Forward: one all-reduce of a zero-padded (N b, E) array in which each rank wrote its own rows (blocking: the forward
 * needs them now). Backward: the gradient of this rank's rows, times N. Why: every rank computes the same global loss
 * L from the same gathered rows, holding the other ranks' rows as constants, so its local gradient is dL/d(own rows)
 * exactly; the loop averages the ranks' parameter gradients (divides their sum by N), and the N undoes that division,
 * so the sum over ranks of each rank's own-row contribution is the gradient one process on the global batch gets.
 * Parameters the loss reads directly (not through the gathered rows, e.g. a temperature) get the full dL on every
 * rank, which the average keeps as it is.
 */
import { Tensor } from '../tensor';
import { Collective } from './collective';

export const GATHER_OVER_RANKS_OP = 'gatherOverRanks';

export function gatherOverRanks(x: Tensor, collective: Collective): Tensor {
  const N = collective.worldSize;
  if (N === 1) return x;
  if (x.rank !== 2) throw new Error(`dalle: gatherOverRanks takes rows (b, E), got rank ${x.rank}`);
  const [b, E] = x.shape;
  const mine = Float32Array.from(x.toArray() as ArrayLike<number>);
  const all = new Float32Array(N * b * E);
  all.set(mine, collective.rank * b * E);
  collective.allReduceSync(all, 'sum');
  all.set(mine, collective.rank * b * E); // exactly this rank's values (a sum with zeros is exact, but say so)
  const out = Tensor.from(all, [N * b, E], 'f32', x.device);
  if (x.requiresGrad) {
    out.requiresGrad = true;
    out.gradFn = {
      op: GATHER_OVER_RANKS_OP,
      inputs: [x],
      backward: (g: Tensor) => {
        const full = g.toArray() as Float32Array;
        const own = full.slice(collective.rank * b * E, (collective.rank + 1) * b * E);
        for (let i = 0; i < own.length; i++) own[i] *= N;
        return [Tensor.from(own, [b, E], 'f32', x.device)];
      },
    };
  }
  return out;
}
