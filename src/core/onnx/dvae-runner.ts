/**
 * An exported dVAE (dalle export: dvae-encoder.onnx, dvae-decoder.onnx, dvae.json) run through onnxruntime-node:
 * what `dalle encode --runtime onnx` and `dalle decode --runtime onnx` compute with.
 * Key: N = images, C = channels, V = vocab_size, H, W = image side, h, w = grid side (H / f).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as Ort from 'onnxruntime-node';
import { readTextFileSync, TEXT_LIMITS } from '../io/text-file';
import type { DvaeArch } from '../models/dvae';
import { DVAE_DECODER_FILE, DVAE_ENCODER_FILE, DVAE_EXPORT_FORMAT, DVAE_EXPORT_INFO_FILE, DvaeExportInfo, DvaeExportSource, exportDvaeOnnx } from './dvae-export';
import { weightsDigest } from '../nn/weights-digest';
import { OnnxModelError } from './errors';
import { ExpectedGraph, SessionOptions, createSession, loadOnnxRuntime, readOnnxFile } from './runtime';
import { ExpectedWeights, checkExportedWeights } from './weights-check';

const EXPORT_HINT = 'export the dVAE again: dalle export --dvae RUN --out DIR';

const ENCODER: ExpectedGraph = {
  what: 'the dVAE encoder',
  role: 'dvae-encoder',
  inputs: [{ name: 'pixels', dtype: 'FLOAT', rank: 4 }],
  outputs: [{ name: 'logits', dtype: 'FLOAT', rank: 4 }, { name: 'codes', dtype: 'INT32', rank: 3 }],
  hint: EXPORT_HINT,
};

const DECODER: ExpectedGraph = {
  what: 'the dVAE decoder',
  role: 'dvae-decoder',
  inputs: [{ name: 'codes', dtype: 'INT32', rank: 3 }],
  outputs: [{ name: 'pixels', dtype: 'FLOAT', rank: 4 }],
  hint: EXPORT_HINT,
};

/** dvae.json of an export folder, checked. */
export function readDvaeExportInfo(dir: string): DvaeExportInfo {
  const file = path.join(dir, DVAE_EXPORT_INFO_FILE);
  if (!fs.existsSync(file)) {
    throw new OnnxModelError(`${dir} is not a dVAE export: ${file} is missing`, `${EXPORT_HINT} (it writes ${DVAE_ENCODER_FILE}, ${DVAE_DECODER_FILE} and ${DVAE_EXPORT_INFO_FILE})`);
  }
  const text = readTextFileSync(file, TEXT_LIMITS.runMetadata);
  let info: DvaeExportInfo;
  try {
    info = JSON.parse(text) as DvaeExportInfo;
  } catch (error) {
    throw new OnnxModelError(`${file} is not valid JSON: ${error instanceof Error ? error.message : String(error)}`, EXPORT_HINT);
  }
  if (info?.format !== DVAE_EXPORT_FORMAT || typeof info.arch !== 'object' || typeof info.eps !== 'number' || typeof info.resolution !== 'number') {
    throw new OnnxModelError(`${file} is not a dVAE export description (format ${JSON.stringify(info?.format)}, expected "${DVAE_EXPORT_FORMAT}")`, EXPORT_HINT);
  }
  return info;
}

/** The first architecture key where two dVAEs differ, as "n_hid 8 vs 64", or undefined when they are the same. */
export function archDifference(a: DvaeArch, b: DvaeArch): string | undefined {
  for (const key of Object.keys(a) as (keyof DvaeArch)[]) {
    if (a[key] !== b[key]) return `${key} ${a[key]} vs ${b[key]}`;
  }
  return undefined;
}

export class OnnxDvae {
  private constructor(
    readonly dir: string,
    readonly info: DvaeExportInfo,
    private readonly encoder: Ort.InferenceSession,
    private readonly decoder: Ort.InferenceSession,
    private readonly cleanup?: () => void,
  ) {}

  /**
   * Opens the export in `dir`. With `expectArch`, an export of another architecture is an error (the codes would not
   * mean the same thing); with `expectWeights`, so is an export of other weights, or one that does not say (see
   * weights-check.ts).
   */
  static async open(dir: string, options: SessionOptions & { expectArch?: DvaeArch; expectWeights?: ExpectedWeights; cleanup?: () => void } = {}): Promise<OnnxDvae> {
    const info = readDvaeExportInfo(dir);
    if (options.expectArch) {
      const diff = archDifference(info.arch, options.expectArch);
      if (diff !== undefined) {
        throw new OnnxModelError(`the dVAE exported in ${dir} is not the one given with --dvae (${diff})`, `export this dVAE: ${EXPORT_HINT}`);
      }
    }
    if (options.expectWeights) checkExportedWeights('dVAE', dir, path.join(dir, DVAE_EXPORT_INFO_FILE), info, options.expectWeights);
    const enc = readOnnxFile(path.join(dir, info.files?.encoder ?? DVAE_ENCODER_FILE), ENCODER);
    const dec = readOnnxFile(path.join(dir, info.files?.decoder ?? DVAE_DECODER_FILE), DECODER);
    const encoder = await createSession(enc, ENCODER, options);
    try {
      const decoder = await createSession(dec, DECODER, options);
      return new OnnxDvae(dir, info, encoder, decoder, options.cleanup);
    } catch (error) {
      await encoder.release();
      throw error;
    }
  }

  /**
   * Exports `src` to a fresh temporary folder and opens it; the folder is removed by release(). What `--runtime onnx`
   * does when no export folder is given.
   */
  static async fromModel(src: DvaeExportSource, options: SessionOptions = {}): Promise<OnnxDvae> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dalle-onnx-'));
    const cleanup = (): void => fs.rmSync(dir, { recursive: true, force: true });
    try {
      exportDvaeOnnx(src, dir);
      return await OnnxDvae.open(dir, { ...options, cleanup });
    } catch (error) {
      cleanup();
      throw error;
    }
  }

  private pixelsTensor(pixels: Float32Array, count: number): Ort.Tensor {
    const C = this.info.arch.input_channels;
    const side = Math.round(Math.sqrt(pixels.length / (count * C)));
    if (count * C * side * side !== pixels.length) {
      throw new Error(`dalle: ${pixels.length} pixel values are not ${count} square ${C}-channel images`);
    }
    return new (loadOnnxRuntime().Tensor)('float32', pixels, [count, C, side, side]);
  }

  /** Square images (N, C, H, H) in [0, 1] -> logits (N, V, h, h) and argmax codes (N, h, h). */
  async encodeWithLogits(pixels: Float32Array, count: number): Promise<{ logits: Float32Array; codes: Int32Array; shape: number[] }> {
    const out = await this.encoder.run({ pixels: this.pixelsTensor(pixels, count) });
    return { logits: out.logits.data as Float32Array, codes: out.codes.data as Int32Array, shape: [...out.logits.dims] };
  }

  /** Square images (N, C, H, H) in [0, 1] -> argmax codes i32 (N, h, h). */
  async encode(pixels: Float32Array, count: number): Promise<Int32Array> {
    const out = await this.encoder.run({ pixels: this.pixelsTensor(pixels, count) }, ['codes']);
    return out.codes.data as Int32Array;
  }

  /** Square codes i32 (N, h, h) -> images (N, C, f h, f h) in [0, 1]. */
  async decode(codes: Int32Array, count: number): Promise<Float32Array> {
    const side = Math.round(Math.sqrt(codes.length / count));
    if (count * side * side !== codes.length) throw new Error(`dalle: ${codes.length} codes are not ${count} square grids`);
    const V = this.info.arch.vocab_size;
    for (let i = 0; i < codes.length; i++) {
      // onnxruntime's Gather rejects an index outside [-V, V) with an error; a negative one would wrap silently.
      if (!(codes[i] >= 0 && codes[i] < V)) throw new Error(`dalle: dVAE code ${codes[i]} at ${i} is outside [0, ${V})`);
    }
    // A view into a larger buffer (a batch of a token file) is copied, so the tensor owns exactly its own data.
    const own = codes.byteOffset === 0 && codes.byteLength === codes.buffer.byteLength ? codes : Int32Array.from(codes);
    const feed = new (loadOnnxRuntime().Tensor)('int32', own, [count, side, side]);
    const out = await this.decoder.run({ codes: feed });
    return out.pixels.data as Float32Array;
  }

  async release(): Promise<void> {
    try {
      await this.encoder.release();
      await this.decoder.release();
    } finally {
      this.cleanup?.();
    }
  }
}

/**
 * The ONNX runner `--runtime onnx` uses for a loaded dVAE: the export in `dir` (checked against the dVAE's
 * architecture and weights: `--onnx DIR` beside `--dvae RUN` must be an export of RUN), or, without `dir`, the dVAE
 * exported on the fly to a temporary folder that release() removes.
 */
export async function openOnnxDvaeFor(src: DvaeExportSource, dir: string | undefined, options: SessionOptions = {}): Promise<OnnxDvae> {
  if (dir === undefined) return OnnxDvae.fromModel(src, options);
  const expectWeights: ExpectedWeights = {
    checkpoint: src.checkpoint,
    step: src.step,
    weightsSha256: src.weightsSha256 ?? weightsDigest(src.model.namedParameters()),
    reexport: `dalle export --dvae ${src.checkpoint} --out ${dir}`,
    otherwise: 'leave --onnx out to export the --dvae given on the fly',
  };
  return OnnxDvae.open(dir, { ...options, expectArch: src.model.arch, expectWeights });
}
