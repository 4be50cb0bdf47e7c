/**
 * Inception Score (Salimans et al., 2016) from class probabilities p(y|x) of N images:
 *
 *   IS = exp( E_x KL( p(y|x) || p(y) ) ),   p(y) = mean over the split of p(y|x)
 *
 * computed on `splits` consecutive equal parts of the images (the last part takes the remainder), reporting the mean and
 * the population standard deviation over the parts, as the original code and torch-fidelity do (10 splits).
 * Logits are turned into probabilities with a float64 softmax. Key: N = images, C = classes.
 */

export interface InceptionScoreResult {
  readonly score: number;
  readonly std: number;
  readonly splits: number;
}

/** Softmax of each row of `logits` (N, C), in float64. */
export function softmaxRows(logits: ArrayLike<number>, count: number, classes: number): Float64Array {
  if (logits.length !== count * classes) {
    throw new RangeError(`dalle: ${logits.length} logits are not ${count} rows of ${classes} classes`);
  }
  const out = new Float64Array(count * classes);
  for (let n = 0; n < count; n++) {
    const o = n * classes;
    let max = -Infinity;
    for (let c = 0; c < classes; c++) max = Math.max(max, logits[o + c]);
    let sum = 0;
    for (let c = 0; c < classes; c++) {
      const e = Math.exp(logits[o + c] - max);
      out[o + c] = e;
      sum += e;
    }
    for (let c = 0; c < classes; c++) out[o + c] /= sum;
  }
  return out;
}

/** Inception Score of probabilities `probs` (N, C): each row non-negative and summing to 1. */
export function inceptionScore(probs: ArrayLike<number>, count: number, classes: number, splits = 10): InceptionScoreResult {
  if (probs.length !== count * classes) {
    throw new RangeError(`dalle: ${probs.length} probabilities are not ${count} rows of ${classes} classes`);
  }
  if (!Number.isInteger(splits) || splits < 1 || splits > count) {
    throw new RangeError(`dalle: the Inception Score needs 1 to ${count} splits (one image at least in each), got ${splits}`);
  }
  for (let n = 0; n < count; n++) {
    let sum = 0;
    for (let c = 0; c < classes; c++) {
      const p = probs[n * classes + c];
      if (!(p >= 0)) throw new RangeError(`dalle: probability ${p} of image ${n}, class ${c} is not >= 0`);
      sum += p;
    }
    if (Math.abs(sum - 1) > 1e-3) {
      throw new RangeError(`dalle: the probabilities of image ${n} sum to ${sum}, not 1 (are these logits?)`);
    }
  }
  const scores: number[] = [];
  for (let s = 0; s < splits; s++) {
    const start = Math.floor((s * count) / splits);
    const end = Math.floor(((s + 1) * count) / splits);
    const marginal = new Float64Array(classes);
    for (let n = start; n < end; n++) {
      for (let c = 0; c < classes; c++) marginal[c] += probs[n * classes + c];
    }
    for (let c = 0; c < classes; c++) marginal[c] /= end - start;
    let kl = 0;
    for (let n = start; n < end; n++) {
      for (let c = 0; c < classes; c++) {
        const p = probs[n * classes + c];
        if (p > 0) kl += p * (Math.log(p) - Math.log(marginal[c])); // 0 log 0 = 0
      }
    }
    scores.push(Math.exp(kl / (end - start)));
  }
  const mean = scores.reduce((a, b) => a + b, 0) / splits;
  const std = Math.sqrt(scores.reduce((a, b) => a + (b - mean) ** 2, 0) / splits);
  return { score: mean, std, splits };
}
