/**
 * Images <-> token grids with a trained dVAE: what `dalle encode` and `dalle decode` call.
 *
 * - the dVAE itself comes from loadDvae(RUN | RUN/checkpoints/step-N) (models/dvae/load.ts).
 * - encodeImages: image files, folders and manifests (any data source `dataset inspect` reads) -> int32 (N, h, w)
 *   argmax codes, in input order; inputs that cannot be decoded are skipped and reported, never a crash.
 * - readTokenGrids / decodeTokenGrids: a .npy of int32 (N, h, w) (or one (h, w) grid) -> images; a wrong grid shape
 *   or a token outside the vocabulary is a TokenFileError naming the position.
 * Key: N = images, V = vocab_size, R = resolution, h = w = R / f, f = the dVAE's downsample factor.
 */
import * as fs from 'node:fs';
import { DataError, SkipError } from '../data/errors';
import { decodeImage, rgbToChw } from '../data/image';
import { isImagePath } from '../data/sources/files';
import { openDataSource } from '../data/sources/open';
import { SkipReport, SkipSummary } from '../data/skips';
import { EventSink, silentSink } from '../events';
import { readNpySync } from '../io/npy';
import type { TrainedDvae } from '../models/dvae/load';
import { Tensor, noGrad, tidy } from '../tensor';

/** A token file that cannot be decoded by this dVAE; `hint` says what to do. Exit code 4 (input). */
export class TokenFileError extends Error {
  override readonly name = 'TokenFileError';

  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(message);
  }
}

/** One image to encode: a name for tokens.inputs.txt, and its bytes or path. */
interface EncodeItem {
  readonly name: string;
  readonly input: () => Promise<Uint8Array | string>;
}

export interface EncodeOptions {
  readonly batchSize?: number;
  readonly maxInputPixels?: number;
  readonly events?: EventSink;
  /** Computes a batch's codes elsewhere (e.g. onnxruntime, `--runtime onnx`): pixels (n, 3, R, R) -> i32 (n, h, w). */
  readonly encodeBatch?: (pixels: Float32Array, count: number) => Promise<Int32Array>;
  /**
   * Called once the inputs are listed, before any is encoded, with how many images there are (at most that many grids
   * result: unreadable ones are skipped): where the caller checks room for the output (`dalle encode`).
   */
  readonly beforeEncoding?: (images: number) => void;
}

export interface EncodeResult {
  /** int32 (N, h, w), row-major. */
  readonly tokens: Int32Array;
  readonly shape: [number, number, number];
  /** The encoded inputs, in the order of the grids. */
  readonly names: string[];
  readonly skipped: SkipSummary;
}

/** Expands inputs (image files, folders, .jsonl/.csv manifests, .tar shards) into images, in the order given. */
export async function collectEncodeInputs(inputs: readonly string[], skipped: SkipReport): Promise<EncodeItem[]> {
  const items: EncodeItem[] = [];
  for (const input of inputs) {
    const stat = fs.statSync(input, { throwIfNoEntry: false });
    if (stat?.isFile() && isImagePath(input)) {
      items.push({ name: input, input: async () => input });
      continue;
    }
    if (stat === undefined) {
      skipped.add('missing-file', input, 'no such file or folder');
      continue;
    }
    if (stat.isFile() && !/\.(jsonl|csv|tar)$/i.test(input)) {
      skipped.add('not-an-image', input, 'not an image file (by extension), nor a .jsonl/.csv manifest or .tar shard');
      continue;
    }
    const source = await openDataSource(input);
    skipped.merge(source.skipped);
    for (const record of source.records) {
      const file = record.file;
      items.push({
        name: file ?? `${input}:${record.id}`,
        input: file !== undefined ? async () => file : () => record.load(),
      });
    }
  }
  return items;
}

/** Encodes images to argmax token grids (no gumbel noise), batch by batch, emitting progress ('encode'). */
export async function encodeImages(dvae: TrainedDvae, inputs: readonly string[], options: EncodeOptions = {}): Promise<EncodeResult> {
  const events = options.events ?? silentSink;
  const batchSize = options.batchSize ?? 16;
  const { resolution, gridSide, model } = dvae;
  const maxInputPixels = options.maxInputPixels ?? dvae.config.data.max_input_pixels;
  const skipped = new SkipReport();
  const items = await collectEncodeInputs(inputs, skipped);
  options.beforeEncoding?.(items.length);
  const grid = gridSide * gridSide;
  const chunks: Int32Array[] = [];
  const names: string[] = [];
  const imageSize = 3 * resolution * resolution;
  for (let start = 0; start < items.length; start += batchSize) {
    const batch = items.slice(start, start + batchSize);
    const decoded = await Promise.all(
      batch.map(async (item) => {
        try {
          return await decodeImage(await item.input(), { resolution, maxInputPixels });
        } catch (error) {
          if (error instanceof SkipError) return error;
          throw error;
        }
      }),
    );
    const kept: Uint8Array[] = [];
    decoded.forEach((d, i) => {
      if (d instanceof SkipError) {
        skipped.add(d.reason, batch[i].name, d.detail);
        events.emit({ type: 'log', level: 'warn', message: `skipped ${batch[i].name}: ${d.reason} (${d.detail})` });
      } else {
        kept.push(d);
        names.push(batch[i].name);
      }
    });
    if (kept.length > 0) {
      const pixels = new Float32Array(kept.length * imageSize);
      kept.forEach((rgb, i) => rgbToChw(rgb, resolution, pixels, i * imageSize));
      const codes = options.encodeBatch
        ? await options.encodeBatch(pixels, kept.length)
        : (noGrad(() => tidy(() => model.encode(Tensor.from(pixels, [kept.length, 3, resolution, resolution], 'f32', model.device)).toArray())) as Int32Array); // pixels in, codes out
      chunks.push(Int32Array.from(codes));
    }
    events.emit({ type: 'progress', task: 'encode', step: Math.min(items.length, start + batchSize), total: items.length, unit: 'image' });
  }
  events.emit({ type: 'done', task: 'encode' });
  if (names.length === 0) {
    const summary = skipped.toJSON();
    throw new DataError(
      `no image could be encoded from ${inputs.join(', ')} (${skipped.describe()}${summary.examples.length ? `: ${summary.examples.map((e) => `${e.id} ${e.reason}`).join(', ')}` : ''})`,
      'give image files, folders of images, .jsonl/.csv manifests or .tar shards; `dalle dataset inspect PATH` shows what is skipped and why',
    );
  }
  const tokens = new Int32Array(names.length * grid);
  let offset = 0;
  for (const c of chunks) {
    tokens.set(c, offset);
    offset += c.length;
  }
  return { tokens, shape: [names.length, gridSide, gridSide], names, skipped: skipped.toJSON() };
}

/** A token file checked against a dVAE: int32 (N, h, w). */
export interface TokenGrids {
  readonly tokens: Int32Array;
  readonly shape: [number, number, number];
}

/**
 * Reads token grids from a .npy (integer dtype; (N, h, w), or (h, w) for one grid) and checks them against the dVAE:
 * the grid must be gridSide x gridSide and every token in [0, vocab_size).
 */
export function readTokenGrids(file: string, vocabSize: number, gridSide: number): TokenGrids {
  let array;
  try {
    array = readNpySync(file);
  } catch (error) {
    throw new TokenFileError(`cannot read token grids from ${file}: ${error instanceof Error ? error.message : String(error)}`, 'give a .npy of int32 token grids (N, H, W), as `dalle encode --out tokens.npy` writes');
  }
  const { dtype, shape } = array;
  if (!['i32', 'i64', 'i16', 'i8', 'u8', 'u16', 'u32'].includes(dtype)) {
    throw new TokenFileError(`${file} holds ${dtype} values; token grids are integers (int32)`, 'convert it: numpy.save(f, tokens.astype(numpy.int32))');
  }
  const dims = shape.length === 2 ? [1, shape[0], shape[1]] : shape;
  if (dims.length !== 3 || dims[1] !== gridSide || dims[2] !== gridSide) {
    throw new TokenFileError(
      `${file} has shape (${shape.join(', ')}); this dVAE decodes grids of ${gridSide}x${gridSide}, so it needs (N, ${gridSide}, ${gridSide})`,
      `encode images with the same dVAE (dalle encode --dvae RUN ...), or decode with the dVAE the tokens came from`,
    );
  }
  const [N, h, w] = dims;
  const tokens = new Int32Array(N * h * w);
  const data = array.data as ArrayLike<number | bigint>;
  for (let i = 0; i < tokens.length; i++) {
    const v = Number(data[i]);
    if (!(Number.isInteger(v) && v >= 0 && v < vocabSize)) {
      const n = Math.floor(i / (h * w));
      const y = Math.floor((i % (h * w)) / w);
      const x = i % w;
      throw new TokenFileError(
        `${file}: token ${v} at grid ${n}, row ${y}, column ${x} (flat index ${i}) is outside the vocabulary [0, ${vocabSize})`,
        'the tokens come from another dVAE (another vocab_size) or were damaged: decode with the dVAE that made them',
      );
    }
    tokens[i] = v;
  }
  return { tokens, shape: [N, h, w] };
}

/** Decodes token grids to images (N, 3, R, R) in [0, 1], batch by batch, emitting progress ('decode'). */
export async function decodeTokenGrids(
  dvae: TrainedDvae,
  grids: TokenGrids,
  onBatch: (start: number, images: Float32Array, count: number) => Promise<void> | void,
  // decodeBatch computes a batch elsewhere (e.g. onnxruntime, `--runtime onnx`): codes (n, h, w) -> (n, 3, R, R).
  options: { batchSize?: number; events?: EventSink; decodeBatch?: (codes: Int32Array, count: number) => Promise<Float32Array> } = {},
): Promise<void> {
  const events = options.events ?? silentSink;
  const batchSize = options.batchSize ?? 16;
  const [N, h, w] = grids.shape;
  for (let start = 0; start < N; start += batchSize) {
    const count = Math.min(batchSize, N - start);
    const codes = grids.tokens.subarray(start * h * w, (start + count) * h * w);
    const images = options.decodeBatch
      ? await options.decodeBatch(codes, count)
      : (noGrad(() => tidy(() => dvae.model.decode(Tensor.from(codes, [count, h, w], 'i32', dvae.model.device)).toArray())) as Float32Array); // codes (checked by readTokenGrids) in, pixels out
    await onBatch(start, images, count);
    events.emit({ type: 'progress', task: 'decode', step: start + count, total: N, unit: 'image' });
  }
  events.emit({ type: 'done', task: 'decode' });
}
