/**
 * Logits -> one sampled token: classifier-free guidance, temperature, top-k, top-p (nucleus), then inverse-CDF
 * sampling with a uniform number the caller draws. Pure functions on host arrays, computed in float64 (JS numbers):
 * a vocabulary of a few thousand per token is far below the cost of the prior's forward step.
 *
 * The rules (each a contract the tests check against a naive float64 reference):
 *   guidance      g = u + s * (c - u)     (s = 1: the conditional logits; s = 0: the unconditional ones)
 *   temperature   z = g / T, T > 0
 *   order         tokens ranked by z descending, ties by the lower token id first (deterministic)
 *   top-k (k > 0) keep the first k of that order (k = 0 or k >= V: keep all)
 *   top-p (p < 1) p_i = softmax over the kept tokens; keep the shortest prefix of the order whose cumulative
 *                 probability reaches p (always at least one token); p = 1 keeps all
 *   sample        renormalize the kept probabilities; with u in [0, 1), the token is the first, in ascending token id,
 *                 whose cumulative probability exceeds u (the last kept token if rounding leaves none)
 * Key: V = vocabulary size.
 */

/** A sampling setting that cannot be used; `hint` says what to do. Exit code 2 (bad flags). */
export class SamplingError extends Error {
  override readonly name = 'SamplingError';

  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(message);
  }
}

export interface SamplingOptions {
  /** Divides the logits; > 0 (1 = the model's distribution). */
  readonly temperature: number;
  /** Keep the k most likely tokens; 0 = off. */
  readonly topK: number;
  /** Keep the most likely tokens up to this much probability; 1 = off. In (0, 1]. */
  readonly topP: number;
}

export const DEFAULT_SAMPLING: SamplingOptions = { temperature: 1, topK: 0, topP: 1 };

/** Throws a SamplingError naming the bad setting (a temperature of 0 or less is rejected, never divided by). */
export function checkSamplingOptions(options: SamplingOptions): void {
  const { temperature, topK, topP } = options;
  if (!(Number.isFinite(temperature) && temperature > 0)) {
    throw new SamplingError(`--temperature must be a number > 0, got ${temperature}`, 'use 1 for the model\'s own distribution, below 1 (e.g. 0.7) for safer samples; for greedy decoding use --top-k 1');
  }
  if (!(Number.isSafeInteger(topK) && topK >= 0)) {
    throw new SamplingError(`--top-k must be an integer >= 0, got ${topK}`, 'use 0 to turn top-k off');
  }
  if (!(Number.isFinite(topP) && topP > 0 && topP <= 1)) {
    throw new SamplingError(`--top-p must be in (0, 1], got ${topP}`, 'use 1 to turn top-p off, e.g. 0.9 to keep the most likely tokens up to 90% of the probability');
  }
}

/** Classifier-free guidance: out_i = u_i + s * (c_i - u_i), in float64. (V) each. */
export function guideLogits(cond: ArrayLike<number>, uncond: ArrayLike<number>, scale: number, out = new Float64Array(cond.length)): Float64Array {
  if (uncond.length !== cond.length) throw new RangeError(`guideLogits: cond has ${cond.length} logits, uncond ${uncond.length}`);
  for (let i = 0; i < cond.length; i++) out[i] = uncond[i] + scale * (cond[i] - uncond[i]);
  return out;
}

/** log softmax(logits)[token] in float64: the log-likelihood of one token under the model. */
export function tokenLogProb(logits: ArrayLike<number>, token: number): number {
  let m = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > m) m = logits[i];
  let s = 0;
  for (let i = 0; i < logits.length; i++) s += Math.exp(logits[i] - m);
  return logits[token] - m - Math.log(s);
}

/**
 * Reusable buffers of filteredProbs for a vocabulary of V: the generation loop samples B tokens per position, and fresh
 * (V) arrays for each would be 3 allocations per token. Grows when a larger V comes.
 */
export class SamplingScratch {
  z = new Float64Array(0);
  order = new Int32Array(0);
  p = new Float64Array(0);

  /** Buffers of at least V entries. */
  fit(V: number): this {
    if (this.z.length < V) {
      this.z = new Float64Array(V);
      this.order = new Int32Array(V);
      this.p = new Float64Array(V);
    }
    return this;
  }
}

/**
 * The filtered, renormalized distribution (V), zero outside the kept tokens. Throws a RangeError if a logit is NaN
 * (a broken model), since no token could then be chosen honestly. With `scratch`, the result is a view of its buffer,
 * valid until its next use; without, a fresh array.
 */
export function filteredProbs(logits: ArrayLike<number>, options: SamplingOptions, scratch?: SamplingScratch): Float64Array {
  const V = logits.length;
  const { temperature, topK, topP } = options;
  const work = (scratch ?? new SamplingScratch()).fit(V);
  const z = work.z;
  for (let i = 0; i < V; i++) {
    const v = logits[i];
    if (Number.isNaN(v)) throw new RangeError(`the model gave a NaN logit (token ${i} of ${V}); its weights are likely broken`);
    z[i] = v / temperature;
  }
  const needOrder = (topK > 0 && topK < V) || topP < 1;
  // Token ids kept: order[0, n) in rank order when needOrder; without filters all V tokens in id order (no order
  // array: the loops below run r = i).
  const order = work.order.subarray(0, V);
  let n = V;
  if (needOrder) {
    for (let i = 0; i < V; i++) order[i] = i;
    order.sort((a, b) => (z[b] - z[a]) || (a - b));
    if (topK > 0 && topK < V) n = topK;
  }
  const id = (r: number): number => (needOrder ? order[r] : r);
  // Softmax over the kept tokens (max subtracted; -Infinity logits get probability 0).
  let m = -Infinity;
  for (let r = 0; r < n; r++) if (z[id(r)] > m) m = z[id(r)];
  if (m === -Infinity || m === Infinity) throw new RangeError(`the model gave no finite logit to sample from (max ${m})`);
  const p = work.p.subarray(0, V);
  p.fill(0);
  let total = 0;
  for (let r = 0; r < n; r++) {
    const i = id(r);
    p[i] = Math.exp(z[i] - m);
    total += p[i];
  }
  if (topP < 1) {
    let cumulative = 0;
    let kept = 0;
    while (kept < n) {
      cumulative += p[id(kept)] / total;
      kept++;
      if (cumulative >= topP) break;
    }
    for (let r = kept; r < n; r++) p[id(r)] = 0;
    total = 0;
    for (let r = 0; r < kept; r++) total += p[id(r)];
  }
  for (let i = 0; i < V; i++) p[i] /= total;
  return p;
}

/** The first token (ascending id) whose cumulative probability exceeds u in [0, 1); the last kept one on rounding. */
export function sampleFromProbs(probs: ArrayLike<number>, u: number): number {
  if (!(u >= 0 && u < 1)) throw new RangeError(`sampleFromProbs: u must be in [0, 1), got ${u}`);
  let cumulative = 0;
  let last = -1;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] <= 0) continue;
    cumulative += probs[i];
    last = i;
    if (u < cumulative) return i;
  }
  if (last < 0) throw new RangeError('sampleFromProbs: no token has probability > 0');
  return last;
}

/** One token from logits (V) with the options, using the uniform u in [0, 1). */
export function sampleToken(logits: ArrayLike<number>, options: SamplingOptions, u: number): number {
  return sampleFromProbs(filteredProbs(logits, options), u);
}
