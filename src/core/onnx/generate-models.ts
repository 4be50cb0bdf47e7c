/**
 * The prior and dVAE of `dalle generate --runtime onnx`: onnxruntime-node sessions on ONNX graphs exported from the
 * loaded models, behind the generation loop's asynchronous interface (sampler.ts AsyncStepPrior) and a decodeBatch
 * function, so sampling (filters, draws, guidance, cache order) is the engine run's own.
 *
 * Where the graphs come from:
 *   --onnx DIR   a folder `dalle export --prior RUN --dvae RUN --out DIR` wrote (prior.onnx, prior.json, dvae-encoder.onnx,
 *                dvae-decoder.onnx, dvae.json); missing files, another architecture, or other weights (the digest
 *                prior.json and dvae.json record, weights-check.ts) are errors, and so is an export that records none.
 *   otherwise    an export cache: $DALLE_ONNX_CACHE, else <os tmpdir>/dalle-onnx-cache-<uid>, one folder per model named by
 *                the sha256 of its export format, architecture and weights digest (prior-<hash>/, dvae-<hash>/): the
 *                weights themselves, not the checkpoint's path, so a checkpoint rewritten in place gets a new export.
 *                A folder is written under a temporary name and renamed into place when complete (concurrent runs
 *                race harmlessly), and reused while the weights are the same.
 * Either way, before generating, the graphs are run beside the engine on one fixed caption (prefill and a step) and
 * one code grid: logits or pixels that differ by more than MATCH_TOLERANCE mean they were exported from another model
 * (an error for --onnx DIR; a stale or damaged cache folder is exported again).
 * Key: rows = batch rows (doubled with guidance), Tt = text_len, r = prompted tokens, V = image vocabulary.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { EventSink } from '../events';
import type { TrainedDvae } from '../models/dvae/load';
import { padText } from '../models/prior';
import type { TrainedPrior } from '../models/prior/load';
import type { AsyncStepPrior } from '../sample/sampler';
import { Tensor, noGrad, tidy } from '../tensor';
import { weightsDigest } from '../nn/weights-digest';
import { DVAE_DECODER_FILE, DVAE_ENCODER_FILE, DVAE_EXPORT_FORMAT, DVAE_EXPORT_INFO_FILE, exportDvaeOnnx } from './dvae-export';
import { OnnxDvae, archDifference, readDvaeExportInfo } from './dvae-runner';
import { OnnxModelError } from './errors';
import { PRIOR_EXPORT_FORMAT, PRIOR_EXPORT_INFO_FILE, PRIOR_FILE, exportPriorOnnx } from './prior-export';
import { OnnxPrior, OnnxPriorCache, readPriorExportInfo } from './prior-runner';
import type { ExpectedWeights } from './weights-check';

/** Largest |onnx - engine| difference of logits or pixels accepted as "the same model" (f32 graphs of the same ops). */
export const MATCH_TOLERANCE = 1e-3;

/** Marks a complete cache folder; holds what it was exported from. */
const CACHE_STAMP = 'export.json';

/**
 * Where exports are cached without --onnx DIR: $DALLE_ONNX_CACHE, else <tmpdir>/dalle-onnx-cache-<uid> (one per user:
 * the folders are made private by mkdtemp, so users sharing a tmpdir cannot share them).
 */
export function onnxCacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  if (env.DALLE_ONNX_CACHE && env.DALLE_ONNX_CACHE.trim() !== '') return path.resolve(env.DALLE_ONNX_CACHE);
  return path.join(os.tmpdir(), `dalle-onnx-cache-${typeof process.getuid === 'function' ? process.getuid() : os.userInfo().username}`);
}

/** The ONNX prior behind the loop's asynchronous interface. */
export function onnxStepPrior(onnx: OnnxPrior): AsyncStepPrior {
  const logitsOf = async (run: Promise<Tensor>): Promise<Float32Array> => {
    const out = await run;
    try {
      return out.toArray() as Float32Array;
    } finally {
      out.dispose();
    }
  };
  return {
    async: true,
    textLen: onnx.textLen,
    gridSide: onnx.gridSide,
    imageVocab: onnx.imageVocab,
    textVocab: onnx.textVocab,
    createCache: (rows) => onnx.createCache(rows),
    prefill: async (cache, text, prefix, rows) => {
      // (rows, Tt) and (rows, r) as the runner's i32 tensors; freed once the run has read them.
      const r = prefix.length / rows;
      const textT = Tensor.from(text, [rows, onnx.textLen], 'i32');
      const prefixT = r > 0 ? Tensor.from(prefix, [rows, r], 'i32') : undefined;
      try {
        return await logitsOf(onnx.prefill(cache as OnnxPriorCache, textT, prefixT));
      } finally {
        textT.dispose();
        prefixT?.dispose();
      }
    },
    step: async (cache, tokens) => {
      const tokensT = Tensor.from(tokens, [tokens.length], 'i32');
      try {
        return await logitsOf(onnx.step(cache as OnnxPriorCache, tokensT));
      } finally {
        tokensT.dispose();
      }
    },
  };
}

export interface OnnxGenerationOptions {
  /** An export folder (`dalle export --prior --dvae --out DIR`); absent: the export cache. */
  readonly dir?: string;
  /** The cache root without `dir` (default onnxCacheRoot()). */
  readonly cacheRoot?: string;
  /** onnxruntime intra-op threads (0 or absent: its default). */
  readonly threads?: number;
  /** The --prior / --dvae arguments as the user gave them (for the export command in hints). */
  readonly priorArg?: string;
  readonly dvaeArg?: string;
  readonly events?: EventSink;
}

export interface OnnxGenerationModels {
  readonly prior: AsyncStepPrior;
  readonly dvae: OnnxDvae;
  /** Folders the graphs were read from, and whether they were given, found in the cache, or exported now. */
  readonly dirs: { readonly prior: string; readonly dvae: string };
  readonly source: 'given' | 'cached' | 'exported';
  /** The agreement check against the engine (see the module comment). */
  readonly check: { readonly logitsMaxAbsDiff: number; readonly pixelsMaxAbsDiff: number };
  /** codes (n, h, w) -> images (n, 3, R, R) through the ONNX decoder. */
  decodeBatch(codes: Int32Array, count: number): Promise<Float32Array>;
  /** pixels (n, 3, R, R) -> codes (n, h, w) through the ONNX encoder (image prompts). */
  encodeBatch(pixels: Float32Array, count: number): Promise<Int32Array>;
  release(): Promise<void>;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return Number.isNaN(m) ? Infinity : m;
}

/**
 * max |logits| difference between the engine's prior and the ONNX one on one fixed caption: the prefill's logits and
 * one step's (with image token 0). Another checkpoint's weights differ far above MATCH_TOLERANCE.
 */
async function priorDifference(prior: TrainedPrior, onnx: OnnxPrior): Promise<number> {
  const model = prior.model;
  const L = model.textLen;
  const ids = Array.from({ length: Math.min(L, 4) }, (_, i) => (7 * i + 1) % model.textVocab);
  const text = padText([ids], L, model.textVocab); // (1, L)
  const engineCache = model.createCache(1);
  const onnxCache = onnx.createCache(1);
  const textT = Tensor.from(text, [1, L], 'i32');
  const token = Tensor.from(Int32Array.of(0), [1], 'i32');
  try {
    let worst = 0;
    const want0 = noGrad(() => tidy(() => model.prefill(engineCache, textT).toArray() as Float32Array));
    const got0 = await onnx.prefill(onnxCache, textT);
    worst = Math.max(worst, maxAbsDiff(got0.toArray() as Float32Array, want0));
    got0.dispose();
    if (model.gridSide * model.gridSide > 1) {
      const want1 = noGrad(() => tidy(() => model.step(engineCache, token).toArray() as Float32Array));
      const got1 = await onnx.step(onnxCache, token);
      worst = Math.max(worst, maxAbsDiff(got1.toArray() as Float32Array, want1));
      got1.dispose();
    }
    return worst;
  } finally {
    textT.dispose();
    token.dispose();
    engineCache.dispose();
    onnxCache.dispose();
  }
}

/** max |pixel| difference between the engine's decoder and the ONNX one on one fixed code grid. */
async function dvaeDifference(dvae: TrainedDvae, onnx: OnnxDvae): Promise<number> {
  const h = dvae.gridSide;
  const V = dvae.model.arch.vocab_size;
  const codes = Int32Array.from({ length: h * h }, (_, i) => (i * 37 + 11) % V); // (1, h, h)
  const want = noGrad(() => tidy(() => dvae.model.decode(Tensor.from(codes, [1, h, h], 'i32')).toArray())) as Float32Array;
  return maxAbsDiff(await onnx.decode(codes, 1), want);
}

/** The cache folder name of a model: kind-<first 16 hex of sha256(format, architecture, weights digest)>. */
function cacheName(kind: 'prior' | 'dvae', format: string, arch: unknown, weightsSha256: string): string {
  const key = createHash('sha256').update(JSON.stringify({ format, arch, weights: weightsSha256 })).digest('hex');
  return `${kind}-${key.slice(0, 16)}`;
}

/**
 * root/name, complete: reused when its stamp is there, else exported into root/.name.tmp-XXXX and renamed into place.
 * Returns the folder and whether it was exported now.
 */
function ensureCached(root: string, name: string, stamp: object, write: (dir: string) => void): { dir: string; exported: boolean } {
  const dir = path.join(root, name);
  if (fs.existsSync(path.join(dir, CACHE_STAMP))) return { dir, exported: false };
  let tmp: string;
  try {
    fs.mkdirSync(root, { recursive: true });
    tmp = fs.mkdtempSync(path.join(root, `.${name}.tmp-`));
  } catch (error) {
    throw new OnnxModelError(
      `cannot write the ONNX export cache in ${root}: ${error instanceof Error ? error.message : String(error)}`,
      'set DALLE_ONNX_CACHE to a writable folder, or export once with `dalle export --prior RUN --dvae RUN --out DIR` and pass --onnx DIR',
    );
  }
  try {
    write(tmp);
    fs.writeFileSync(path.join(tmp, CACHE_STAMP), `${JSON.stringify({ ...stamp, created: new Date().toISOString() }, null, 2)}\n`);
    // A folder without a stamp (left by hand or by an older version) is replaced; one with a stamp came from a
    // concurrent run that finished first, and is used as is.
    if (fs.existsSync(dir) && !fs.existsSync(path.join(dir, CACHE_STAMP))) fs.rmSync(dir, { recursive: true, force: true });
    try {
      fs.renameSync(tmp, dir);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (!((code === 'ENOTEMPTY' || code === 'EEXIST') && fs.existsSync(path.join(dir, CACHE_STAMP)))) throw error;
      fs.rmSync(tmp, { recursive: true, force: true });
      return { dir, exported: false };
    }
    return { dir, exported: true };
  } catch (error) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw error;
  }
}

/** The files `dalle export --prior --dvae` writes that `dir` lacks. */
function missingExportFiles(dir: string): string[] {
  return [PRIOR_FILE, PRIOR_EXPORT_INFO_FILE, DVAE_ENCODER_FILE, DVAE_DECODER_FILE, DVAE_EXPORT_INFO_FILE].filter((f) => !fs.existsSync(path.join(dir, f)));
}

/**
 * Opens the ONNX prior and dVAE for generation with `prior` and `dvae` (loaded by the engine: their tokenizer,
 * config and the agreement check need them): from options.dir, or from the export cache. See the module comment.
 */
export async function openOnnxGeneration(prior: TrainedPrior, dvae: TrainedDvae, options: OnnxGenerationOptions = {}): Promise<OnnxGenerationModels> {
  const threads = options.threads;
  const exportCommand = (out: string): string => `dalle export --prior ${options.priorArg ?? prior.checkpoint} --dvae ${options.dvaeArg ?? dvae.checkpoint} --out ${out}`;
  // The identity of the weights given: what an export must record to be used for them.
  const priorWeights = weightsDigest(prior.model.namedParameters());
  const dvaeWeights = weightsDigest(dvae.model.namedParameters());
  const expectFrom = (dir: string, otherwise: string): { prior: ExpectedWeights; dvae: ExpectedWeights } => ({
    prior: { checkpoint: prior.checkpoint, step: prior.step, weightsSha256: priorWeights, reexport: exportCommand(dir), otherwise },
    dvae: { checkpoint: dvae.checkpoint, step: dvae.step, weightsSha256: dvaeWeights, reexport: exportCommand(dir), otherwise },
  });

  if (options.dir !== undefined) {
    const dir = options.dir;
    const stat = fs.statSync(dir, { throwIfNoEntry: false });
    if (stat === undefined || !stat.isDirectory()) {
      throw new OnnxModelError(`--onnx ${dir} ${stat === undefined ? 'does not exist' : 'is not a folder'}`, `make it with: ${exportCommand(dir)} (or leave --onnx out to export into the cache)`);
    }
    const missing = missingExportFiles(dir);
    if (missing.length > 0) {
      throw new OnnxModelError(
        `--onnx ${dir} is not a complete export of a prior and a dVAE: ${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} missing`,
        `export both models into it: ${exportCommand(dir)}`,
      );
    }
    const priorInfo = readPriorExportInfo(dir);
    const dvaeInfo = readDvaeExportInfo(dir);
    const fix = `export the models you generate with: ${exportCommand(dir)} (or leave --onnx out to export into the cache)`;
    const priorArch = prior.config.model;
    for (const key of Object.keys(priorArch) as (keyof typeof priorArch)[]) {
      if (priorInfo.arch[key] !== priorArch[key]) {
        throw new OnnxModelError(
          `the prior exported in ${dir} (from ${priorInfo.checkpoint}, update ${priorInfo.step}) is not the prior given (${prior.checkpoint}): model.${key} ${priorInfo.arch[key]} vs ${priorArch[key]}`,
          fix,
        );
      }
    }
    const dvaeDiff = archDifference(dvaeInfo.arch, dvae.model.arch) ?? (dvaeInfo.resolution !== dvae.resolution ? `resolution ${dvaeInfo.resolution} vs ${dvae.resolution}` : undefined);
    if (dvaeDiff !== undefined) {
      throw new OnnxModelError(`the dVAE exported in ${dir} (from ${dvaeInfo.checkpoint}, update ${dvaeInfo.step}) is not the dVAE given (${dvae.checkpoint}): ${dvaeDiff}`, fix);
    }
    const opened = await openPair(dir, dir, threads, expectFrom(dir, 'leave --onnx out to export into the cache'));
    try {
      const check = await checkAgainstEngine(prior, dvae, opened);
      if (!(check.logitsMaxAbsDiff <= MATCH_TOLERANCE)) {
        throw new OnnxModelError(
          `the prior exported in ${dir} (from ${priorInfo.checkpoint}, update ${priorInfo.step}) does not compute what the prior given computes ` +
            `(${prior.checkpoint}, update ${prior.step}): logits differ by up to ${check.logitsMaxAbsDiff.toExponential(2)} on a test caption (tolerance ${MATCH_TOLERANCE}), so it has other weights`,
          fix,
        );
      }
      if (!(check.pixelsMaxAbsDiff <= MATCH_TOLERANCE)) {
        throw new OnnxModelError(
          `the dVAE exported in ${dir} (from ${dvaeInfo.checkpoint}, update ${dvaeInfo.step}) does not decode as the dVAE given does ` +
            `(${dvae.checkpoint}, update ${dvae.step}): pixels differ by up to ${check.pixelsMaxAbsDiff.toExponential(2)} on a test grid (tolerance ${MATCH_TOLERANCE}), so it has other weights`,
          fix,
        );
      }
      return finish(opened, { prior: path.resolve(dir), dvae: path.resolve(dir) }, 'given', check);
    } catch (error) {
      await releasePair(opened);
      throw error;
    }
  }

  // The export cache: one folder per model, keyed by its weights.
  const root = options.cacheRoot ?? onnxCacheRoot();
  const priorName = cacheName('prior', PRIOR_EXPORT_FORMAT, prior.config.model, priorWeights);
  const dvaeName = cacheName('dvae', DVAE_EXPORT_FORMAT, { arch: dvae.model.arch, resolution: dvae.resolution }, dvaeWeights);
  const stampOf = (checkpoint: string, step: number, weights: string): object => ({ checkpoint: path.resolve(checkpoint), step, weights_sha256: weights });
  for (let attempt = 0; ; attempt++) {
    const exportedNow: string[] = [];
    const priorDir = ensureCached(root, priorName, stampOf(prior.checkpoint, prior.step, priorWeights), (dir) => {
      options.events?.emit({ type: 'stage', name: 'exporting', detail: `the prior to ONNX in ${path.join(root, priorName)} (once: reused while its weights are the same)` });
      exportPriorOnnx({ model: prior.model, arch: prior.config.model, checkpoint: prior.checkpoint, step: prior.step, weightsSha256: priorWeights }, dir);
    });
    if (priorDir.exported) exportedNow.push(priorDir.dir);
    const dvaeDir = ensureCached(root, dvaeName, stampOf(dvae.checkpoint, dvae.step, dvaeWeights), (dir) => {
      options.events?.emit({ type: 'stage', name: 'exporting', detail: `the dVAE to ONNX in ${path.join(root, dvaeName)} (once: reused while its weights are the same)` });
      exportDvaeOnnx({ ...dvae, weightsSha256: dvaeWeights }, dir);
    });
    if (dvaeDir.exported) exportedNow.push(dvaeDir.dir);
    let opened: OpenedPair | undefined;
    let problem: string;
    try {
      // A cached folder of other weights (altered, or left by another version) fails here and is exported again.
      opened = await openPair(priorDir.dir, dvaeDir.dir, threads, expectFrom(root, 'remove the cache folder'));
      const check = await checkAgainstEngine(prior, dvae, opened);
      if (check.logitsMaxAbsDiff <= MATCH_TOLERANCE && check.pixelsMaxAbsDiff <= MATCH_TOLERANCE) {
        return finish(opened, { prior: priorDir.dir, dvae: dvaeDir.dir }, exportedNow.length > 0 ? 'exported' : 'cached', check);
      }
      problem = `the graphs differ from the engine by up to ${check.logitsMaxAbsDiff.toExponential(2)} (logits) and ${check.pixelsMaxAbsDiff.toExponential(2)} (pixels), tolerance ${MATCH_TOLERANCE}`;
      await releasePair(opened);
    } catch (error) {
      if (opened) await releasePair(opened);
      if (!(error instanceof OnnxModelError)) throw error;
      problem = error.message;
    }
    // A damaged or stale cached export (say, made by an older version of the exporter): export it again, once.
    if (attempt === 0 && exportedNow.length < 2) {
      options.events?.emit({ type: 'log', level: 'warn', message: `the cached ONNX export in ${root} cannot be used (${problem}); exporting again` });
      for (const dir of [priorDir.dir, dvaeDir.dir]) if (!exportedNow.includes(dir)) fs.rmSync(dir, { recursive: true, force: true });
      continue;
    }
    throw new OnnxModelError(`the ONNX export of the prior and dVAE just written to ${root} does not match the engine: ${problem}`, 'run with --runtime engine, and report this as a bug in `dalle export`');
  }
}

interface OpenedPair {
  readonly prior: OnnxPrior;
  readonly dvae: OnnxDvae;
}

async function openPair(priorDir: string, dvaeDir: string, threads: number | undefined, expect: { prior: ExpectedWeights; dvae: ExpectedWeights }): Promise<OpenedPair> {
  const prior = await OnnxPrior.open(priorDir, { threads, expectWeights: expect.prior });
  try {
    return { prior, dvae: await OnnxDvae.open(dvaeDir, { threads, expectWeights: expect.dvae }) };
  } catch (error) {
    await prior.release();
    throw error;
  }
}

async function releasePair(pair: OpenedPair): Promise<void> {
  try {
    await pair.prior.release();
  } finally {
    await pair.dvae.release();
  }
}

async function checkAgainstEngine(prior: TrainedPrior, dvae: TrainedDvae, pair: OpenedPair): Promise<OnnxGenerationModels['check']> {
  if (pair.prior.gridSide !== prior.model.gridSide || pair.prior.imageVocab !== prior.model.imageVocab || pair.prior.textLen !== prior.model.textLen) {
    return { logitsMaxAbsDiff: Infinity, pixelsMaxAbsDiff: Infinity };
  }
  return { logitsMaxAbsDiff: await priorDifference(prior, pair.prior), pixelsMaxAbsDiff: await dvaeDifference(dvae, pair.dvae) };
}

function finish(pair: OpenedPair, dirs: OnnxGenerationModels['dirs'], source: OnnxGenerationModels['source'], check: OnnxGenerationModels['check']): OnnxGenerationModels {
  return {
    prior: onnxStepPrior(pair.prior),
    dvae: pair.dvae,
    dirs,
    source,
    check,
    decodeBatch: (codes, count) => pair.dvae.decode(codes, count),
    encodeBatch: (pixels, count) => pair.dvae.encode(pixels, count),
    release: () => releasePair(pair),
  };
}
