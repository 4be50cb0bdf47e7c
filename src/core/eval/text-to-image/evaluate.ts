/**
 * The text-to-image report of `dalle evaluate text-to-image`: for generated samples and their captions (a `dalle
 * generate` folder, or captions generated from here first), under one CLIP,
 *   - CLIP R-precision: each image's own caption retrieved among `pool` captions (r-precision.ts);
 *   - the mean CLIP score with its standard error;
 *   - the FID blur curve (the DALL-E paper's Figure 9) of the samples against real images, both blurred alike at
 *     each radius (blur.ts, fid.ts), with features from the same CLIP's image tower or a given ONNX model; with a
 *     second real set (`reference`, e.g. training images), the same curve of real images against real images, and
 *     the ratio samples / reference at each radius: how far the samples are from what real images score.
 * Sample images are read as `dalle evaluate clip-score` reads images (decodeImage at the CLIP's side); the FID's as
 * `dalle evaluate fid` reads them (extractFromRecords / extractFromDataset).
 * Key: N = samples, C = distinct captions, E = CLIP embedding size.
 */
import * as path from 'node:path';
import { DataError, SkipError } from '../../data/errors';
import { DEFAULT_MAX_INPUT_PIXELS, decodeImage, rgbToChw } from '../../data/image';
import { fileRecord } from '../../data/sources/files';
import { detectSourceKind } from '../../data/sources/open';
import { EventSink, silentSink } from '../../events';
import { claimOutputFolder } from '../../io/output-folder';
import type { ClipScorer } from '../../models/clip/scorer';
import { GenerateJob, GenerateSummary, runGeneration } from '../../sample/generate';
import { GENERATE_OUTPUT_RULE } from '../../sample/output';
import { blurSigma } from '../blur';
import { ExtractedSet, FeatureExtractor, extractFromDataset, extractFromRecords } from '../features';
import { featureStats, frechetDistance } from '../fid';
import { SIGMA_RULE, SetSummary, preflightReport } from '../report';
import { clipScoreStats, distinctCaptions, rPrecision } from './r-precision';
import { SampleFolder, readSampleFolder } from './samples';

export const DEFAULT_BLUR_RADII: readonly number[] = [0, 1, 2, 4, 8];
export const DEFAULT_POOL = 100;

export interface TextToImageOptions {
  /** The samples folder: read as it is, or written first by `generate`. */
  readonly samples: string;
  /** When given, `dalle generate`'s job runs first into `samples` (a rerun reuses the images already there). */
  readonly generate?: Omit<GenerateJob, 'out' | 'events'>;
  /** Take only the images a `dalle rerank` kept. */
  readonly keptOnly?: boolean;
  /** The CLIP of R-precision and the CLIP score (scorer.ts: a dalle CLIP run or an ONNX CLIP folder). */
  readonly scorer: ClipScorer;
  /** The FID's feature model; default: the scorer's image tower. */
  readonly extractor?: FeatureExtractor;
  /** Real images the FID compares with (a folder, manifest or shards). */
  readonly real: string;
  /** Other real images measured against `real` the same way, as a reference curve. */
  readonly reference?: string;
  readonly pool?: number;
  readonly radii?: readonly number[];
  /** The distractor draws' seed. */
  readonly seed?: number;
  /** Images per feature model call. */
  readonly batchSize?: number;
  readonly events?: EventSink;
}

export interface FidCurvePoint {
  readonly radius: number;
  readonly sigma: number;
  /** FID of the samples against the real images. */
  readonly fid: number;
  readonly meanTerm: number;
  readonly covTerm: number;
  /** FID of the reference images against the real images; null without a reference. */
  readonly reference: number | null;
  /** fid / reference; null without a reference. */
  readonly ratio: number | null;
}

export interface TextToImageReport {
  readonly kind: 'text-to-image';
  readonly title: string;
  readonly samples: {
    readonly path: string;
    readonly images: number;
    readonly captions: number;
    readonly keptOnly: boolean;
    /** Lines of results.jsonl passed over (not JSON: torn writes). */
    readonly tornLines: number;
    /** generation.json of the folder (the settings the images were made with), or null. */
    readonly generation: Readonly<Record<string, unknown>> | null;
    /** When this report generated them: what the generation did. */
    readonly generated?: { readonly images: number; readonly reused: number; readonly seconds: number };
  };
  readonly clip: { readonly name: string; readonly imageSize: number; readonly details: Readonly<Record<string, string | number>> };
  readonly rPrecision: {
    readonly samples: number;
    readonly captions: number;
    readonly poolRequested: number;
    readonly pool: number;
    readonly chance: number;
    readonly top1: number;
    readonly top1StdErr: number;
    readonly top5: number | null;
    readonly seed: number;
  };
  readonly clipScore: { readonly samples: number; readonly mean: number; readonly std: number | null; readonly stdErr: number | null };
  readonly fid: {
    readonly extractor: { readonly name: string; readonly output: string; readonly inputSize: number; readonly dim: number };
    readonly samples: SetSummary;
    readonly real: SetSummary;
    readonly reference: SetSummary | null;
    readonly blur: { readonly radii: readonly number[]; readonly sigma: string };
    readonly points: readonly FidCurvePoint[];
  };
  /** Every sample: its file, caption, CLIP score and the rank of its own caption in its pool (1 = retrieved). */
  readonly perSample: readonly { readonly file: string; readonly caption_index: number; readonly sample: number; readonly caption: string; readonly clip_score: number; readonly rank: number }[];
  readonly createdAt: string;
}

export const TEXT_TO_IMAGE_TITLE = 'Text-to-image evaluation: CLIP R-precision, CLIP score, FID by blur radius';

/**
 * Checks every input before any model runs or anything is written: the real and reference data sets exist, the
 * radii and pool are valid, the report files can be written, and the samples folder is readable as a generate
 * folder (or, when it is to be generated, that it can be created or is an earlier run's).
 */
export function preflightTextToImage(options: { samples: string; generating: boolean; keptOnly?: boolean; real: string; reference?: string; pool?: number; radii?: readonly number[]; out?: string }): SampleFolder | undefined {
  checkSettings(options);
  if (options.out !== undefined) preflightReport(options.out);
  if (options.generating) {
    // new, empty or an earlier generate's (whose finished images are reused), as `dalle generate --out` takes it
    claimOutputFolder(options.samples, GENERATE_OUTPUT_RULE, { flag: 'the samples folder' });
    return undefined;
  }
  const folder = readSampleFolder(options.samples, { keptOnly: options.keptOnly });
  checkCaptionCount(folder);
  return folder;
}

/** The data sets exist; the radii and the pool are valid. */
function checkSettings(options: { real: string; reference?: string; pool?: number; radii?: readonly number[] }): void {
  detectSourceKind(options.real);
  if (options.reference !== undefined) detectSourceKind(options.reference);
  for (const r of options.radii ?? DEFAULT_BLUR_RADII) blurSigma(r);
  const pool = options.pool ?? DEFAULT_POOL;
  if (!Number.isSafeInteger(pool) || pool < 2) throw new DataError(`the R-precision pool must be an integer >= 2, got ${pool}`, 'give --pool 100 (the literature\'s) or another size >= 2');
}

function checkCaptionCount(folder: SampleFolder): void {
  const distinct = new Set(folder.samples.map((s) => s.caption)).size;
  if (distinct < 2) {
    throw new DataError(
      `${folder.dir}: its ${folder.samples.length} image(s) have ${distinct} distinct caption; R-precision ranks an image's caption among others`,
      'generate from a caption file with many different captions (100 or more for the usual pool of 100)',
    );
  }
}

/** The scorer's image tower as FID's feature model (so one CLIP is loaded once); the caller disposes the scorer. */
export class ScorerImageFeatures implements FeatureExtractor {
  readonly name: string;
  readonly inputSize: number;
  readonly maxBatch = 256;

  constructor(private readonly scorer: ClipScorer) {
    this.name = scorer.name;
    this.inputSize = scorer.imageSize;
  }

  outputName(): string {
    return 'image_embedding';
  }

  async features(pixels: Float32Array, count: number): Promise<{ data: Float32Array; dim: number }> {
    const S = this.inputSize;
    const rows = await this.scorer.embedImages({ pixels, shape: [count, 3, S, S] });
    const dim = rows[0]?.length ?? 0;
    const data = new Float32Array(count * dim);
    rows.forEach((row, i) => data.set(row, i * dim));
    return { data, dim };
  }

  async dispose(): Promise<void> {
    // the scorer belongs to the caller
  }
}

/** L2-normalised CLIP embeddings (N, E) of the sample images, decoded at the scorer's side, in batches. */
async function embedSampleImages(scorer: ClipScorer, folder: SampleFolder, events: EventSink, batch = 64): Promise<Float32Array> {
  const S = scorer.imageSize;
  const N = folder.samples.length;
  let out = new Float32Array(0);
  const task = 'CLIP image embeddings';
  for (let start = 0; start < N; start += batch) {
    const part = folder.samples.slice(start, start + batch);
    const pixels = new Float32Array(part.length * 3 * S * S);
    await Promise.all(
      part.map(async (s, n) => {
        try {
          rgbToChw(await decodeImage(s.file, { resolution: S, maxInputPixels: DEFAULT_MAX_INPUT_PIXELS }), S, pixels, n * 3 * S * S);
        } catch (error) {
          if (!(error instanceof SkipError)) throw error;
          throw new DataError(`${s.file} cannot be read as an image (${error.reason}: ${error.detail})`, `run the \`dalle generate\` that made ${folder.dir} again: it redoes damaged images`);
        }
      }),
    );
    const rows = await scorer.embedImages({ pixels, shape: [part.length, 3, S, S] });
    if (start === 0) out = new Float32Array(N * rows[0].length);
    rows.forEach((row, i) => out.set(row, (start + i) * row.length));
    events.emit({ type: 'progress', task, step: start + part.length, total: N, unit: 'image' });
  }
  events.emit({ type: 'done', task });
  return out;
}

function flatRows(rows: readonly Float32Array[]): Float32Array {
  const E = rows[0]?.length ?? 0;
  const out = new Float32Array(rows.length * E);
  rows.forEach((row, i) => out.set(row, i * E));
  return out;
}

function summary(set: ExtractedSet): SetSummary {
  return { path: set.path, images: set.count, skipped: set.skipped };
}

/** Generates the samples when asked, then measures them (see the module comment). */
export async function evaluateTextToImage(options: TextToImageOptions): Promise<TextToImageReport> {
  const events = options.events ?? silentSink;
  const radii = options.radii && options.radii.length > 0 ? [...options.radii] : [...DEFAULT_BLUR_RADII];
  const pool = options.pool ?? DEFAULT_POOL;
  const seed = options.seed ?? 0;
  // The settings before any work; the samples folder is read (and checked) once it is complete, right below.
  checkSettings({ real: options.real, reference: options.reference, pool, radii });
  if (options.generate) claimOutputFolder(options.samples, GENERATE_OUTPUT_RULE, { flag: 'the samples folder' });

  let generated: GenerateSummary | undefined;
  if (options.generate) {
    events.emit({ type: 'stage', name: 'generating the samples', detail: options.samples });
    generated = await runGeneration({ ...options.generate, out: options.samples, events });
  }
  const folder = readSampleFolder(options.samples, { keptOnly: options.keptOnly });
  checkCaptionCount(folder);
  if (folder.tornLines > 0) events.emit({ type: 'log', level: 'warn', message: `${folder.dir}: ${folder.tornLines} line(s) of results.jsonl are not JSON (torn writes) and were passed over` });

  const { scorer } = options;
  events.emit({ type: 'stage', name: 'CLIP R-precision and CLIP score', detail: `${folder.samples.length} images, ${scorer.name}` });
  const captions = distinctCaptions(folder.samples.map((s) => s.caption));
  const images = await embedSampleImages(scorer, folder, events);
  const texts = flatRows(await scorer.embedTexts(captions.texts));
  const keys = folder.samples.map((s) => ({ captionIndex: s.captionIndex, sample: s.sample }));
  const retrieval = rPrecision(images, texts, captions.own, keys, { pool, seed });
  const scores = clipScoreStats(images, texts, captions.own);
  events.emit({ type: 'metrics', split: 'text-to-image', values: { r_precision: retrieval.top1, pool: retrieval.pool, clip_score: scores.mean } });

  const extractor = options.extractor ?? new ScorerImageFeatures(scorer);
  const sampleRecords = folder.samples.map((s) => fileRecord(path.basename(s.file), s.file, [s.caption]));
  const points: FidCurvePoint[] = [];
  let sets: { samples: ExtractedSet; real: ExtractedSet; reference?: ExtractedSet } | undefined;
  for (const radius of radii) {
    const sigma = blurSigma(radius);
    events.emit({ type: 'stage', name: `FID at blur radius ${radius}`, detail: `sigma ${sigma}` });
    const common = { blurRadius: radius, batchSize: options.batchSize, events };
    const samplesSet = await extractFromRecords(extractor, folder.dir, sampleRecords, undefined, { ...common, task: `samples (blur ${radius})` });
    const realSet = await extractFromDataset(extractor, options.real, { ...common, task: `real (blur ${radius})` });
    const referenceSet = options.reference !== undefined ? await extractFromDataset(extractor, options.reference, { ...common, task: `reference (blur ${radius})` }) : undefined;
    const realStats = featureStats(realSet.data, realSet.count, realSet.dim);
    const f = frechetDistance(realStats, featureStats(samplesSet.data, samplesSet.count, samplesSet.dim));
    const reference = referenceSet ? frechetDistance(realStats, featureStats(referenceSet.data, referenceSet.count, referenceSet.dim)).fid : null;
    points.push({ radius, sigma, fid: f.fid, meanTerm: f.meanTerm, covTerm: f.covTerm, reference, ratio: reference !== null ? f.fid / reference : null });
    events.emit({ type: 'metrics', split: `blur ${radius}`, values: { fid: f.fid, ...(reference !== null ? { reference_fid: reference } : {}) } });
    sets = { samples: samplesSet, real: realSet, reference: referenceSet };
  }

  return {
    kind: 'text-to-image',
    title: TEXT_TO_IMAGE_TITLE,
    samples: {
      path: folder.dir,
      images: folder.samples.length,
      captions: captions.texts.length,
      keptOnly: folder.keptOnly,
      tornLines: folder.tornLines,
      generation: folder.generation,
      ...(generated ? { generated: { images: generated.generated, reused: generated.skipped, seconds: generated.seconds } } : {}),
    },
    clip: { name: scorer.name, imageSize: scorer.imageSize, details: scorer.details },
    rPrecision: {
      samples: retrieval.samples,
      captions: retrieval.captions,
      poolRequested: retrieval.poolRequested,
      pool: retrieval.pool,
      chance: retrieval.chance,
      top1: retrieval.top1,
      top1StdErr: retrieval.top1StdErr,
      top5: retrieval.top5,
      seed: retrieval.seed,
    },
    clipScore: { samples: scores.samples, mean: scores.mean, std: scores.std, stdErr: scores.stdErr },
    fid: {
      extractor: { name: extractor.name, output: extractor.outputName('features'), inputSize: extractor.inputSize, dim: sets!.samples.dim },
      samples: summary(sets!.samples),
      real: summary(sets!.real),
      reference: sets!.reference ? summary(sets!.reference) : null,
      blur: { radii, sigma: SIGMA_RULE },
      points,
    },
    perSample: folder.samples.map((s, i) => ({
      file: sampleRecords[i].id,
      caption_index: s.captionIndex,
      sample: s.sample,
      caption: s.caption,
      clip_score: scores.scores[i],
      rank: retrieval.ranks[i],
    })),
    createdAt: new Date().toISOString(),
  };
}
