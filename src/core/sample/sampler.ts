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
 *
 * One loop, two drivers: samplingLoop (a generator) does all of the above and yields each model call (prefill, step,
 * or a full forward); sampleImageTokens answers them synchronously with the engine's Prior, sampleImageTokensAsync
 * awaits an AsyncStepPrior (the engine's through asyncSteps, or onnxruntime's for `dalle generate --runtime onnx`).
 * Given the same logits, both give the same tokens.
 * Devices: the prior computes where its weights are (prior.device); sampling (filters, guidance, draws) runs on the
 * host. So each model call is a boundary: its tokens in (one copy per tensor), its (rows, V) logits out (one copy).
 * Key: B = batch rows, Tt = text_len, N = grid side^2 image tokens, r = prompted tokens, V = image vocabulary.
 */
import { Device, Tensor, noGrad, tidy } from '../tensor';
import type { Philox } from '../tensor/rng';
import { SamplingOptions, SamplingScratch, filteredProbs, guideLogits, sampleFromProbs, tokenLogProb } from './filters';

/** The sizes the generation loop reads off a prior. */
export interface PriorDims {
  readonly textLen: number;
  readonly gridSide: number;
  readonly imageVocab: number;
  readonly textVocab: number;
}

/** What the generation loop needs of a prior (src/core/models/prior Prior implements it). */
export interface PriorLike extends PriorDims {
  /** text (B, Tt) i32, image (B, n) i32 -> imageLogits (B, n, V): position t's logits are those of image token t. */
  forward(text: Tensor, image: Tensor): { imageLogits: Tensor };
  /** Where its weights are, and so its inputs must be (default: the CPU). */
  readonly device?: Device;
  createCache(batch: number): unknown;
  /** Fills the cache with the text and the prompt; returns (B, V) logits of the next image token. */
  prefill(cache: unknown, text: Tensor, imagePrefix?: Tensor): Tensor;
  /** Feeds one image token per row; returns (B, V) logits of the next. */
  step(cache: unknown, imageTokens: Tensor): Tensor;
}

/**
 * A prior as the asynchronous driver (sampleImageTokensAsync) needs it: plain arrays in, (rows, V) logits out, each
 * call a Promise, so a network that runs elsewhere (onnxruntime-node's sessions: src/core/onnx/generate-models.ts)
 * serves the same loop as the engine's Prior (asyncSteps wraps it in resolved values).
 */
export interface AsyncStepPrior extends PriorDims {
  readonly async: true;
  createCache(rows: number): unknown;
  /** text (rows, Tt) i32 and prompt (rows, r) i32 (r may be 0) -> logits (rows, V) of image token r. */
  prefill(cache: unknown, text: Int32Array, prefix: Int32Array, rows: number): Promise<Float32Array>;
  /** One image token per row (rows) i32 -> logits (rows, V) of the next. */
  step(cache: unknown, tokens: Int32Array): Promise<Float32Array>;
}

/** The engine's prior behind the asynchronous interface: the same calls as the synchronous driver makes, resolved. */
export function asyncSteps(prior: PriorLike): AsyncStepPrior {
  const { textLen, gridSide, imageVocab, textVocab } = prior;
  return {
    async: true,
    textLen,
    gridSide,
    imageVocab,
    textVocab,
    createCache: (rows) => prior.createCache(rows),
    prefill: (cache, text, prefix, rows) => Promise.resolve(enginePrefill(prior, cache, text, prefix, rows)),
    step: (cache, tokens) => Promise.resolve(engineStep(prior, cache, tokens)),
  };
}

function enginePrefill(prior: PriorLike, cache: unknown, text: Int32Array, prefix: Int32Array, rows: number): Float32Array {
  const r = prefix.length / rows;
  return noGrad(() => tidy(() => {
    const textT = Tensor.from(text, [rows, prior.textLen], 'i32', prior.device);
    const prefixT = r > 0 ? Tensor.from(prefix, [rows, r], 'i32', prior.device) : undefined;
    return prior.prefill(cache, textT, prefixT).toArray() as Float32Array;
  }));
}

function engineStep(prior: PriorLike, cache: unknown, tokens: Int32Array): Float32Array {
  return noGrad(() => tidy(() => prior.step(cache, Tensor.from(tokens, [tokens.length], 'i32', prior.device)).toArray() as Float32Array));
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

/**
 * One model call the loop asks for; a driver answers with logits (rows, V) of the position asked about.
 * prefill: fill a fresh cache with text (rows, Tt) and prompt (rows, r); step: feed one token per row;
 * forward: the whole sequence so far (the reference without a cache; position t's logits are wanted).
 */
type ModelCall =
  | { readonly kind: 'prefill'; readonly rows: number; readonly text: Int32Array; readonly prefix: Int32Array }
  | { readonly kind: 'step'; readonly tokens: Int32Array }
  | { readonly kind: 'forward'; readonly rows: number; readonly text: Int32Array; readonly image: Int32Array; readonly t: number };

/**
 * The sampling itself, for both drivers: checks, model inputs, guidance, filters, one RNG draw per row and position,
 * log-likelihoods and the KV-cache order of calls. It yields each model call and is resumed with its logits, so the
 * same code runs a synchronous network (the engine) and an asynchronous one (onnxruntime) without a copy.
 */
function* samplingLoop(dims: PriorDims, request: SampleRequest, options: SampleLoopOptions, useCache: boolean): Generator<ModelCall, SampleResult, Float32Array> {
  const { textLen: Tt, gridSide, imageVocab: V, textVocab } = dims;
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

  // After each model call, logits (rows, V) of image position t -> the B sampled tokens at t. The filters' and the
  // guidance's (V) buffers are reused from token to token (each token's are consumed before the next).
  const scratch = new SamplingScratch().fit(V);
  const guided64 = new Float64Array(guided ? V : 0);
  const choose = (logits: Float32Array, t: number): Int32Array => {
    if (logits.length !== rows * V) throw new RangeError(`sampleImageTokens: the prior returned ${logits.length} logits, expected rows * image_vocab = ${rows} * ${V}`);
    const chosen = new Int32Array(rows);
    for (let b = 0; b < B; b++) {
      const cond = logits.subarray(b * V, (b + 1) * V);
      const guidedLogits = guided ? guideLogits(cond, logits.subarray((B + b) * V, (B + b + 1) * V), scale, guided64) : cond;
      const u = request.rngs[b].uniform();
      const token = sampleFromProbs(filteredProbs(guidedLogits, options.sampling, scratch), u);
      logLikelihood[b] += tokenLogProb(cond, token);
      tokens[b * N + t] = token;
      chosen[b] = token;
      if (guided) chosen[B + b] = token;
    }
    return chosen;
  };

  const total = N - r;
  if (useCache) {
    let logits = yield { kind: 'prefill', rows, text, prefix: duplicateRows(prefix, B, r, guided) };
    for (let t = r; t < N; t++) {
      const chosen = choose(logits, t);
      options.onToken?.(t - r + 1, total);
      if (t === N - 1) break;
      logits = yield { kind: 'step', tokens: chosen };
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
      choose(yield { kind: 'forward', rows, text, image, t }, t);
      options.onToken?.(t - r + 1, total);
    }
  }
  return { tokens, logLikelihood };
}

/** Samples the image tokens of B rows with the engine's prior, synchronously; see the module comment. */
export function sampleImageTokens(prior: PriorLike, request: SampleRequest, options: SampleLoopOptions): SampleResult {
  const useCache = options.useCache ?? true;
  const loop = samplingLoop(prior, request, options, useCache);
  let cache: unknown;
  try {
    for (let next = loop.next(); ; ) {
      if (next.done) return next.value;
      const call = next.value;
      let logits: Float32Array;
      if (call.kind === 'prefill') {
        cache = prior.createCache(call.rows);
        logits = enginePrefill(prior, cache, call.text, call.prefix, call.rows);
      } else if (call.kind === 'step') {
        logits = engineStep(prior, cache, call.tokens);
      } else {
        const { rows, text, image, t } = call;
        const N = prior.gridSide * prior.gridSide;
        logits = noGrad(() => tidy(() => {
          const out = prior.forward(Tensor.from(text, [rows, prior.textLen], 'i32', prior.device), Tensor.from(image, [rows, N], 'i32', prior.device)).imageLogits;
          return sliceRows(out.toArray() as Float32Array, rows, N, prior.imageVocab, t);
        }));
      }
      next = loop.next(logits);
    }
  } finally {
    disposeCache(cache);
  }
}

/**
 * The same loop (same checks, draws and tokens as sampleImageTokens) over an asynchronous prior: the engine's through
 * asyncSteps, or an ONNX one. Always with the KV cache (the full-forward reference is the synchronous driver's).
 */
export async function sampleImageTokensAsync(prior: AsyncStepPrior, request: SampleRequest, options: Omit<SampleLoopOptions, 'useCache'>): Promise<SampleResult> {
  const loop = samplingLoop(prior, request, options, true);
  let cache: unknown;
  try {
    for (let next = loop.next(); ; ) {
      if (next.done) return next.value;
      const call = next.value;
      let logits: Float32Array;
      if (call.kind === 'prefill') {
        cache = prior.createCache(call.rows);
        logits = await prior.prefill(cache, call.text, call.prefix, call.rows);
      } else if (call.kind === 'step') {
        logits = await prior.step(cache, call.tokens);
      } else {
        throw new Error('sampleImageTokensAsync: full forwards are not supported (use the KV cache)');
      }
      next = loop.next(logits);
    }
  } finally {
    disposeCache(cache);
  }
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
