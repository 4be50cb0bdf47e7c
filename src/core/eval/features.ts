/**
 * Feature extractors for FID, KID and the Inception Score, and running one over a data set.
 *
 * An extractor maps a batch of images (N, 3, S, S) in [0, 1] to feature vectors (N, D) and, when it has a classifier
 * head, to class logits or probabilities (N, C). Two kinds exist:
 *   - any Inception-style ONNX model a user gives (`--model FILE.onnx`), run through onnxruntime-node: the input is the
 *     graph's image input (NCHW or NHWC, detected from its shape), the features and logits are graph outputs named by
 *     the user (default: the first output);
 *   - dalle's own CLIP image tower (src/core/models/clip), the default when no --model is given.
 * Reports name the extractor, because FID values are only comparable under the same one.
 * Key: N = images, S = input side, D = feature dimension, C = classes.
 */
import type * as Ort from 'onnxruntime-node';
import { DataRecord, openDataSource } from '../data';
import { DataError, SkipError } from '../data/errors';
import { SkipReport, SkipSummary } from '../data/skips';
import { EventSink, silentSink } from '../events';
import { OnnxModelError } from '../onnx/errors';
import { createSession, readOnnxFile } from '../onnx/runtime';
import { blurSigma, loadBlurredRgb } from './blur';

/** How pixels in [0, 1] are mapped before the model sees them. */
export const PIXEL_NORMALIZATIONS = ['unit', 'symmetric', 'imagenet'] as const;
export type PixelNormalization = (typeof PIXEL_NORMALIZATIONS)[number];

export interface FeatureExtractor {
  /** Names the extractor in reports: 'onnx:inception.onnx', 'dalle-clip:runs/clip (step 2000)'. */
  readonly name: string;
  /** The output a metric reads, for reports: 'pool3', 'logits', 'image_embedding'. */
  outputName(kind: 'features' | 'logits'): string;
  /** Side of the square images it takes. */
  readonly inputSize: number;
  /** Largest batch it takes (1 for models with a fixed batch dimension of 1). */
  readonly maxBatch: number;
  /** Feature vectors (N, D) of `count` images `pixels` (N, 3, S, S) in [0, 1]. */
  features(pixels: Float32Array, count: number): Promise<{ data: Float32Array; dim: number }>;
  /** Class logits (or probabilities, see `outputsProbabilities`) (N, C); absent when the model has no classifier. */
  logits?(pixels: Float32Array, count: number): Promise<{ data: Float32Array; dim: number }>;
  /** True when `logits` already returns probabilities (a Softmax output). */
  readonly outputsProbabilities?: boolean;
  dispose(): Promise<void>;
}

export interface OnnxFeatureModelOptions {
  /** Side of the input images; required when the model's input side is symbolic, checked when it is fixed. */
  readonly inputSize?: number;
  /** The graph output holding the features (default: the first output). */
  readonly featureOutput?: string;
  /** The graph output holding the class logits, for the Inception Score (default: the first output). */
  readonly logitsOutput?: string;
  /** Whether `logitsOutput` is already probabilities (a Softmax at the end of the graph). */
  readonly outputsProbabilities?: boolean;
  readonly normalize?: PixelNormalization;
  readonly threads?: number;
}

const MODEL_HINT =
  'give an image model in ONNX format whose input is a float image batch (N, 3, S, S) or (N, S, S, 3), and name the ' +
  'output to use with --features-output / --logits-output';

const IMAGENET_MEAN = [0.485, 0.456, 0.406];
const IMAGENET_STD = [0.229, 0.224, 0.225];

/** An ONNX image model run by onnxruntime-node. */
export class OnnxFeatureModel implements FeatureExtractor {
  private constructor(
    readonly name: string,
    readonly inputSize: number,
    readonly maxBatch: number,
    private readonly session: Ort.InferenceSession,
    private readonly ort: typeof Ort,
    private readonly inputName: string,
    private readonly layout: 'nchw' | 'nhwc',
    private readonly featureOutput: string,
    private readonly logitsOutput: string,
    private readonly normalize: PixelNormalization,
    readonly outputsProbabilities: boolean,
  ) {}

  static async open(file: string, options: OnnxFeatureModelOptions = {}): Promise<OnnxFeatureModel> {
    const what = 'the feature model';
    const checked = readOnnxFile(file, { what, inputs: [], outputs: [], hint: MODEL_HINT });
    const graph = checked.model.graph!;
    const initializers = new Set((graph.initializer ?? []).map((t) => t.name));
    const inputs = (graph.input ?? []).filter((v) => !initializers.has(v.name));
    if (inputs.length !== 1) {
      throw new OnnxModelError(`${what}: ${file} has ${inputs.length} inputs (${inputs.map((v) => v.name).join(', ') || 'none'}); an image model has exactly one`, MODEL_HINT);
    }
    const input = inputs[0];
    const tensorType = input.type?.tensor_type;
    if (tensorType?.elem_type !== 1) {
      throw new OnnxModelError(`${what}: ${file}: input "${input.name}" is not a float tensor (ONNX type ${tensorType?.elem_type ?? 'unknown'})`, MODEL_HINT);
    }
    const dims = (tensorType.shape?.dim ?? []).map((d) => (d.dim_value !== undefined && d.dim_value > 0 ? d.dim_value : undefined));
    if (dims.length !== 4) throw new OnnxModelError(`${what}: ${file}: input "${input.name}" has rank ${dims.length}, not 4 (an image batch)`, MODEL_HINT);
    // NCHW when dimension 1 is 3 (or unknown and dimension 3 is not 3); NHWC when only dimension 3 is 3.
    const layout = dims[1] === 3 || (dims[1] === undefined && dims[3] !== 3) ? 'nchw' : dims[3] === 3 ? 'nhwc' : undefined;
    if (layout === undefined) {
      throw new OnnxModelError(`${what}: ${file}: input "${input.name}" has shape [${dims.map((d) => d ?? '?').join(', ')}], with 3 colour channels neither second (NCHW) nor last (NHWC)`, MODEL_HINT);
    }
    const [h, w] = layout === 'nchw' ? [dims[2], dims[3]] : [dims[1], dims[2]];
    if (h !== undefined && w !== undefined && h !== w) throw new OnnxModelError(`${what}: ${file}: input "${input.name}" is ${h}x${w}; only square inputs are supported`, MODEL_HINT);
    const fixed = h ?? w;
    let inputSize = options.inputSize;
    if (inputSize === undefined) {
      if (fixed === undefined) throw new OnnxModelError(`${what}: ${file}: input "${input.name}" has a symbolic image side`, 'give the side the model was trained at with --input-size (299 for Inception v3)');
      inputSize = fixed;
    } else if (fixed !== undefined && fixed !== inputSize) {
      throw new OnnxModelError(`${what}: ${file}: input "${input.name}" takes ${fixed}x${fixed} images, not --input-size ${inputSize}`, `leave out --input-size, or give --input-size ${fixed}`);
    }
    const outputs = (graph.output ?? []).map((v) => v.name);
    const pick = (flag: string, name: string | undefined): string => {
      const chosen = name ?? outputs[0];
      if (chosen === undefined || !outputs.includes(chosen)) {
        throw new OnnxModelError(`${what}: ${file} has no output named "${chosen}" (its outputs: ${outputs.join(', ') || 'none'})`, `name one of them with ${flag}`);
      }
      return chosen;
    };
    const featureOutput = pick('--features-output', options.featureOutput);
    const logitsOutput = pick('--logits-output', options.logitsOutput);
    const session = await createSession(checked, { what, inputs: [], outputs: [], hint: MODEL_HINT }, { threads: options.threads });
    const ort = (await import('onnxruntime-node')) as typeof Ort;
    const base = file.split(/[\\/]/).pop() ?? file;
    return new OnnxFeatureModel(
      `onnx:${base}`,
      inputSize,
      dims[0] ?? Number.MAX_SAFE_INTEGER,
      session,
      ort,
      input.name,
      layout,
      featureOutput,
      logitsOutput,
      options.normalize ?? 'unit',
      options.outputsProbabilities ?? false,
    );
  }

  /** The model's input tensor for `count` images (N, 3, S, S) in [0, 1]. */
  private inputTensor(pixels: Float32Array, count: number): Ort.Tensor {
    const s = this.inputSize;
    const plane = s * s;
    if (pixels.length !== count * 3 * plane) throw new RangeError(`dalle: ${pixels.length} pixel values are not ${count} images of 3x${s}x${s}`);
    const out = new Float32Array(pixels.length);
    for (let n = 0; n < count; n++) {
      for (let c = 0; c < 3; c++) {
        const [scale, shift] =
          this.normalize === 'unit' ? [1, 0] : this.normalize === 'symmetric' ? [2, -1] : [1 / IMAGENET_STD[c], -IMAGENET_MEAN[c] / IMAGENET_STD[c]];
        const src = (n * 3 + c) * plane;
        for (let p = 0; p < plane; p++) {
          const v = pixels[src + p] * scale + shift;
          // NCHW keeps the planes; NHWC interleaves the channels.
          out[this.layout === 'nchw' ? src + p : (n * plane + p) * 3 + c] = v;
        }
      }
    }
    const dims = this.layout === 'nchw' ? [count, 3, s, s] : [count, s, s, 3];
    return new this.ort.Tensor('float32', out, dims);
  }

  private async fetch(output: string, pixels: Float32Array, count: number): Promise<{ data: Float32Array; dim: number }> {
    const results = await this.session.run({ [this.inputName]: this.inputTensor(pixels, count) }, [output]);
    const t = results[output];
    if (t.type !== 'float32') throw new OnnxModelError(`the feature model's output "${output}" is ${t.type}, not float32`, MODEL_HINT);
    if (t.dims[0] !== count) throw new OnnxModelError(`the feature model's output "${output}" has shape [${t.dims.join(', ')}] for ${count} images`, MODEL_HINT);
    // (N, D) or (N, D, 1, 1) as Inception's pool3: everything after the batch dimension is the vector.
    const data = t.data as Float32Array;
    return { data: new Float32Array(data), dim: data.length / count };
  }

  outputName(kind: 'features' | 'logits'): string {
    return kind === 'features' ? this.featureOutput : this.logitsOutput;
  }

  features(pixels: Float32Array, count: number): Promise<{ data: Float32Array; dim: number }> {
    return this.fetch(this.featureOutput, pixels, count);
  }

  logits(pixels: Float32Array, count: number): Promise<{ data: Float32Array; dim: number }> {
    return this.fetch(this.logitsOutput, pixels, count);
  }

  async dispose(): Promise<void> {
    await this.session.release();
  }
}

/** What one pass over a data set produced. */
export interface ExtractedSet {
  /** The data set as given. */
  readonly path: string;
  /** (N, D) */
  readonly data: Float32Array;
  readonly count: number;
  readonly dim: number;
  /** Records left out while indexing or decoding, with why. */
  readonly skipped: SkipSummary;
}

export interface ExtractOptions {
  /** Gaussian blur radius (0 = none; see blur.ts for radius -> sigma). */
  readonly blurRadius?: number;
  readonly batchSize?: number;
  /** Use only the first N images (0 = all). */
  readonly limit?: number;
  /** 'features' (default) or 'logits'. */
  readonly output?: 'features' | 'logits';
  readonly events?: EventSink;
  /** Progress bar name. */
  readonly task?: string;
}

/** Runs `extractor` over every readable image of the data set at `dataPath`, in source order. */
export async function extractFromDataset(extractor: FeatureExtractor, dataPath: string, options: ExtractOptions = {}): Promise<ExtractedSet> {
  const source = await openDataSource(dataPath);
  return extractFromRecords(extractor, dataPath, source.records, source.skipped, options);
}

/**
 * Runs `extractor` over every readable image of `allRecords` (a chosen list of images, e.g. the samples a
 * results.jsonl names), in order; `path` names the set in reports, `indexSkips` what was left out before.
 */
export async function extractFromRecords(
  extractor: FeatureExtractor,
  dataPath: string,
  allRecords: readonly DataRecord[],
  indexSkips?: SkipReport,
  options: ExtractOptions = {},
): Promise<ExtractedSet> {
  const events = options.events ?? silentSink;
  const task = options.task ?? 'features';
  const skipped = new SkipReport();
  if (indexSkips) skipped.merge(indexSkips);
  const records = options.limit ? allRecords.slice(0, options.limit) : allRecords;
  const sigma = blurSigma(options.blurRadius ?? 0);
  const batchSize = Math.max(1, Math.min(options.batchSize ?? 32, extractor.maxBatch));
  const s = extractor.inputSize;
  const plane = s * s;
  const chunks: Float32Array[] = [];
  let dim = 0;
  let count = 0;
  for (let start = 0; start < records.length; start += batchSize) {
    const batch = records.slice(start, start + batchSize);
    const decoded = await Promise.all(
      batch.map(async (record) => {
        try {
          return await loadBlurredRgb(await record.load(), s, sigma);
        } catch (error) {
          if (!(error instanceof SkipError)) throw error;
          skipped.add(error.reason, record.id, error.detail);
          return undefined;
        }
      }),
    );
    const good = decoded.filter((x): x is Uint8Array => x !== undefined);
    if (good.length > 0) {
      const pixels = new Float32Array(good.length * 3 * plane); // (n, 3, S, S)
      good.forEach((rgb, n) => {
        for (let p = 0; p < plane; p++) {
          for (let c = 0; c < 3; c++) pixels[(n * 3 + c) * plane + p] = rgb[p * 3 + c] / 255;
        }
      });
      const out =
        options.output === 'logits'
          ? await extractor.logits!(pixels, good.length)
          : await extractor.features(pixels, good.length);
      if (dim !== 0 && out.dim !== dim) throw new Error(`dalle: the extractor returned ${out.dim} values per image after ${dim}`);
      dim = out.dim;
      chunks.push(out.data);
      count += good.length;
    }
    events.emit({ type: 'progress', task, step: Math.min(start + batchSize, records.length), total: records.length, unit: 'image' });
  }
  events.emit({ type: 'done', task });
  const data = new Float32Array(count * dim);
  let offset = 0;
  for (const c of chunks) {
    data.set(c, offset);
    offset += c.length;
  }
  if (count < 2) {
    throw new DataError(
      `${dataPath}: ${count} readable image${count === 1 ? '' : 's'} of ${records.length} (${skipped.total} skipped); feature statistics need at least 2`,
      'give a folder (or manifest, or .tar shards) with more images; `dalle dataset inspect PATH` lists what is skipped and why',
    );
  }
  return { path: dataPath, data, count, dim, skipped: skipped.toJSON() };
}
