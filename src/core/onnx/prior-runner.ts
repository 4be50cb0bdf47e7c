/**
 * An exported prior (dalle export --prior: prior.onnx, prior.json) run through onnxruntime-node, with the Prior's
 * generation interface: createCache(B), prefill(cache, text, imagePrefix?) and step(cache, imageTokens), each returning
 * the (B, Vi) logits of the next image token, as engine Tensors, but asynchronously (onnxruntime runs are async).
 * The cache holds the present keys and values the graph returned, fed back as the next call's past.
 * Key: B = batch, L = text_len, N = image_grid^2, m = image prefix length, H = heads, D = head_dim, Vi = image_vocab.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as Ort from 'onnxruntime-node';
import { readTextFileSync, TEXT_LIMITS } from '../io/text-file';
import type { PriorArch } from '../models/prior';
import { Tensor, shapeStr } from '../tensor';
import { OnnxModelError } from './errors';
import { PRIOR_EXPORT_FORMAT, PRIOR_EXPORT_INFO_FILE, PRIOR_FILE, PriorExportInfo } from './prior-export';
import { ExpectedGraph, SessionOptions, createSession, loadOnnxRuntime, readOnnxFile } from './runtime';
import { ExpectedWeights, checkExportedWeights } from './weights-check';

const EXPORT_HINT = 'export the prior again: dalle export --prior RUN --out DIR';

/** The K/V of the positions run so far (what the graph returned as present_*), and how many positions that is. */
export class OnnxPriorCache {
  past: Ort.Tensor[] = [];
  length = 0;

  constructor(readonly batch: number) {}

  get disposed(): boolean {
    return this.length < 0;
  }

  dispose(): void {
    this.past = [];
    this.length = -1;
  }
}

/** prior.json of an export folder, checked. */
export function readPriorExportInfo(dir: string): PriorExportInfo {
  const file = path.join(dir, PRIOR_EXPORT_INFO_FILE);
  if (!fs.existsSync(file)) throw new OnnxModelError(`${dir} is not a prior export: ${file} is missing`, EXPORT_HINT);
  const text = readTextFileSync(file, TEXT_LIMITS.runMetadata);
  let info: PriorExportInfo;
  try {
    info = JSON.parse(text) as PriorExportInfo;
  } catch (error) {
    throw new OnnxModelError(`${file} is not valid JSON: ${error instanceof Error ? error.message : String(error)}`, EXPORT_HINT);
  }
  if (info?.format !== PRIOR_EXPORT_FORMAT || typeof info.arch !== 'object' || !Number.isInteger(info.imageIdOffset)) {
    throw new OnnxModelError(`${file} is not a prior export description (format ${JSON.stringify(info?.format)}, expected "${PRIOR_EXPORT_FORMAT}")`, EXPORT_HINT);
  }
  return info;
}

export class OnnxPrior {
  readonly textLen: number;
  readonly gridSide: number;
  readonly imageVocab: number;
  readonly textVocab: number;
  private readonly nLayers: number;
  private readonly nHeads: number;
  private readonly headDim: number;

  private constructor(readonly dir: string, readonly info: PriorExportInfo, private readonly session: Ort.InferenceSession) {
    const a = info.arch;
    this.textLen = a.text_len;
    this.gridSide = a.image_grid;
    this.imageVocab = a.image_vocab;
    this.textVocab = a.text_vocab;
    this.nLayers = a.n_layers;
    this.nHeads = a.n_heads;
    this.headDim = a.head_dim;
  }

  /** Opens the export in `dir`; with `expectArch` / `expectWeights`, one of another architecture or weights is an error. */
  static async open(dir: string, options: SessionOptions & { expectArch?: PriorArch; expectWeights?: ExpectedWeights } = {}): Promise<OnnxPrior> {
    const info = readPriorExportInfo(dir);
    if (options.expectArch) {
      for (const key of Object.keys(options.expectArch) as (keyof PriorArch)[]) {
        if (info.arch[key] !== options.expectArch[key]) {
          throw new OnnxModelError(`the prior exported in ${dir} is not the one given (${key} ${info.arch[key]} vs ${options.expectArch[key]})`, EXPORT_HINT);
        }
      }
    }
    if (options.expectWeights) checkExportedWeights('prior', dir, path.join(dir, PRIOR_EXPORT_INFO_FILE), info, options.expectWeights);
    const NL = info.arch.n_layers;
    const expected: ExpectedGraph = {
      what: 'the prior',
      role: 'prior',
      inputs: [
        { name: 'input_ids', dtype: 'INT32', rank: 2 },
        ...Array.from({ length: NL }, (_, i) => [{ name: `past_key_${i}`, dtype: 'FLOAT' as const, rank: 4 }, { name: `past_value_${i}`, dtype: 'FLOAT' as const, rank: 4 }]).flat(),
      ],
      outputs: [
        { name: 'logits', dtype: 'FLOAT', rank: 2 },
        ...Array.from({ length: NL }, (_, i) => [{ name: `present_key_${i}`, dtype: 'FLOAT' as const, rank: 4 }, { name: `present_value_${i}`, dtype: 'FLOAT' as const, rank: 4 }]).flat(),
      ],
      hint: EXPORT_HINT,
    };
    const checked = readOnnxFile(path.join(dir, info.file ?? PRIOR_FILE), expected);
    return new OnnxPrior(dir, info, await createSession(checked, expected, options));
  }

  get imageLen(): number {
    return this.gridSide * this.gridSide;
  }

  createCache(batch: number): OnnxPriorCache {
    return new OnnxPriorCache(batch);
  }

  private emptyPast(B: number): Ort.Tensor[] {
    const ort = loadOnnxRuntime();
    const out: Ort.Tensor[] = [];
    for (let i = 0; i < 2 * this.nLayers; i++) out.push(new ort.Tensor('float32', new Float32Array(0), [B, this.nHeads, 0, this.headDim]));
    return out;
  }

  /** Runs input ids (B, T) after the cached positions; stores the new cache; returns logits (B, Vi). */
  private async run(cache: OnnxPriorCache, ids: Int32Array, B: number, T: number): Promise<Tensor> {
    const ort = loadOnnxRuntime();
    const feeds: Record<string, Ort.Tensor> = { input_ids: new ort.Tensor('int32', ids, [B, T]) };
    const past = cache.length === 0 ? this.emptyPast(B) : cache.past;
    for (let i = 0; i < this.nLayers; i++) {
      feeds[`past_key_${i}`] = past[2 * i];
      feeds[`past_value_${i}`] = past[2 * i + 1];
    }
    const out = await this.session.run(feeds);
    cache.past = [];
    for (let i = 0; i < this.nLayers; i++) cache.past.push(out[`present_key_${i}`], out[`present_value_${i}`]);
    cache.length += T;
    return Tensor.from(out.logits.data as Float32Array, [B, this.imageVocab]);
  }

  /**
   * text (B, L) i32 (padded with padText) and an optional image prefix (B, m): fills the cache from position 0 and
   * returns the logits (B, Vi) of image token m.
   */
  async prefill(cache: OnnxPriorCache, text: Tensor, imagePrefix?: Tensor): Promise<Tensor> {
    const L = this.textLen;
    if (text.dtype !== 'i32' || text.rank !== 2 || text.shape[1] !== L) {
      throw new Error(`dalle: onnx prior: text must be i32 (B, ${L}) (padded with padText), got ${text.dtype} ${shapeStr(text.shape)}`);
    }
    const B = text.shape[0];
    if (cache.disposed || B !== cache.batch) throw new Error(`dalle: onnx prior: a batch of ${B} needs a cache made for ${B} (this one: ${cache.batch}${cache.disposed ? ', disposed' : ''})`);
    const m = imagePrefix ? imagePrefix.shape[1] : 0;
    if (imagePrefix && (imagePrefix.dtype !== 'i32' || imagePrefix.rank !== 2 || imagePrefix.shape[0] !== B)) {
      throw new Error(`dalle: onnx prior: imagePrefix must be i32 (${B}, m), got ${imagePrefix.dtype} ${shapeStr(imagePrefix.shape)}`);
    }
    if (m >= this.imageLen) throw new Error(`dalle: onnx prior: the prefix already has all ${this.imageLen} image tokens; nothing is left to predict`);
    const t = text.toArray() as Int32Array;
    const p = imagePrefix ? (imagePrefix.toArray() as Int32Array) : new Int32Array(0);
    const T = L + m;
    const ids = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      for (let j = 0; j < L; j++) {
        const v = t[b * L + j];
        if (!(v >= 0 && v < this.textVocab + L)) throw new Error(`dalle: onnx prior: text token ${v} (row ${b}, position ${j}) is outside [0, ${this.textVocab + L})`);
        ids[b * T + j] = v;
      }
      for (let j = 0; j < m; j++) ids[b * T + L + j] = this.imageId(p[b * m + j]);
    }
    cache.length = 0;
    return this.run(cache, ids, B, T);
  }

  /** Appends one image token per row (B) i32 and returns the logits (B, Vi) of the token after it. */
  async step(cache: OnnxPriorCache, imageTokens: Tensor): Promise<Tensor> {
    if (imageTokens.dtype !== 'i32' || imageTokens.rank !== 1) {
      throw new Error(`dalle: onnx prior: image tokens must be i32 (B), got ${imageTokens.dtype} ${shapeStr(imageTokens.shape)}`);
    }
    const B = imageTokens.shape[0];
    if (cache.disposed || B !== cache.batch) throw new Error(`dalle: onnx prior: ${B} tokens for a cache made for ${cache.batch}${cache.disposed ? ' (disposed)' : ''}`);
    if (cache.length < this.textLen) throw new Error('dalle: onnx prior: prefill the cache with a caption first');
    const i = cache.length - this.textLen;
    if (i >= this.imageLen - 1) throw new Error(`dalle: onnx prior: the cache already holds ${i} of ${this.imageLen} image tokens; the last one has no next token to predict`);
    const ids = Int32Array.from(imageTokens.toArray() as Int32Array, (v) => this.imageId(v));
    return this.run(cache, ids, B, 1);
  }

  private imageId(token: number): number {
    if (!(Number.isInteger(token) && token >= 0 && token < this.imageVocab)) throw new Error(`dalle: onnx prior: image token ${token} is outside [0, ${this.imageVocab})`);
    return this.info.imageIdOffset + token;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** The ONNX prior of an export folder (`dalle export --prior RUN --out DIR`), for `dalle generate --runtime onnx`. */
export async function createOnnxPriorRunner(dir: string, options: SessionOptions & { expectArch?: PriorArch } = {}): Promise<OnnxPrior> {
  return OnnxPrior.open(dir, options);
}
