/**
 * The generation loop: text tokens (and optionally the first rows of an image) -> a full grid of image tokens, one token
 * at a time, with the prior's KV cache (prefill once, then one `step` per token) or, for checking, a full forward pass
 * per token (the same tokens: test/sample/sampler.test.ts).
 *
 * Randomness: every row b of a batch draws from its own generator rngs[b] (one f64 uniform per sampled token, in grid
 * order), so a row's tokens depend only on its generator and its inputs, never on the other rows of the batch.
 * Callers give each (caption, sample) its own stream (seeds.ts), which makes images independent of batch size and shard.
 *
 * Classifier-free guidance (condScale != 1): the batch is doubled, rows [0, B) conditioned on the caption and rows
 * [B, 2B) on the all-padding caption (the unconditional model the prior learns from captions dropped to padding), in
 * one forward; logits = uncond + s * (cond - uncond). Both halves are fed the same sampled token.
 *
 * The log-likelihood reported for a row is sum over the sampled (not prompted) tokens of log p(token | text, previous
 * tokens) under the conditional prior at temperature 1, without filters or guidance: how likely the prior finds the
 * image, comparable across sampling settings.
 * Key: B = batch rows, Tt = text_len, N = grid side^2 image tokens, r = prompted tokens, V = image vocabulary.
 */
import { Tensor, noGrad, tidy } from '../tensor';
import type { Philox } from '../tensor/rng';
import { SamplingOptions, filteredProbs, guideLogits, sampleFromProbs, tokenLogProb } from './filters';

/** What the generation loop needs of a prior (src/core/models/prior Prior implements it). */
export interface PriorLike {
  readonly textLen: number;
  readonly gridSide: number;
  readonly imageVocab: number;
  readonly textVocab: number;
  /** text (B, Tt) i32, image (B, n) i32 -> imageLogits (B, n, V): position t's logits are those of image token t. */
  forward(text: Tensor, image: Tensor): { imageLogits: Tensor };
  createCache(batch: number): unknown;
  /** Fills the cache with the text and the prompt; returns (B, V) logits of the next image token. */
  prefill(cache: unknown, text: Tensor, imagePrefix?: Tensor): Tensor;
  /** Feeds one image token per row; returns (B, V) logits of the next. */
  step(cache: unknown, imageTokens: Tensor): Tensor;
}

export interface SampleRequest {
  /** (B, Tt) i32 text tokens, padded with per-position pad tokens (textVocab + position). */
  readonly text: Int32Array;
  /** (B, r) i32 prompted image tokens (the top rows of the grid, raster order); r = 0 or absent: none. */
  readonly prefix?: Int32Array;
  /** One generator per row. */
  readonly rngs: readonly Philox[];
}

export interface SampleLoopOptions {
  readonly sampling: SamplingOptions;
  /** Classifier-free guidance scale; 1 = off (no unconditional rows are computed). */
  readonly condScale?: number;
  /** true (default): KV cache; false: a full forward pass for every token (slow; the reference for tests). */
  readonly useCache?: boolean;
  /** Called after each generated position with the number of positions done and to do (for progress). */
  readonly onToken?: (done: number, total: number) => void;
}

export interface SampleResult {
  /** (B, N) i32 image tokens, the prompt included. */
  readonly tokens: Int32Array;
  /** (B) sum of log p of the sampled tokens under the conditional prior (see the module comment). */
  readonly logLikelihood: Float64Array;
}

/** The all-padding caption of `textLen` positions: the unconditional input. */
export function unconditionalText(textLen: number, textVocab: number): Int32Array {
  return Int32Array.from({ length: textLen }, (_, p) => textVocab + p);
}

function disposeCache(cache: unknown): void {
  const c = cache as { dispose?: () => void } | null;
  if (c && typeof c.dispose === 'function') c.dispose();
}

/** Samples the image tokens of B rows; see the module comment. */
export function sampleImageTokens(prior: PriorLike, request: SampleRequest, options: SampleLoopOptions): SampleResult {
  const { textLen: Tt, gridSide, imageVocab: V, textVocab } = prior;
  const N = gridSide * gridSide;
  const B = request.rngs.length;
  if (B < 1) throw new RangeError('sampleImageTokens: no rows (rngs is empty)');
  if (request.text.length !== B * Tt) throw new RangeError(`sampleImageTokens: text has ${request.text.length} tokens, expected B * text_len = ${B} * ${Tt}`);
  const prefix = request.prefix ?? new Int32Array(0);
  const r = prefix.length / B;
  if (!Number.isInteger(r) || r < 0 || r >= N) throw new RangeError(`sampleImageTokens: the prompt has ${prefix.length} tokens for ${B} rows; it needs B * r tokens with 0 <= r < ${N}`);
  const scale = options.condScale ?? 1;
  if (!Number.isFinite(scale)) throw new RangeError(`sampleImageTokens: condScale must be finite, got ${scale}`);
  const guided = scale !== 1;
  const rows = guided ? 2 * B : B; // rows [B, 2B) are unconditional when guided
  const useCache = options.useCache ?? true;

  // Model inputs: (rows, Tt) text and (rows, r) prompt.
  const text = new Int32Array(rows * Tt);
  text.set(request.text);
  if (guided) {
    const uncond = unconditionalText(Tt, textVocab);
    for (let b = 0; b < B; b++) text.set(uncond, (B + b) * Tt);
  }
  const tokens = new Int32Array(B * N);
  for (let b = 0; b < B; b++) tokens.set(prefix.subarray(b * r, (b + 1) * r), b * N);
  const logLikelihood = new Float64Array(B);

  // After each model call, logits (rows, V) of image position t -> the B sampled tokens at t.
  const choose = (logits: Float32Array, t: number): Int32Array => {
    const chosen = new Int32Array(rows);
    for (let b = 0; b < B; b++) {
      const cond = logits.subarray(b * V, (b + 1) * V);
      const guidedLogits = guided ? guideLogits(cond, logits.subarray((B + b) * V, (B + b + 1) * V), scale) : cond;
      const u = request.rngs[b].uniform();
      const token = sampleFromProbs(filteredProbs(guidedLogits, options.sampling), u);
      logLikelihood[b] += tokenLogProb(cond, token);
      tokens[b * N + t] = token;
      chosen[b] = token;
      if (guided) chosen[B + b] = token;
    }
    return chosen;
  };

  const total = N - r;
  noGrad(() => {
    if (useCache) {
      const cache = prior.createCache(rows);
      try {
        let logits = tidy(() => {
          const textT = Tensor.from(text, [rows, Tt], 'i32');
          const prefixT = r > 0 ? Tensor.from(duplicateRows(prefix, B, r, guided), [rows, r], 'i32') : undefined;
          return prior.prefill(cache, textT, prefixT).toArray() as Float32Array;
        });
        for (let t = r; t < N; t++) {
          const chosen = choose(logits, t);
          options.onToken?.(t - r + 1, total);
          if (t === N - 1) break;
          logits = tidy(() => prior.step(cache, Tensor.from(chosen, [rows], 'i32')).toArray() as Float32Array);
        }
      } finally {
        disposeCache(cache);
      }
    } else {
      // The reference: the whole sequence so far through forward(); unknown future positions are 0 (the causal masks
      // keep them from mattering) and position t's logits are read.
      const image = new Int32Array(rows * N);
      for (let t = r; t < N; t++) {
        for (let b = 0; b < B; b++) {
          image.set(tokens.subarray(b * N, b * N + t), b * N);
          if (guided) image.set(tokens.subarray(b * N, b * N + t), (B + b) * N);
        }
        const logits = tidy(() => {
          const out = prior.forward(Tensor.from(text, [rows, Tt], 'i32'), Tensor.from(image, [rows, N], 'i32')).imageLogits;
          return sliceRows(out.toArray() as Float32Array, rows, N, V, t);
        });
        choose(logits, t);
        options.onToken?.(t - r + 1, total);
      }
    }
  });
  return { tokens, logLikelihood };
}

/** (B, r) -> (2B, r) with the rows repeated when guided, else the same array. */
function duplicateRows(prefix: Int32Array, B: number, r: number, guided: boolean): Int32Array {
  if (!guided) return prefix;
  const out = new Int32Array(2 * B * r);
  out.set(prefix);
  out.set(prefix, B * r);
  return out;
}

/** (rows, N, V) -> (rows, V) at position t. */
function sliceRows(all: Float32Array, rows: number, N: number, V: number, t: number): Float32Array {
  const out = new Float32Array(rows * V);
  for (let b = 0; b < rows; b++) out.set(all.subarray((b * N + t) * V, (b * N + t + 1) * V), b * V);
  return out;
}
