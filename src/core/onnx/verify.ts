/**
 * Checks an export against the engine on fresh random inputs: what `dalle export` reports after writing the files.
 * Key: N = images, C = channels, V = vocab_size, R = resolution, h = R / f.
 */
import { Tensor, noGrad, tidy } from '../tensor';
import { DvaeExportSource } from './dvae-export';
import { OnnxDvae } from './dvae-runner';
import { Prior, padText } from '../models/prior';
import { OnnxPrior } from './prior-runner';

export interface DvaeVerification {
  readonly images: number;
  readonly resolution: number;
  /** max |logits_onnx - logits_engine| over N random images. */
  readonly logitsMaxAbsDiff: number;
  /** Fraction of grid cells where the argmax codes agree. */
  readonly codesAgreement: number;
  /** max |pixels_onnx - pixels_engine| over N random code grids. */
  readonly pixelsMaxAbsDiff: number;
}

/** A small seeded generator (mulberry32): the checks' inputs depend only on `seed` (also clip-verify.ts). */
export function uniform(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** max |a_i - b_i|; arrays of different lengths are an error. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`dalle: ONNX check: ${a.length} values from onnxruntime, ${b.length} from the engine`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Runs `runner` and the engine on the same N random images (uniform pixels) and N random code grids. */
export async function verifyDvaeExport(src: DvaeExportSource, runner: OnnxDvae, options: { images?: number; seed?: number } = {}): Promise<DvaeVerification> {
  const N = options.images ?? 2;
  const rnd = uniform(options.seed ?? 0);
  const { model, resolution: R } = src;
  const C = model.arch.input_channels;
  const V = model.arch.vocab_size;
  const h = R / model.downsampleFactor;
  const pixels = Float32Array.from({ length: N * C * R * R }, rnd);
  const engine = noGrad(() => tidy(() => {
    const x = Tensor.from(pixels, [N, C, R, R]);
    return { logits: model.logits(x).toArray() as Float32Array, codes: model.encode(x).toArray() as Int32Array };
  }));
  const got = await runner.encodeWithLogits(pixels, N);
  let same = 0;
  for (let i = 0; i < got.codes.length; i++) if (got.codes[i] === engine.codes[i]) same++;
  const codes = Int32Array.from({ length: N * h * h }, () => Math.min(V - 1, Math.floor(rnd() * V)));
  const images = noGrad(() => tidy(() => model.decode(Tensor.from(codes, [N, h, h], 'i32')).toArray())) as Float32Array;
  const decoded = await runner.decode(codes, N);
  return {
    images: N,
    resolution: R,
    logitsMaxAbsDiff: maxAbsDiff(got.logits, engine.logits),
    codesAgreement: same / got.codes.length,
    pixelsMaxAbsDiff: maxAbsDiff(decoded, images),
  };
}

export interface PriorVerification {
  readonly rows: number;
  /** Image positions compared: the prefill's and every step's logits, to the end of the grid. */
  readonly positions: number;
  /** max |logits_onnx - logits_engine| over all of them. */
  readonly logitsMaxAbsDiff: number;
}

/**
 * Runs `runner` and the engine's KV-cached prior side by side on `rows` random captions (random lengths, padded) and
 * random image tokens: prefill, then a step per image position to the end of the grid, comparing every logit.
 */
export async function verifyPriorExport(model: Prior, runner: OnnxPrior, options: { rows?: number; seed?: number } = {}): Promise<PriorVerification> {
  const B = options.rows ?? 2;
  const rnd = uniform(options.seed ?? 0);
  const int = (n: number): number => Math.min(n - 1, Math.floor(rnd() * n));
  const { textLen: L, textVocab: Vt, imageVocab: Vi } = model;
  const N = model.gridSide * model.gridSide;
  const text = padText(Array.from({ length: B }, () => Array.from({ length: int(L + 1) }, () => int(Vt))), L, Vt);
  const engineCache = model.createCache(B);
  const onnxCache = runner.createCache(B);
  let worst = 0;
  try {
    const textT = Tensor.from(text, [B, L], 'i32');
    let want = tidy(() => model.prefill(engineCache, textT).toArray() as Float32Array);
    let got = await runner.prefill(onnxCache, textT);
    textT.dispose();
    for (let t = 0; ; t++) {
      worst = Math.max(worst, maxAbsDiff(got.toArray(), want));
      got.dispose();
      if (t === N - 1) break;
      const tokens = Tensor.from(Int32Array.from({ length: B }, () => int(Vi)), [B], 'i32');
      want = tidy(() => model.step(engineCache, tokens).toArray() as Float32Array);
      got = await runner.step(onnxCache, tokens);
      tokens.dispose();
    }
  } finally {
    engineCache.dispose();
    onnxCache.dispose();
  }
  return { rows: B, positions: N, logitsMaxAbsDiff: worst };
}
