/**
 * What a trained CLIP measures: the CLIP score of image + caption pairs, text <-> image retrieval within pools of
 * pairs, and its image tower as the feature extractor of FID / KID (the default when no ONNX model is given).
 *
 * CLIP score (Hessel et al., 2021, as torchmetrics computes it): 100 * max(cos(image, caption), 0), averaged over the
 * pairs. Retrieval: the pairs are cut into consecutive pools of `pool` (a last, smaller pool is left out); within a
 * pool each caption ranks the pool's images by cosine similarity (text -> image), and each image the captions (image ->
 * text); top-1 accuracy is the fraction whose own partner comes first. Key: N = pairs, E = embedding size.
 */
import { openDataSource } from '../../data';
import { DataError, SkipError } from '../../data/errors';
import { DEFAULT_MAX_INPUT_PIXELS, decodeImage, rgbToChw } from '../../data/image';
import { SkipReport, SkipSummary } from '../../data/skips';
import { EventSink, silentSink } from '../../events';
import type { FeatureExtractor } from '../../eval/features';
import type { ClipScorer } from './scorer';
import { embedImages } from './embed';
import type { LoadedClip } from './load';
import { poolRetrieval } from './retrieval';

/** The CLIP image tower as a feature extractor: L2-normalised image embeddings (E values per image). */
export class ClipImageFeatures implements FeatureExtractor {
  readonly name: string;
  readonly inputSize: number;
  readonly maxBatch = 256;

  constructor(private readonly clip: LoadedClip) {
    this.name = `dalle-clip:${clip.runDir} (step ${clip.step})`;
    this.inputSize = clip.model.arch.resolution;
  }

  outputName(): string {
    return 'image_embedding';
  }

  async features(pixels: Float32Array, count: number): Promise<{ data: Float32Array; dim: number }> {
    return { data: embedImages(this.clip.model, pixels, count), dim: this.clip.model.arch.embed };
  }

  async dispose(): Promise<void> {
    this.clip.model.dispose();
  }
}

export interface ClipScoreResult {
  readonly pairs: number;
  /** Mean of 100 * max(cos, 0). */
  readonly clipScore: number;
  readonly pool: number;
  readonly pools: number;
  /** Top-1 accuracies within pools; NaN when there are fewer pairs than one pool. */
  readonly textToImageTop1: number;
  readonly imageToTextTop1: number;
  readonly skipped: SkipSummary;
}

/** Reads the (first caption, image) pairs of a data set and measures them under `scorer` (scorer.ts). */
export async function clipScore(
  scorer: ClipScorer,
  dataPath: string,
  options: { limit?: number; pool?: number; batchSize?: number; events?: EventSink } = {},
): Promise<ClipScoreResult> {
  const events = options.events ?? silentSink;
  const source = await openDataSource(dataPath, { requireCaptions: true });
  const skipped = new SkipReport();
  skipped.merge(source.skipped);
  const records = options.limit ? source.records.slice(0, options.limit) : source.records;
  const R = scorer.imageSize;
  const batchSize = options.batchSize ?? 64;
  const captions: string[] = [];
  const images: Float32Array[] = []; // one (E) embedding per readable image
  for (let start = 0; start < records.length; start += batchSize) {
    const batch = records.slice(start, start + batchSize);
    const decoded = await Promise.all(
      batch.map(async (r) => {
        try {
          return await decodeImage(await r.load(), { resolution: R, maxInputPixels: DEFAULT_MAX_INPUT_PIXELS });
        } catch (error) {
          if (!(error instanceof SkipError)) throw error;
          skipped.add(error.reason, r.id, error.detail);
          return undefined;
        }
      }),
    );
    const good = batch.map((r, i) => [r, decoded[i]] as const).filter(([, d]) => d !== undefined);
    if (good.length > 0) {
      const pixels = new Float32Array(good.length * 3 * R * R);
      good.forEach(([, rgb], n) => rgbToChw(rgb!, R, pixels, n * 3 * R * R));
      images.push(...(await scorer.embedImages({ pixels, shape: [good.length, 3, R, R] })));
      for (const [r] of good) captions.push(r.captions[0]);
    }
    events.emit({ type: 'progress', task: 'clip-score', step: Math.min(start + batchSize, records.length), total: records.length, unit: 'pair' });
  }
  events.emit({ type: 'done', task: 'clip-score' });
  const N = captions.length;
  if (N === 0) throw new DataError(`${dataPath}: no readable image with a caption (${skipped.total} skipped)`, '`dalle dataset inspect PATH` lists what is skipped and why');
  const txt = await scorer.embedTexts(captions);
  const E = txt[0].length;
  const flat = (rows: Float32Array[]): Float32Array => {
    const out = new Float32Array(N * E);
    rows.forEach((row, i) => out.set(row, i * E));
    return out;
  };
  const pool = Math.max(2, options.pool ?? 100);
  const r = poolRetrieval(flat(images), flat(txt), N, pool);
  return {
    pairs: N,
    clipScore: r.clipScore,
    pool,
    pools: r.pools,
    textToImageTop1: r.textToImageTop1,
    imageToTextTop1: r.imageToTextTop1,
    skipped: skipped.toJSON(),
  };
}
