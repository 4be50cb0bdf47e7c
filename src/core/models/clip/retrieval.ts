/**
 * Retrieval with a CLIP: text -> image and image -> text top-1 within consecutive pools of pairs, and the mean CLIP
 * score; what training validates on (train/clip-trainer.ts) and `dalle evaluate clip-score` reports. Key: N = pairs,
 * E = embedding size, R = image side.
 */
import { openDataSource } from '../../data';
import { SkipError } from '../../data/errors';
import { DEFAULT_MAX_INPUT_PIXELS, decodeImage, rgbToChw } from '../../data/image';
import type { TextTokenizer } from '../../text';
import { embedImages, embedTexts } from './embed';
import type { Clip } from './model';

/** Text -> image and image -> text top-1 within consecutive pools, and the mean CLIP score. */
export interface ClipRetrieval {
  readonly pairs: number;
  readonly pools: number;
  readonly textToImageTop1: number;
  readonly imageToTextTop1: number;
  readonly clipScore: number;
}

/** Image + caption pairs decoded once: pixels (N, 3, R, R) in [0, 1] and each image's first caption. */
export interface ClipPairs {
  readonly pixels: Float32Array;
  readonly captions: readonly string[];
}

/** Reads the (image, first caption) pairs of a data set at side R; unreadable images are passed over. */
export async function readPairs(dataPath: string, R: number): Promise<ClipPairs> {
  const source = await openDataSource(dataPath, { requireCaptions: true });
  const decoded = await Promise.all(
    source.records.map(async (r) => {
      try {
        return await decodeImage(await r.load(), { resolution: R, maxInputPixels: DEFAULT_MAX_INPUT_PIXELS });
      } catch (error) {
        if (!(error instanceof SkipError)) throw error;
        return undefined;
      }
    }),
  );
  const good = source.records.map((r, i) => [r, decoded[i]] as const).filter(([, d]) => d !== undefined);
  const pixels = new Float32Array(good.length * 3 * R * R);
  good.forEach(([, rgb], n) => rgbToChw(rgb!, R, pixels, n * 3 * R * R));
  return { pixels, captions: good.map(([r]) => r.captions[0]) };
}

/**
 * Top-1 retrieval of L2-normalised embeddings img (N, E) and txt (N, E) within consecutive pools of `pool` pairs (a
 * last, smaller pool is left out), and the mean CLIP score 100 * max(cos, 0) over all N pairs.
 */
export function poolRetrieval(img: Float32Array, txt: Float32Array, N: number, pool: number): ClipRetrieval {
  const E = img.length / N;
  const cos = (i: number, j: number): number => {
    let s = 0;
    for (let e = 0; e < E; e++) s += img[i * E + e] * txt[j * E + e];
    return s;
  };
  let score = 0;
  for (let i = 0; i < N; i++) score += 100 * Math.max(cos(i, i), 0);
  const pools = Math.floor(N / pool);
  let t2i = 0;
  let i2t = 0;
  for (let p = 0; p < pools; p++) {
    const base = p * pool;
    for (let a = 0; a < pool; a++) {
      let bestImage = 0;
      let bestText = 0;
      for (let b = 1; b < pool; b++) {
        if (cos(base + b, base + a) > cos(base + bestImage, base + a)) bestImage = b; // caption a ranks images
        if (cos(base + a, base + b) > cos(base + a, base + bestText)) bestText = b; // image a ranks captions
      }
      if (bestImage === a) t2i++;
      if (bestText === a) i2t++;
    }
  }
  return { pairs: N, pools, textToImageTop1: pools ? t2i / (pools * pool) : NaN, imageToTextTop1: pools ? i2t / (pools * pool) : NaN, clipScore: N ? score / N : NaN };
}

/** Retrieval of decoded pairs under a model (no gradients; images in batches of 64). */
export function measureRetrieval(clip: { readonly model: Clip; readonly tokenizer: TextTokenizer }, pairs: ClipPairs, pool: number): ClipRetrieval {
  const N = pairs.captions.length;
  const R = clip.model.arch.resolution;
  const img = new Float32Array(N * clip.model.arch.embed);
  for (let start = 0; start < N; start += 64) {
    const n = Math.min(64, N - start);
    img.set(embedImages(clip.model, pairs.pixels.subarray(start * 3 * R * R, (start + n) * 3 * R * R), n), start * clip.model.arch.embed);
  }
  return poolRetrieval(img, embedTexts(clip, pairs.captions), N, pool);
}

