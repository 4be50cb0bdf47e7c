// Cross-entropy: fused log-softmax + weighted negative log-likelihood (native/cpu/loss.cc), forward and backward.
// Keys: N = positions (product of the leading dims), V = classes.
//   logits (..., V) f32, targets (...) i32, weights (...) f32 optional -> a scalar:
//   nll_n = logsumexp(logits[n, :]) - logits[n, target_n]
//   reduction 'sum':  sum_n w_n nll_n
//   reduction 'mean': sum_n w_n nll_n / sum_n w_n
// Positions whose target is ignoreIndex contribute nothing: neither to the sum nor to the mean's denominator, so
// 'mean' divides by the total weight of the positions that count (without weights every w_n is 1: the usual mean over
// the counted positions). This is how the prior's loss weighting is applied (the paper's Appendix B: text 1/8, image 7/8, each
// normalized by the number of tokens of its kind): give every counted text position w = 1 / (8 n_text) and every
// image position w = 7 / (8 n_image); the weights then total 1 and 'mean' = 1/8 mean(text nll) + 7/8 mean(image nll).
// (Plain per-kind weights 1/8 and 7/8 with 'mean' would instead give (sum_text/8 + 7 sum_image/8) / (n_text/8 +
// 7 n_image/8).) A 'mean' over zero total weight (every position ignored) is 0 with zero gradients, not NaN.
// Backward: dlogits = w * (softmax(logits) - onehot(target)) * g / denom (denom = 1 for 'sum'); the weights, when
// they require gradients, get g * nll (sum) or g * (nll - loss) / denom (mean); targets get none.
// A target outside [0, V) that is not ignoreIndex is an error naming it, its row and V.
import { activeBackend, opKernel } from '../backend/registry';
import { OpCase, applyOp, defineOp } from '../tensor/op';
import { RefTensor, refTensor } from '../tensor/reference';
import { Tensor, shapeStr } from '../tensor/tensor';
import { DType } from '../tensor/dtype';
import { contiguous } from './view';

export interface CrossEntropyAttrs {
  /** Positions with this target are skipped (padding). Default: none. */
  ignoreIndex?: number;
  /** 'mean' (default): divide by the total weight of the counted positions; 'sum': no division. */
  reduction?: 'sum' | 'mean';
}

type CrossEntropyForward = (
  logits: number, N: number, V: number, targets: number, weights: number | null, hasIgnore: boolean,
  ignoreIndex: number, mean: boolean, out: number, lse: number, nll: number,
) => void;
type CrossEntropyBackward = (
  logits: number, N: number, V: number, targets: number, weights: number | null, hasIgnore: boolean,
  ignoreIndex: number, mean: boolean, lse: number, nll: number, g: number, dlogits: number | null,
  dweights: number | null,
) => void;

function check(inputs: readonly Tensor[], attrs: CrossEntropyAttrs): [number, number] {
  const [logits, targets, weights] = inputs;
  if (inputs.length < 2 || inputs.length > 3) {
    throw new Error(`dalle: crossEntropy takes logits, targets and optional weights, got ${inputs.length} inputs`);
  }
  if (logits.dtype !== 'f32' || logits.rank < 1) {
    throw new Error(`dalle: crossEntropy: logits must be f32 (..., V), got ${logits.dtype} ${shapeStr(logits.shape)}`);
  }
  const lead = logits.shape.slice(0, -1);
  const same = (t: Tensor) => t.rank === lead.length && t.shape.every((d, i) => d === lead[i]);
  if (targets.dtype !== 'i32' || !same(targets)) {
    throw new Error(
      `dalle: crossEntropy: targets must be i32 ${shapeStr(lead)} for logits ${shapeStr(logits.shape)}, got ${targets.dtype} ${shapeStr(targets.shape)}`,
    );
  }
  if (weights && (weights.dtype !== 'f32' || !same(weights))) {
    throw new Error(
      `dalle: crossEntropy: weights must be f32 ${shapeStr(lead)} for logits ${shapeStr(logits.shape)}, got ${weights.dtype} ${shapeStr(weights.shape)}`,
    );
  }
  const r = attrs.reduction ?? 'mean';
  if (r !== 'mean' && r !== 'sum') throw new Error(`dalle: crossEntropy: reduction must be 'sum' or 'mean', got '${r}'`);
  if (attrs.ignoreIndex !== undefined && !Number.isInteger(attrs.ignoreIndex)) {
    throw new Error(`dalle: crossEntropy: ignoreIndex must be an integer, got ${attrs.ignoreIndex}`);
  }
  const V = logits.shape[logits.rank - 1];
  return [targets.size, V];
}

export function refCrossEntropy(
  logits: RefTensor, targets: RefTensor, weights: RefTensor | undefined, attrs: CrossEntropyAttrs,
): RefTensor {
  const V = logits.shape[logits.shape.length - 1];
  const N = targets.data.length;
  let total = 0;
  let denom = 0;
  for (let n = 0; n < N; n++) {
    const t = targets.data[n];
    if (attrs.ignoreIndex !== undefined && t === attrs.ignoreIndex) continue;
    if (!(t >= 0 && t < V)) throw new Error(`refCrossEntropy: target ${t} out of range for V = ${V}`);
    let m = -Infinity;
    for (let v = 0; v < V; v++) m = Math.max(m, logits.data[n * V + v]);
    let s = 0;
    for (let v = 0; v < V; v++) s += Math.exp(logits.data[n * V + v] - m);
    const w = weights ? weights.data[n] : 1;
    total += w * (m + Math.log(s) - logits.data[n * V + t]);
    denom += w;
  }
  const loss = (attrs.reduction ?? 'mean') === 'sum' ? total : denom !== 0 ? total / denom : 0;
  return refTensor([], [loss]);
}

export const crossEntropyOp = defineOp<CrossEntropyAttrs>({
  name: 'crossEntropy',
  kernels: ['crossEntropyForward', 'crossEntropyBackward'],
  forward(inputs, attrs, ctx) {
    const [N, V] = check(inputs, attrs);
    const [logits, targets, weights] = inputs.map((t) => contiguous(t));
    const out = Tensor.empty([], 'f32');
    const lse = Tensor.empty([N], 'f32');
    const nll = Tensor.empty([N], 'f32');
    try {
      opKernel<CrossEntropyForward>('crossEntropyForward')(logits.address, N, V, targets.address, weights?.address ?? null,
        attrs.ignoreIndex !== undefined, attrs.ignoreIndex ?? 0, (attrs.reduction ?? 'mean') === 'mean', out.address,
        lse.address, nll.address);
    } catch (err) {
      out.dispose();
      lse.dispose();
      nll.dispose();
      throw err;
    } finally {
      [logits, targets, weights].forEach((c, i) => c && c !== inputs[i] && c.dispose());
    }
    ctx.save('lse', lse);
    ctx.save('nll', nll);
    return out;
  },
  backward(ctx, g) {
    const { inputs, attrs } = ctx;
    const [N, V] = check(inputs, attrs);
    const wantLogits = inputs[0].requiresGrad;
    const wantWeights = inputs.length > 2 && inputs[2].requiresGrad;
    const dlogits = wantLogits ? Tensor.empty(inputs[0].shape, 'f32') : null;
    const dweights = wantWeights ? Tensor.empty(inputs[2].shape, 'f32') : null;
    const [logits, targets, weights] = inputs.map((t) => contiguous(t));
    const gc = contiguous(g);
    try {
      opKernel<CrossEntropyBackward>('crossEntropyBackward')(logits.address, N, V, targets.address,
        weights?.address ?? null, attrs.ignoreIndex !== undefined, attrs.ignoreIndex ?? 0,
        (attrs.reduction ?? 'mean') === 'mean', ctx.saved('lse').address, ctx.saved('nll').address, gc.address,
        dlogits?.address ?? null, dweights?.address ?? null);
    } finally {
      [logits, targets, weights].forEach((c, i) => c && c !== inputs[i] && c.dispose());
      if (gc !== g) gc.dispose();
    }
    return inputs.length > 2 ? [dlogits, null, dweights] : [dlogits, null];
  },
  reference([logits, targets, weights], attrs) {
    return refCrossEntropy(logits, targets, weights, attrs);
  },
  cases(): OpCase<CrossEntropyAttrs>[] {
    const cases: OpCase<CrossEntropyAttrs>[] = [];
    const i32: DType = 'i32';
    const sizes: Array<[number, number]> = [[1, 1], [7, 33], [33, 129], [4, 1031], [3, 5000]];
    for (const [N, V] of sizes) {
      for (const reduction of ['mean', 'sum'] as const) {
        for (const weighted of [false, true]) {
          for (const ignore of [false, true]) {
            if (N > 33 && (weighted !== ignore)) continue; // the big sizes: plain and everything-on only
            const inputs = [
              { shape: [N, V] },
              // With ignoreIndex = -1, targets are drawn from [-1, V): some positions are ignored.
              { shape: [N], dtype: i32, kind: 'int' as const, low: ignore ? -1 : 0, high: V, grad: false },
              ...(weighted ? [{ shape: [N], kind: 'positive' as const }] : []),
            ];
            cases.push({
              name: `${N}x${V} ${reduction}${weighted ? ' weighted' : ''}${ignore ? ' ignoreIndex' : ''}`,
              inputs,
              attrs: { reduction, ...(ignore ? { ignoreIndex: -1 } : {}) },
            });
          }
        }
      }
    }
    cases.push({
      name: 'ignoreIndex inside the vocabulary, full',
      inputs: [{ shape: [4, 3] }, { shape: [4], dtype: i32, kind: 'int', low: 0, high: 3, grad: false }, { shape: [4], kind: 'positive' }],
      attrs: { reduction: 'mean', ignoreIndex: 0 },
      gradcheck: 'full',
    });
    cases.push({
      name: '(2, 3, 17) logits',
      inputs: [{ shape: [2, 3, 17] }, { shape: [2, 3], dtype: i32, kind: 'int', low: 0, high: 17, grad: false }],
      attrs: {},
    });
    return cases;
  },
});

/**
 * Weighted cross-entropy of logits (..., V) against i32 targets (...); weights (...) optional. See the file comment
 * for 'mean' (divides by the total weight of the positions whose target is not ignoreIndex).
 */
export function crossEntropy(
  logits: Tensor, targets: Tensor, weights?: Tensor | null, attrs: CrossEntropyAttrs = {},
): Tensor {
  return applyOp(crossEntropyOp, weights ? [logits, targets, weights] : [logits, targets], attrs);
}
