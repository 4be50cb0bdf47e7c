// The dVAE's training objective (Ramesh et al. 2021, Appendix A.3) and the pieces it is made of.
// - Pixels x in [0, 1] are mapped to x' = (1 - 2 eps) x + eps in (eps, 1 - eps), eps = 0.1, so the logit-Laplace
//   density stays finite; the decoder's mu maps back with clamp((sigmoid(mu) - eps) / (1 - 2 eps), 0, 1).
// - Likelihood: logit-Laplace, p(x | mu, b) = 1 / (2 b x (1 - x)) exp(-|logit(x) - mu| / b), the decoder giving mu and
//   ln b per channel; its negative log is ln 2 + ln b + ln x + ln(1 - x) + |logit(x) - mu| / b.
// - Or (train.recon_loss: gaussian; not the paper's) a Gaussian of fixed sigma around sigmoid(mu) in the same mapped
//   space: (sigmoid(mu) - x)^2 / (2 sigma^2) + ln(sigma sqrt(2 pi)), the ln b channels unused. Its gradient is the squared
//   pixel error, what PSNR scores, where logit-Laplace weighs errors in logit space, stretched near 0 and 1 (the white
//   of most emoji). Measured on the emoji data: 27.0 against 23.1 dB at the 32x32 grid (README, "Training the dVAE").
// - Posterior sample: gumbel-softmax relaxation softmax((logits + g) / tau) over the codebook, g ~ Gumbel(0, 1).
// - Prior: uniform over V codes at every cell, so KL(q || p) = sum_v q_v ln q_v + ln V per cell, q = softmax(logits).
// - Codebook usage (not in the paper; train.usage_weight, 0 = off): U = ln V - H(q_mean) per cell, q_mean the posterior
//   averaged over every cell of the batch. The per-cell KL pushes each q towards uniform (blurry codes); U instead asks the
//   batch as a whole to spread over the codebook while each cell stays sharp (wav2vec 2.0's diversity loss). Short runs
//   on small data otherwise settle on a few dozen codes of 1024.
// - Loss = recon + beta * kl (+ usage_weight * U * h w), summed over an image (its pixels and channels / its grid cells) and averaged over
//   the batch: the negative ELBO in nats per image when beta = 1, for the mapped pixels x' (the map's constant Jacobian
//   is left out: -ln p(x) = recon - C H W ln(1 - 2 eps)).
// abs is not an engine op: |z| = relu(z) + relu(-z) (gradient sign(z), 0 at 0), and clamp(v, 0, 1) = relu(v) - relu(v - 1).
// Key: B = batch, C = image channels, V = vocab_size, H, W = image side, h, w = grid side.
import { add, addScalar, affine, argmax, codebookStats, relaxedCodes, exp, log, logSoftmax, mean, mul, neg, permute, relu, sigmoid, slice, softmax, sub, sum } from '../../ops';
import { Philox, Tensor, noGrad, shapeStr } from '../../tensor';
import type { Dvae } from './dvae';

/** The paper's eps: pixels live in (eps, 1 - eps) for the logit-Laplace likelihood. */
export const LOGIT_LAPLACE_EPS = 0.1;

/** x in [0, 1] -> (1 - 2 eps) x + eps (the released map_pixels). */
export function mapPixels(x: Tensor, eps = LOGIT_LAPLACE_EPS): Tensor {
  return affine(x, 1 - 2 * eps, eps);
}

/** y -> clamp((y - eps) / (1 - 2 eps), 0, 1) (the released unmap_pixels). */
export function unmapPixels(y: Tensor, eps = LOGIT_LAPLACE_EPS): Tensor {
  return clamp01(affine(y, 1 / (1 - 2 * eps), -eps / (1 - 2 * eps)));
}

/** clamp(v, 0, 1) from two relus. */
export function clamp01(v: Tensor): Tensor {
  return sub(relu(v), relu(addScalar(v, -1)));
}

/** |z| from two relus (the engine has no abs op). */
export function abs(z: Tensor): Tensor {
  return add(relu(z), relu(neg(z)));
}

/**
 * Negative log-likelihood of mapped pixels under the logit-Laplace distribution, per element.
 * xMapped (B, C, H, W) in (0, 1), stats (B, 2C, H, W) = [mu, ln b] -> (B, C, H, W).
 */
export function logitLaplaceNll(xMapped: Tensor, stats: Tensor): Tensor {
  const [B, C, H, W] = xMapped.shape;
  if (stats.rank !== 4 || stats.shape[0] !== B || stats.shape[1] !== 2 * C || stats.shape[2] !== H || stats.shape[3] !== W) {
    throw new Error(`dalle: logit-Laplace stats must be (${B}, ${2 * C}, ${H}, ${W}) for pixels ${shapeStr(xMapped.shape)}, got ${shapeStr(stats.shape)}`);
  }
  const mu = slice(stats, [[0, B], [0, C], [0, H], [0, W]]); // (B, C, H, W)
  const lnB = slice(stats, [[0, B], [C, 2 * C], [0, H], [0, W]]); // (B, C, H, W)
  const lnX = log(xMapped); // (B, C, H, W)
  const ln1mX = log(affine(xMapped, -1, 1));
  const logit = sub(lnX, ln1mX);
  const dev = mul(abs(sub(logit, mu)), exp(neg(lnB))); // |logit(x) - mu| / b
  return add(addScalar(add(lnB, add(lnX, ln1mX)), Math.LN2), dev);
}

/**
 * Negative log-likelihood of mapped pixels under a Gaussian of standard deviation sigma around sigmoid(mu), per element.
 * xMapped (B, C, H, W), stats (B, 2C, H, W) = [mu, ln b] (ln b unused) -> (B, C, H, W).
 */
export function gaussianNll(xMapped: Tensor, stats: Tensor, sigma: number): Tensor {
  const [B, C, H, W] = xMapped.shape;
  if (stats.rank !== 4 || stats.shape[0] !== B || stats.shape[1] !== 2 * C || stats.shape[2] !== H || stats.shape[3] !== W) {
    throw new Error(`dalle: decoder stats must be (${B}, ${2 * C}, ${H}, ${W}) for pixels ${shapeStr(xMapped.shape)}, got ${shapeStr(stats.shape)}`);
  }
  if (!(sigma > 0)) throw new Error(`dalle: the Gaussian reconstruction sigma must be > 0, got ${sigma}`);
  const centre = sigmoid(slice(stats, [[0, B], [0, C], [0, H], [0, W]])); // (B, C, H, W)
  const d = sub(centre, xMapped);
  return addScalar(mul(mul(d, d), 1 / (2 * sigma * sigma)), Math.log(sigma * Math.sqrt(2 * Math.PI)));
}

/** The reconstruction likelihoods train.recon_loss chooses from. */
export type ReconLoss = 'logit_laplace' | 'gaussian';

/** Logits (B, V, h, w) -> (B, h, w, V), codebook last (softmax's axis). */
function codebookLast(logits: Tensor): Tensor {
  return permute(logits, [0, 2, 3, 1]);
}

/** Relaxed one-hot codes softmax((logits + g) / tau) over the codebook: (B, V, h, w) -> (B, V, h, w). */
export function gumbelSoftmax(logits: Tensor, tau: number, rng: Philox): Tensor {
  return gumbelSoftmaxParts(logits, tau, rng);
}

/**
 * gumbelSoftmax, the noise drawn as randGumbel of the codebook-last shape (B, h, w, V) would draw it (the fused
 * relaxedCodes op draws it inside its kernel where the backend has one). With `part`, this batch is part `index` of
 * `count` equal parts of a global batch (a data-parallel rank's): the noise is that part of the global batch's draw
 * (one word per value, so the parts before it are skipped and the parts after it passed over), so the ranks together
 * use the noise one process on the global batch would.
 */
function gumbelSoftmaxParts(logits: Tensor, tau: number, rng: Philox, part?: BatchPart): Tensor {
  if (!(tau > 0)) throw new Error(`dalle: gumbel-softmax temperature must be > 0, got ${tau}`);
  const words = logits.size; // one word per value
  if (part) rng.reserve(part.index * words);
  const z = relaxedCodes(logits, tau, rng); // (B, V, h, w)
  if (part) rng.reserve((part.count - 1 - part.index) * words);
  return z;
}

/**
 * one_hot(argmax z) - z as a constant (no gradient): z + it is the one-hot in value and z in gradient. (B, V, h, w)
 * Computed on the host: on a GPU, z is copied out and the shift copied back (one transfer each way per step, only
 * with train.straight_through).
 */
export function straightThroughShift(z: Tensor): Tensor {
  const [B, V, h, w] = z.shape;
  const hw = h * w;
  const data = z.toArray() as Float32Array;
  const shift = new Float32Array(data.length);
  for (let b = 0; b < B; b++) {
    const base = b * V * hw;
    for (let p = 0; p < hw; p++) {
      let best = 0;
      for (let v = 1; v < V; v++) if (data[base + v * hw + p] > data[base + best * hw + p]) best = v;
      for (let v = 0; v < V; v++) shift[base + v * hw + p] = (v === best ? 1 : 0) - data[base + v * hw + p];
    }
  }
  return Tensor.from(shift, z.shape, 'f32', z.device);
}

/** KL(softmax(logits) || uniform over V) per cell: logits (B, V, h, w) -> (B, h, w), in nats. */
export function klToUniform(logits: Tensor): Tensor {
  const V = logits.shape[1];
  const lq = logSoftmax(codebookLast(logits)); // (B, h, w, V)
  return addScalar(sum(mul(exp(lq), lq), -1), Math.log(V)); // (B, h, w)
}

/** The most likely code at each cell (no noise; ties go to the lowest code): (B, V, h, w) -> i32 (B, h, w). */
export function argmaxCodes(logits: Tensor): Tensor {
  if (logits.rank !== 4) throw new Error(`dalle: codebook logits must be (B, V, h, w), got ${shapeStr(logits.shape)}`);
  return argmax(logits, 1);
}

/** ln V - H(mean over cells of softmax(logits)): 0 when the batch uses every code equally. (B, V, h, w) -> scalar. */
export function codebookUsageGap(logits: Tensor): Tensor {
  const V = logits.shape[1];
  const q = softmax(codebookLast(logits)); // (B, h, w, V)
  const qMean = mean(q, [0, 1, 2]); // (V)
  return addScalar(sum(mul(qMean, log(addScalar(qMean, 1e-12)))), Math.log(V));
}

export interface DvaeLossOptions {
  /** Gumbel-softmax temperature (paper: cosine from 1 to 1/16 over 150k updates). */
  tau: number;
  /** KL weight (paper: linear from 0 to 6.6 over 5k updates). */
  beta: number;
  /** Source of the gumbel noise (advance it from the run's generator so a resumed run draws the same noise). */
  rng: Philox;
  /** Weight of the codebook-usage term per cell (0 = the paper's objective). */
  usageWeight?: number;
  /**
   * Straight-through: the decoder sees the one-hot code of the sample's argmax (what it sees at use), while the
   * gradient is that of the relaxed sample (train.straight_through; the paper uses the relaxed sample itself).
   */
  straightThrough?: boolean;
  /**
   * Decoder warm-up (train.decoder_warmup_steps): the encoder's argmax codes, without noise and without gradient, go
   * to the decoder; only the reconstruction is trained, so every code of an initialised book learns its image first.
   */
  encoderFrozen?: boolean;
  /**
   * Data parallelism: x is part `index` of `count` equal parts of the global batch. The gumbel noise is this part's
   * share of the global batch's draw, and the usage term's batch-mean posterior is the global batch's (via
   * `meanOverParts`, an all-reduce), so the ranks' averaged gradient is that of one process on the global batch.
   */
  part?: BatchPart;
  /** Reconstruction likelihood (train.recon_loss): the paper's logit-Laplace (default), or a fixed-sigma Gaussian. */
  reconLoss?: ReconLoss;
  /** The Gaussian's sigma in the mapped pixel space (train.recon_sigma); required with reconLoss 'gaussian'. */
  reconSigma?: number;
}

/** This process's part of a data-parallel global batch (DvaeLossOptions.part). */
export interface BatchPart {
  readonly index: number;
  readonly count: number;
  /** The mean over the parts of a per-part statistic (distributed/mean-over-ranks.ts). */
  readonly meanOverParts: (x: Tensor) => Tensor;
}

export interface DvaeLossResult {
  /** recon + beta * kl: the quantity to minimize (scalar). */
  loss: Tensor;
  /** NLL of the mapped pixels (logit-Laplace, or the Gaussian of opts.reconLoss), nats per image (scalar). */
  recon: Tensor;
  /** KL(q || uniform), nats per image (summed over the grid) (scalar). */
  kl: Tensor;
  /** recon / (C H W): nats per pixel channel, comparable across resolutions (scalar). */
  reconPerDim: Tensor;
  /** kl / (h w): nats per grid cell, at most ln V (scalar). */
  klPerCell: Tensor;
  /** ln V - H(batch-mean posterior), nats (scalar); 0 = every code equally used. */
  usageGap: Tensor;
}

/** The training objective on images x (B, C, H, W) in [0, 1]. Call backward(result.loss) for the gradients. */
export function dvaeLoss(model: Dvae, x: Tensor, opts: DvaeLossOptions): DvaeLossResult {
  const { beta, tau, rng } = opts;
  if (!(beta >= 0)) throw new Error(`dalle: KL weight beta must be >= 0, got ${beta}`);
  const [B, C, H, W] = x.shape;
  const xm = mapPixels(x, model.eps); // (B, C, H, W)
  const logits = opts.encoderFrozen ? noGrad(() => model.encoder.forward(xm)) : model.encoder.forward(xm); // (B, V, h, w)
  const [, V, h, w] = logits.shape;
  // The sample (relaxedCodes) and the KL and usage terms (codebookStats) read the (B, V, h, w) logits in place.
  let stats: Tensor; // (B, 2C, H, W)
  if (opts.encoderFrozen) {
    stats = model.decoder.forwardCodes(argmaxCodes(logits));
  } else {
    let z = gumbelSoftmaxParts(logits, tau, rng, opts.part); // (B, V, h, w)
    if (opts.straightThrough) z = add(z, straightThroughShift(z));
    stats = model.decoder.forward(z);
  }
  if (opts.reconLoss === 'gaussian' && opts.reconSigma === undefined) throw new Error('dalle: reconLoss gaussian needs reconSigma (train.recon_sigma)');
  const nll = opts.reconLoss === 'gaussian' ? gaussianNll(xm, stats, opts.reconSigma!) : logitLaplaceNll(xm, stats);
  const recon = mul(sum(nll), 1 / B);
  // q = softmax(logits) per cell: its per-code sums and the sum of q log q, in one pass over the NCHW logits
  const codeStats = codebookStats(logits); // (V + 1)
  const qLogQ = sum(slice(codeStats, [[V, V + 1]])); // sum over cells of sum_v q_v log q_v
  const kl = mul(addScalar(qLogQ, B * h * w * Math.log(V)), 1 / B); // sum over cells of KL(q || uniform)
  const usageWeight = opts.usageWeight ?? 0;
  if (!(usageWeight >= 0)) throw new Error(`dalle: codebook usage weight must be >= 0, got ${usageWeight}`);
  const qMeanHere = mul(slice(codeStats, [[0, V]]), 1 / (B * h * w)); // (V): mean of q over this batch's cells
  const qMean = opts.part ? opts.part.meanOverParts(qMeanHere) : qMeanHere; // (V), of the global batch
  const usageGap = addScalar(sum(mul(qMean, log(addScalar(qMean, 1e-12)))), Math.log(V)); // as codebookUsageGap
  let loss = add(recon, mul(kl, beta));
  if (usageWeight > 0) loss = add(loss, mul(usageGap, usageWeight * h * w));
  return { loss, recon, kl, reconPerDim: mul(recon, 1 / (C * H * W)), klPerCell: mul(kl, 1 / (h * w)), usageGap };
}
