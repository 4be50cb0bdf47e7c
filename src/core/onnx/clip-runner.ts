/**
 * A CLIP brought as a Hugging Face-style ONNX folder, run through onnxruntime-node: what `--clip DIR` opens when DIR
 * is not a dalle run (src/core/models/clip/scorer.ts). Two layouts:
 *
 *   text_model.onnx + vision_model.onnx   input_ids, attention_mask int64 (B, T) -> text_embeds (B, E);
 *                                         pixel_values f32 (B, 3, S, S) -> image_embeds (B, E)
 *                                         (`dalle export --clip`, optimum's split text / vision exports)
 *   model.onnx                            optimum's single CLIP graph: input_ids, attention_mask, pixel_values
 *                                         -> text_embeds, image_embeds (and logits_per_image / logits_per_text)
 *
 * both with tokenizer.json (run by the Hugging Face tokenizers library with the file's own normalizer,
 * pre-tokenizer and post_processor, which adds the start / end-of-text tokens the model expects) and
 * preprocessor_config.json (CLIPImageProcessor: resize of the shortest edge to size.shortest_edge with `resample`,
 * centre crop to crop_size, rescale to [0, 1], (x - image_mean) / image_std). config.json is optional (the padding id
 * and the context length come from it when the graph does not fix T). Captions are cut to the context length (the
 * tokenizer keeps its special tokens) and padded to it with attention_mask 0. Embeddings are L2-normalised here,
 * whatever the graph returns. Each file is checked before onnxruntime sees it; a missing or mismatched one is an
 * OnnxModelError naming the file and what to do.
 * Key: B = batch, T = tokens, E = embedding size, S = the crop side.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as Ort from 'onnxruntime-node';
import sharp from 'sharp';
import { Tokenizer as HfTokenizer } from 'tokenizers';
import { readTextFileSync, TEXT_LIMITS } from '../io/text-file';
import type { ClipScorer, ImageBatch } from '../models/clip/scorer';
import { CLIP_COMBINED_FILE, CLIP_CONFIG_FILE, CLIP_PREPROCESSOR_FILE, CLIP_TEXT_FILE, CLIP_TOKENIZER_JSON, CLIP_VISION_FILE } from './clip-export';
import { OnnxModelError } from './errors';
import { CheckedOnnxFile, ExpectedGraph, createSession, loadOnnxRuntime, readOnnxFile } from './runtime';

const HINT = 'give a folder with text_model.onnx + vision_model.onnx (or optimum\'s model.onnx), tokenizer.json and preprocessor_config.json, e.g. from `dalle export --clip RUN --out DIR`';

/** Does `dir` look like an ONNX CLIP folder (any of its graphs present)? A dalle run is not one. */
export function isOnnxClipFolder(dir: string): boolean {
  return [CLIP_TEXT_FILE, CLIP_VISION_FILE, CLIP_COMBINED_FILE].some((f) => fs.existsSync(path.join(dir, f)));
}

const TEXT_GRAPH: ExpectedGraph = {
  what: 'the CLIP text model',
  inputs: [{ name: 'input_ids', dtype: 'INT64', rank: 2 }],
  outputs: [{ name: 'text_embeds', dtype: 'FLOAT', rank: 2 }],
  hint: HINT,
};
const VISION_GRAPH: ExpectedGraph = {
  what: 'the CLIP vision model',
  inputs: [{ name: 'pixel_values', dtype: 'FLOAT', rank: 4 }],
  outputs: [{ name: 'image_embeds', dtype: 'FLOAT', rank: 2 }],
  hint: HINT,
};
const COMBINED_GRAPH: ExpectedGraph = {
  what: 'the CLIP model',
  inputs: [{ name: 'input_ids', dtype: 'INT64', rank: 2 }, { name: 'pixel_values', dtype: 'FLOAT', rank: 4 }],
  outputs: [{ name: 'text_embeds', dtype: 'FLOAT', rank: 2 }, { name: 'image_embeds', dtype: 'FLOAT', rank: 2 }],
  hint: HINT,
};

/** What preprocessor_config.json says about images. */
export interface ClipImagePreprocess {
  /** Side the shortest edge is resized to. */
  readonly shortestEdge: number;
  /** Side of the centre crop: the graph's S. */
  readonly crop: number;
  readonly mean: readonly [number, number, number];
  readonly std: readonly [number, number, number];
  /** sharp's kernel for PIL's `resample` code. */
  readonly kernel: 'nearest' | 'linear' | 'cubic' | 'lanczos3';
}

type Json = Record<string, unknown>;

function readJson(file: string, what: string): Json {
  if (!fs.existsSync(file)) throw new OnnxModelError(`${what}: ${file} does not exist`, HINT);
  const text = readTextFileSync(file, TEXT_LIMITS.runMetadata);
  try {
    const value = JSON.parse(text) as unknown;
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('the top level is not an object');
    return value as Json;
  } catch (error) {
    throw new OnnxModelError(`${what}: ${file} is not valid JSON (${error instanceof Error ? error.message : String(error)})`, HINT);
  }
}

/** PIL resample codes -> sharp kernels (0 NEAREST, 1 LANCZOS, 2 BILINEAR, 3 BICUBIC; BOX / HAMMING -> bilinear). */
const KERNELS: Record<number, ClipImagePreprocess['kernel']> = { 0: 'nearest', 1: 'lanczos3', 2: 'linear', 3: 'cubic', 4: 'linear', 5: 'linear' };

/** Reads CLIPImageProcessor's fields (size as a number, {shortest_edge} or {height, width}; crop_size likewise). */
export function readPreprocessor(file: string): ClipImagePreprocess {
  const json = readJson(file, 'the CLIP image preprocessor');
  const side = (v: unknown): number | undefined => {
    if (typeof v === 'number') return v;
    if (typeof v === 'object' && v !== null) {
      const o = v as Json;
      if (typeof o.shortest_edge === 'number') return o.shortest_edge;
      if (typeof o.height === 'number' && o.height === o.width) return o.height;
    }
    return undefined;
  };
  const crop = side(json.crop_size) ?? side(json.size);
  const shortestEdge = side(json.size) ?? crop;
  const triple = (v: unknown, name: string): [number, number, number] => {
    if (Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number' && Number.isFinite(x))) return v as [number, number, number];
    if (typeof v === 'number') return [v, v, v];
    throw new OnnxModelError(`the CLIP image preprocessor: ${file}: ${name} should be 3 numbers, it is ${JSON.stringify(v)}`, HINT);
  };
  if (!(crop && shortestEdge && Number.isInteger(crop) && crop > 0 && Number.isInteger(shortestEdge) && shortestEdge >= crop)) {
    throw new OnnxModelError(`the CLIP image preprocessor: ${file} gives no usable image size (size ${JSON.stringify(json.size)}, crop_size ${JSON.stringify(json.crop_size)})`, HINT);
  }
  const std = triple(json.image_std ?? [1, 1, 1], 'image_std');
  if (std.some((s) => s === 0)) throw new OnnxModelError(`the CLIP image preprocessor: ${file}: image_std has a 0`, HINT);
  const resample = typeof json.resample === 'number' ? json.resample : 3;
  const kernel = KERNELS[resample];
  if (!kernel) throw new OnnxModelError(`the CLIP image preprocessor: ${file}: resample ${resample} is not a PIL filter code (0..5)`, HINT);
  const normalize = json.do_normalize !== false;
  return { shortestEdge, crop, mean: normalize ? triple(json.image_mean ?? [0, 0, 0], 'image_mean') : [0, 0, 0], std: normalize ? std : [1, 1, 1], kernel };
}

/** Images (N, 3, H, W) in [0, 1]. */
export interface OnnxClipImages {
  readonly pixels: Float32Array;
  readonly shape: readonly [number, number, number, number];
}

export interface OnnxClipOptions {
  readonly threads?: number;
}

export class OnnxClip {
  /** Side of the images the vision graph takes. */
  readonly imageSize: number;
  /** Tokens per caption fed to the text graph. */
  readonly contextLength: number;
  readonly embed: number;

  private constructor(
    readonly dir: string,
    readonly config: Json,
    readonly preprocess: ClipImagePreprocess,
    private readonly tokenizer: HfTokenizer,
    private readonly padId: number,
    private readonly text: Ort.InferenceSession | undefined,
    private readonly vision: Ort.InferenceSession | undefined,
    private readonly combined: Ort.InferenceSession | undefined,
    private readonly feedsMask: boolean,
    contextLength: number,
    embed: number,
  ) {
    this.imageSize = preprocess.crop;
    this.contextLength = contextLength;
    this.embed = embed;
  }

  /** The layout found in `dir` ('split' or 'combined'). */
  get layout(): 'split' | 'combined' {
    return this.combined ? 'combined' : 'split';
  }

  static async open(dir: string, options: OnnxClipOptions = {}): Promise<OnnxClip> {
    const stat = fs.statSync(dir, { throwIfNoEntry: false });
    if (!stat?.isDirectory()) throw new OnnxModelError(`no ONNX CLIP folder at ${dir}`, HINT);
    const has = (f: string): boolean => fs.existsSync(path.join(dir, f));
    const split = has(CLIP_TEXT_FILE) || has(CLIP_VISION_FILE);
    if (!split && !has(CLIP_COMBINED_FILE)) {
      throw new OnnxModelError(`${dir} has no ${CLIP_TEXT_FILE} + ${CLIP_VISION_FILE} and no ${CLIP_COMBINED_FILE} (it holds: ${fs.readdirSync(dir).slice(0, 12).join(', ') || 'nothing'})`, HINT);
    }
    if (split) {
      for (const f of [CLIP_TEXT_FILE, CLIP_VISION_FILE]) {
        if (!has(f)) throw new OnnxModelError(`${dir} has ${f === CLIP_TEXT_FILE ? CLIP_VISION_FILE : CLIP_TEXT_FILE} but no ${f}: a CLIP needs both towers`, HINT);
      }
    }
    for (const f of [CLIP_TOKENIZER_JSON, CLIP_PREPROCESSOR_FILE]) {
      if (!has(f)) throw new OnnxModelError(`${dir} has no ${f}: the CLIP's ${f === CLIP_TOKENIZER_JSON ? 'tokenizer' : 'image preprocessing'} is unknown`, HINT);
    }
    const config = has(CLIP_CONFIG_FILE) ? readJson(path.join(dir, CLIP_CONFIG_FILE), 'the CLIP config') : {};
    const textConfig = (config.text_config ?? {}) as Json;
    const preprocess = readPreprocessor(path.join(dir, CLIP_PREPROCESSOR_FILE));
    const tokenizerText = readTextFileSync(path.join(dir, CLIP_TOKENIZER_JSON), TEXT_LIMITS.tokenizer);
    let tokenizer: HfTokenizer;
    try {
      tokenizer = HfTokenizer.fromString(tokenizerText);
    } catch (error) {
      throw new OnnxModelError(`the CLIP tokenizer: ${path.join(dir, CLIP_TOKENIZER_JSON)} is not a tokenizer.json the tokenizers library reads (${error instanceof Error ? error.message : String(error)})`, HINT);
    }
    const graphs: Array<[string, ExpectedGraph]> = split ? [[CLIP_TEXT_FILE, TEXT_GRAPH], [CLIP_VISION_FILE, VISION_GRAPH]] : [[CLIP_COMBINED_FILE, COMBINED_GRAPH]];
    const checked = graphs.map(([f, expected]) => [readOnnxFile(path.join(dir, f), expected), expected] as const);
    const textFile = checked[0][0];
    const visionFile = checked[split ? 1 : 0][0];
    // Shapes the graphs fix: T of input_ids, S of pixel_values, E of the embeddings.
    const dim = (file: CheckedOnnxFile, kind: 'input' | 'output', name: string, axis: number): number | undefined => {
      const v = (kind === 'input' ? file.model.graph!.input : file.model.graph!.output)?.find((x) => x.name === name);
      const d = v?.type?.tensor_type?.shape?.dim?.[axis];
      return typeof d?.dim_value === 'number' && d.dim_value > 0 ? d.dim_value : undefined;
    };
    const S = dim(visionFile, 'input', 'pixel_values', 2);
    if (S !== undefined && S !== preprocess.crop) {
      throw new OnnxModelError(
        `${visionFile.file} takes ${S}x${S} pixel_values but ${path.join(dir, CLIP_PREPROCESSOR_FILE)} crops to ${preprocess.crop}: the files do not belong together`,
        HINT,
      );
    }
    const Et = dim(textFile, 'output', 'text_embeds', 1);
    const Ei = dim(visionFile, 'output', 'image_embeds', 1);
    if (Et !== undefined && Ei !== undefined && Et !== Ei) {
      throw new OnnxModelError(`${textFile.file} gives ${Et}-value text embeddings, ${visionFile.file} ${Ei}-value image embeddings: the towers do not belong together`, HINT);
    }
    const configured = typeof textConfig.max_position_embeddings === 'number' ? textConfig.max_position_embeddings : undefined;
    const contextLength = dim(textFile, 'input', 'input_ids', 1) ?? configured ?? 77;
    tokenizer.setTruncation(contextLength);
    const padId = typeof textConfig.pad_token_id === 'number' ? textConfig.pad_token_id : 0;
    const feedsMask = (textFile.model.graph!.input ?? []).some((x) => x.name === 'attention_mask');
    const sessions: Ort.InferenceSession[] = [];
    try {
      for (const [file, expected] of checked) sessions.push(await createSession(file, expected, { threads: options.threads }));
    } catch (error) {
      await Promise.all(sessions.map((s) => s.release()));
      throw error;
    }
    return split
      ? new OnnxClip(dir, config, preprocess, tokenizer, padId, sessions[0], sessions[1], undefined, feedsMask, contextLength, Et ?? Ei ?? NaN)
      : new OnnxClip(dir, config, preprocess, tokenizer, padId, undefined, undefined, sessions[0], feedsMask, contextLength, Et ?? Ei ?? NaN);
  }

  /** Token ids and attention mask (B, T) int64 of captions: the tokenizer's ids, cut to T, padded with padId. */
  async tokenize(captions: readonly string[]): Promise<{ ids: BigInt64Array; mask: BigInt64Array; T: number }> {
    const T = this.contextLength;
    const ids = new BigInt64Array(captions.length * T).fill(BigInt(this.padId));
    const mask = new BigInt64Array(captions.length * T);
    const encodings = await this.tokenizer.encodeBatch([...captions], { addSpecialTokens: true });
    encodings.forEach((e, b) => {
      const row = e.getIds();
      const rowMask = e.getAttentionMask();
      for (let t = 0; t < Math.min(T, row.length); t++) {
        ids[b * T + t] = BigInt(row[t]);
        mask[b * T + t] = BigInt(rowMask[t] ?? 1);
      }
    });
    return { ids, mask, T };
  }

  /** L2-normalised text embeddings, one (E) vector per caption. */
  async embedTexts(captions: readonly string[], batch = 64): Promise<Float32Array[]> {
    const rt = loadOnnxRuntime();
    const out: Float32Array[] = [];
    for (let start = 0; start < captions.length; start += batch) {
      const part = captions.slice(start, start + batch);
      const { ids, mask, T } = await this.tokenize(part);
      const feeds: Record<string, Ort.Tensor> = { input_ids: new rt.Tensor('int64', ids, [part.length, T]) };
      if (this.feedsMask) feeds.attention_mask = new rt.Tensor('int64', mask, [part.length, T]);
      let result: Ort.InferenceSession.ReturnType;
      if (this.combined) {
        const S = this.imageSize;
        feeds.pixel_values = new rt.Tensor('float32', new Float32Array(3 * S * S), [1, 3, S, S]); // a placeholder image
        result = await this.combined.run(feeds, ['text_embeds']);
      } else {
        result = await this.text!.run(feeds, ['text_embeds']);
      }
      out.push(...normalizedRows(result.text_embeds, part.length));
    }
    return out;
  }

  /** pixel_values (N, 3, S, S) of images (N, 3, H, W) in [0, 1]: resize + centre crop (sharp), then normalise. */
  async preprocessImages(images: OnnxClipImages): Promise<Float32Array> {
    const [N, C, H, W] = images.shape;
    if (C !== 3) throw new RangeError(`CLIP images need 3 channels, got ${C}`);
    if (images.pixels.length !== N * C * H * W) throw new RangeError(`${images.pixels.length} values are not (${N}, ${C}, ${H}, ${W}) images`);
    const { crop: S, shortestEdge, kernel, mean, std } = this.preprocess;
    const out = new Float32Array(N * 3 * S * S);
    const plane = S * S;
    const identity = H === S && W === S && shortestEdge === S;
    await Promise.all(
      Array.from({ length: N }, async (_, n) => {
        let rgb: Float32Array | Buffer;
        if (identity) {
          rgb = images.pixels.subarray(n * 3 * plane, (n + 1) * 3 * plane); // already (3, S, S)
        } else {
          const hwc = Buffer.alloc(H * W * 3);
          const base = n * 3 * H * W;
          for (let p = 0; p < H * W; p++) for (let c = 0; c < 3; c++) hwc[p * 3 + c] = Math.round(Math.min(1, Math.max(0, images.pixels[base + c * H * W + p])) * 255);
          const scale = shortestEdge / Math.min(H, W);
          const rw = Math.max(S, Math.round(W * scale));
          const rh = Math.max(S, Math.round(H * scale));
          const resized = await sharp(hwc, { raw: { width: W, height: H, channels: 3 } })
            .resize(rw, rh, { fit: 'fill', kernel })
            .extract({ left: Math.floor((rw - S) / 2), top: Math.floor((rh - S) / 2), width: S, height: S })
            .raw()
            .toBuffer();
          rgb = resized;
        }
        const o = n * 3 * plane;
        for (let c = 0; c < 3; c++) {
          for (let p = 0; p < plane; p++) {
            const v = identity ? (rgb as Float32Array)[c * plane + p] : (rgb as Buffer)[p * 3 + c] / 255;
            out[o + c * plane + p] = (v - mean[c]) / std[c];
          }
        }
      }),
    );
    return out;
  }

  /** L2-normalised image embeddings, one (E) vector per image of (N, 3, H, W) in [0, 1]. */
  async embedImages(images: OnnxClipImages, batch = 64): Promise<Float32Array[]> {
    const rt = loadOnnxRuntime();
    const N = images.shape[0];
    const S = this.imageSize;
    const pixels = await this.preprocessImages(images);
    const out: Float32Array[] = [];
    for (let start = 0; start < N; start += batch) {
      const n = Math.min(batch, N - start);
      const feeds: Record<string, Ort.Tensor> = { pixel_values: new rt.Tensor('float32', pixels.slice(start * 3 * S * S, (start + n) * 3 * S * S), [n, 3, S, S]) };
      let result: Ort.InferenceSession.ReturnType;
      if (this.combined) {
        const { ids, mask, T } = await this.tokenize(['']); // a placeholder caption
        feeds.input_ids = new rt.Tensor('int64', ids, [1, T]);
        if (this.feedsMask) feeds.attention_mask = new rt.Tensor('int64', mask, [1, T]);
        result = await this.combined.run(feeds, ['image_embeds']);
      } else {
        result = await this.vision!.run(feeds, ['image_embeds']);
      }
      out.push(...normalizedRows(result.image_embeds, n));
    }
    return out;
  }

  async release(): Promise<void> {
    await Promise.all([this.text, this.vision, this.combined].filter((s): s is Ort.InferenceSession => s !== undefined).map((s) => s.release()));
  }
}

/** (rows, E) -> rows L2-normalised vectors (x / sqrt(|x|^2 + 1e-12), as the engine's l2Normalize). */
function normalizedRows(t: Ort.Tensor, rows: number): Float32Array[] {
  const data = t.data as Float32Array;
  if (t.dims.length !== 2 || t.dims[0] !== rows) throw new OnnxModelError(`the CLIP graph returned embeddings of shape [${t.dims.join(', ')}] for ${rows} inputs`, HINT);
  const E = t.dims[1];
  return Array.from({ length: rows }, (_, r) => {
    const v = data.slice(r * E, (r + 1) * E);
    let s = 0;
    for (let e = 0; e < E; e++) s += v[e] * v[e];
    const inv = 1 / Math.sqrt(s + 1e-12);
    for (let e = 0; e < E; e++) v[e] *= inv;
    return v;
  });
}

/** An ONNX CLIP folder behind the ClipScorer interface of src/core/models/clip/scorer.ts. */
export class OnnxClipScorer implements ClipScorer {
  readonly name: string;
  readonly imageSize: number;
  readonly details: Readonly<Record<string, string | number>>;

  constructor(private readonly clip: OnnxClip) {
    const dir = path.resolve(clip.dir);
    this.name = `onnx-clip:${dir}`;
    this.imageSize = clip.imageSize;
    const dalle = (clip.config.dalle ?? {}) as Json;
    this.details = {
      checkpoint: dir,
      layout: clip.layout,
      ...(typeof dalle.step === 'number' ? { step: dalle.step } : {}),
      ...(typeof dalle.checkpoint === 'string' ? { exported_from: dalle.checkpoint } : {}),
    };
  }

  embedTexts(captions: readonly string[]): Promise<Float32Array[]> {
    return this.clip.embedTexts(captions);
  }

  embedImages(images: ImageBatch): Promise<Float32Array[]> {
    return this.clip.embedImages(images);
  }

  dispose(): Promise<void> {
    return this.clip.release();
  }
}

export async function openOnnxClipScorer(dir: string, options: OnnxClipOptions = {}): Promise<OnnxClipScorer> {
  return new OnnxClipScorer(await OnnxClip.open(dir, options));
}
