/**
 * CLIP R-precision and the CLIP score of generated images, from CLIP embeddings (pure arithmetic: no model here).
 *
 * R-precision (Xu et al., AttnGAN 2018; with CLIP as the retriever: Park et al., 2021): each image ranks a pool of
 * captions, its own and `pool - 1` others drawn from the evaluated caption set, by cosine similarity; R-precision at
 * R = 1 (one true caption) is the fraction of images whose own caption comes first. Here:
 *   - the caption set is the distinct caption texts of the samples (exact strings): a caption given twice, or an
 *     image's own caption carried by another sample, is never its distractor, so an image is not asked to tell its
 *     caption from itself;
 *   - each image's distractors are drawn without replacement, uniformly, from the other distinct captions, by the
 *     stream Philox(seed).fork(STREAM).fork(caption index).fork(sample): the pools depend on the seed and on which
 *     image it is, not on the order or the number of the other samples' pools; with fewer distinct captions than the
 *     pool, the pool is all of them (and says so: the chance level is 1 / pool);
 *   - similarities are float64 dot products of the L2-normalised float32 embeddings; a distractor that ties the own
 *     caption counts as ranked above it (two texts that tokenize alike cannot be told apart, so neither is credited).
 * Top-5 is the fraction whose own caption is among the first 5 (reported for pools of more than 5).
 *
 * CLIP score (Hessel et al., 2021, as torchmetrics computes it): 100 * max(cos(image, own caption), 0); reported as
 * the mean over images with its standard error (sample standard deviation / sqrt(N)).
 * Key: N = images, C = distinct captions, P = pool size, E = embedding size.
 */
import { Philox } from '../../tensor/rng';

/** The Philox stream of the distractor draws ('rprc' in ASCII), apart from every other use of the seed. */
export const R_PRECISION_STREAM = 0x72707263;

/** Distinct caption texts in order of first appearance, and each sample's index among them. */
export interface CaptionSet {
  /** (C) */
  readonly texts: readonly string[];
  /** (N) index into texts of each sample's caption */
  readonly own: Int32Array;
}

export function distinctCaptions(captions: readonly string[]): CaptionSet {
  const index = new Map<string, number>();
  const texts: string[] = [];
  const own = new Int32Array(captions.length);
  captions.forEach((caption, i) => {
    let k = index.get(caption);
    if (k === undefined) {
      k = texts.length;
      index.set(caption, k);
      texts.push(caption);
    }
    own[i] = k;
  });
  return { texts, own };
}

/** Which image a pool belongs to: its random stream is keyed by these, not by its position in a list. */
export interface SampleKey {
  readonly captionIndex: number;
  readonly sample: number;
}

/**
 * Each sample's pool of caption indices (N, P) row-major: column 0 its own caption, columns 1..P-1 distractors drawn
 * without replacement from the C - 1 other distinct captions (see the module comment). P = min(pool, C).
 */
export function drawPools(own: Int32Array, keys: readonly SampleKey[], captionCount: number, pool: number, seed: number | bigint): { pools: Int32Array; size: number } {
  if (keys.length !== own.length) throw new RangeError(`drawPools: ${keys.length} keys for ${own.length} samples`);
  if (!Number.isSafeInteger(pool) || pool < 2) throw new RangeError(`the R-precision pool must be an integer >= 2, got ${pool}`);
  if (captionCount < 2) throw new RangeError(`R-precision needs at least 2 distinct captions, got ${captionCount}`);
  const P = Math.min(pool, captionCount);
  const others = captionCount - 1;
  const k = P - 1;
  const pools = new Int32Array(own.length * P);
  const base = new Philox(seed).fork(R_PRECISION_STREAM);
  const uniforms = new Float64Array(k);
  for (let i = 0; i < own.length; i++) {
    const row = i * P;
    pools[row] = own[i];
    // Partial Fisher-Yates over the positions 0..others-1 of the other captions, sparse: only swapped positions are
    // stored, so a draw costs O(P) whatever C is. Position c stands for caption c, or c + 1 from the own caption on.
    const swapped = new Map<number, number>();
    if (k < others) base.fork(keys[i].captionIndex).fork(keys[i].sample).fillUniform(uniforms);
    for (let j = 0; j < k; j++) {
      // 53-bit uniforms: floor(u * m) is off uniform by < m / 2^53, far below anything measurable.
      const r = k < others ? j + Math.floor(uniforms[j] * (others - j)) : j;
      const atJ = swapped.get(j) ?? j;
      const atR = swapped.get(r) ?? r;
      swapped.set(r, atJ);
      pools[row + 1 + j] = atR < own[i] ? atR : atR + 1;
    }
  }
  return { pools, size: P };
}

export interface RPrecisionResult {
  readonly samples: number;
  /** Distinct captions the distractors came from. */
  readonly captions: number;
  /** The pool asked for, and the pool used: min(asked, distinct captions). */
  readonly poolRequested: number;
  readonly pool: number;
  /** 1 / pool: what a CLIP that ranks at random scores. */
  readonly chance: number;
  /** R-precision (R = 1): fraction of images whose own caption ranks first. */
  readonly top1: number;
  /** Its standard error, sqrt(p (1 - p) / N). */
  readonly top1StdErr: number;
  /** Fraction whose own caption is among the first 5; null for pools of 5 or fewer (it would be 1). */
  readonly top5: number | null;
  readonly seed: number;
  /** (N) each image's rank of its own caption, 1 = first. */
  readonly ranks: Int32Array;
}

/** float64 dot product of rows a[i] and b[j] of (., E) matrices. */
function dot(a: Float32Array, i: number, b: Float32Array, j: number, E: number): number {
  let s = 0;
  const ai = i * E;
  const bj = j * E;
  for (let e = 0; e < E; e++) s += a[ai + e] * b[bj + e];
  return s;
}

/**
 * R-precision of images (N, E) against caption embeddings (C, E), both L2-normalised, each image's own caption
 * `own[i]`, its distractors drawn by drawPools.
 */
export function rPrecision(
  images: Float32Array,
  texts: Float32Array,
  own: Int32Array,
  keys: readonly SampleKey[],
  options: { pool: number; seed: number },
): RPrecisionResult {
  const N = own.length;
  const E = N > 0 ? images.length / N : 0;
  const C = E > 0 ? texts.length / E : 0;
  if (!Number.isInteger(E) || E <= 0 || !Number.isInteger(C)) throw new RangeError(`rPrecision: ${images.length} image and ${texts.length} text values for ${N} images`);
  const { pools, size: P } = drawPools(own, keys, C, options.pool, options.seed);
  const ranks = new Int32Array(N);
  let top1 = 0;
  let top5 = 0;
  for (let i = 0; i < N; i++) {
    const row = i * P;
    const mine = dot(images, i, texts, own[i], E);
    let rank = 1;
    for (let j = 1; j < P; j++) if (dot(images, i, texts, pools[row + j], E) >= mine) rank++;
    ranks[i] = rank;
    if (rank === 1) top1++;
    if (rank <= 5) top5++;
  }
  const p = top1 / N;
  return {
    samples: N,
    captions: C,
    poolRequested: options.pool,
    pool: P,
    chance: 1 / P,
    top1: p,
    top1StdErr: Math.sqrt((p * (1 - p)) / N),
    top5: P > 5 ? top5 / N : null,
    seed: options.seed,
    ranks,
  };
}

export interface ClipScoreStats {
  readonly samples: number;
  /** Mean of 100 * max(cos, 0). */
  readonly mean: number;
  /** Sample standard deviation (N - 1); null for one image. */
  readonly std: number | null;
  /** std / sqrt(N); null for one image. */
  readonly stdErr: number | null;
  /** (N) each image's score. */
  readonly scores: Float64Array;
}

/** The CLIP score of each image (N, E) with its own caption texts[own[i]] (C, E), and their mean and standard error. */
export function clipScoreStats(images: Float32Array, texts: Float32Array, own: Int32Array): ClipScoreStats {
  const N = own.length;
  const E = N > 0 ? images.length / N : 0;
  if (N === 0 || !Number.isInteger(E)) throw new RangeError(`clipScoreStats: ${images.length} image values for ${N} images`);
  const scores = new Float64Array(N);
  let sum = 0;
  for (let i = 0; i < N; i++) {
    scores[i] = 100 * Math.max(dot(images, i, texts, own[i], E), 0);
    sum += scores[i];
  }
  const mean = sum / N;
  if (N < 2) return { samples: N, mean, std: null, stdErr: null, scores };
  let squares = 0;
  for (const s of scores) squares += (s - mean) ** 2;
  const std = Math.sqrt(squares / (N - 1));
  return { samples: N, mean, std, stdErr: std / Math.sqrt(N), scores };
}
