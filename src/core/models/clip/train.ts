/**
 * Training the small CLIP on image + caption pairs, saving and loading a run, and the run as a feature extractor.
 *
 * A run directory holds clip.json (the architecture and the tokenizer file), tokenizer.json (trained on the data's
 * captions when none is given), metrics.jsonl, and checkpoints/step-N (model, optimizer, state: the project's
 * checkpoint format, `latest` pointing at the newest). Batches come from the shared seeded loader; each batch's
 * captions are tokenized without dropout, and its images get a random affine augmentation (scale and shift, white
 * fill; no flips, no colour changes: captions name directions and colours) unless `augment` is 0.
 *
 * With `val` (held-out pairs), every `evalEvery` updates the run measures text -> image top-1 retrieval within pools
 * of `valPool` val pairs (as `dalle evaluate clip-score` does), logs it to metrics.jsonl (`split: "val"`), keeps a
 * checkpoint of each new best and points RUN/best at it; `loadClip(RUN)` then opens the best checkpoint, not the
 * latest, so the checkpoint a user gets is chosen on the validation split, never on a test split.
 * What is missing compared with train-dvae: exact resume (a run always starts from scratch, into a folder without
 * checkpoints) and Ctrl-C checkpoints (a signal ends it at once; the run's lock is released).
 * Key: B = batch, L = context, R = image side, E = embedding size.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DataLoader, openDataSource } from '../../data';
import { DataError, SkipError } from '../../data/errors';
import { DEFAULT_MAX_INPUT_PIXELS, decodeImage, rgbToChw } from '../../data/image';
import { EventSink, silentSink } from '../../events';
import { writeFileAtomicSync } from '../../io/atomic';
import { RunLock, acquireRunLock } from '../../io/run-lock';
import { TextFileError } from '../../io/errors';
import { readTextFileSync, TEXT_LIMITS } from '../../io/text-file';
import { Device, Tensor, backward, noGrad, readScalars, tidy, zeroGrad } from '../../tensor';
import { Philox } from '../../tensor/rng';
import { TextTokenizer } from '../../text';
import { AdamW } from '../../train/adamw';
import { CHECKPOINTS_DIR, CheckpointError, checkpointDirName, listCheckpoints, loadCheckpointModel, resolveCheckpoint, writeCheckpoint } from '../../train/checkpoint';
import { removeInterruptedWrites } from '../../train/run-folder';
import { warmupCosine } from '../../train/schedule';
import { CLIP_EMOJI_ARCH, Clip, ClipArch, clipDecays, l2Normalize } from './model';

export const CLIP_INFO_FILE = 'clip.json';
export const CLIP_TOKENIZER_FILE = 'tokenizer.json';
export const CLIP_FORMAT = 'dalle-clip-1';
/** RUN/best: one line, `checkpoints/step-N`, the checkpoint with the best validation retrieval. */
export const CLIP_BEST_FILE = 'best';

export interface ClipRunInfo {
  readonly format: typeof CLIP_FORMAT;
  readonly arch: ClipArch;
  readonly tokenizer: string;
  readonly lowercase: boolean;
}

export interface ClipTrainOptions {
  readonly data: string;
  readonly out: string;
  readonly steps: number;
  readonly batchSize: number;
  readonly lr: number;
  readonly weightDecay: number;
  readonly warmupSteps: number;
  readonly seed: number;
  /** Where the model trains (runtime.device; default the CPU): it is initialized on the host and moved there once. */
  readonly device?: Device;
  /** An existing tokenizer.json; otherwise one of `vocab` tokens is trained on the data's captions. */
  readonly tokenizer?: string;
  readonly vocab?: number;
  readonly arch?: Partial<Omit<ClipArch, 'vocab'>>;
  readonly logEvery?: number;
  readonly checkpointEvery?: number;
  /** Strength of the random affine augmentation (max relative scale change and shift); 0 = none. Default 0.1. */
  readonly augment?: number;
  /** Held-out image + caption pairs measured every `evalEvery` updates; the best checkpoint is kept as RUN/best. */
  readonly val?: string;
  readonly evalEvery?: number;
  /** Pairs per retrieval pool on `val` (default 100, as the zero-shot figure). */
  readonly valPool?: number;
  readonly events?: EventSink;
}

/** Text -> image and image -> text top-1 within consecutive pools, and the mean CLIP score. */
export interface ClipRetrieval {
  readonly pairs: number;
  readonly pools: number;
  readonly textToImageTop1: number;
  readonly imageToTextTop1: number;
  readonly clipScore: number;
}

export interface ClipTrainResult {
  readonly steps: number;
  readonly loss: number;
  /** Top-1 accuracy of image -> caption within the last logged batch. */
  readonly batchAccuracy: number;
  readonly checkpoint: string;
  /** The checkpoint with the best validation text -> image top-1 (only with `val`) and that top-1. */
  readonly best?: { readonly checkpoint: string; readonly step: number; readonly textToImageTop1: number };
  readonly parameters: number;
  readonly seconds: number;
}

/**
 * Trains a CLIP into `out` and returns where its final checkpoint is. The run directory is locked meanwhile
 * (io/run-lock.ts), and everything (data, tokenizer, validation pairs) is checked before the first write into it.
 */
export async function trainClip(options: ClipTrainOptions): Promise<ClipTrainResult> {
  const events = options.events ?? silentSink;
  const lock = acquireRunLock(options.out, { command: 'dalle train-clip', events });
  try {
    return await trainClipLocked(options, lock, events);
  } finally {
    lock.release();
  }
}

async function trainClipLocked(options: ClipTrainOptions, lock: RunLock, events: EventSink): Promise<ClipTrainResult> {
  const out = options.out;
  if (listCheckpoints(out).length > 0) {
    throw new CheckpointError(`${out} already holds a trained CLIP (${CHECKPOINTS_DIR}/)`, 'choose a new --out (a CLIP run cannot be resumed), or delete that run to train it again');
  }
  const source = await openDataSource(options.data, { requireCaptions: true });
  if (source.records.length < 2) {
    throw new DataError(`${options.data} has ${source.records.length} images with captions; CLIP needs pairs`, 'give a folder of images with .txt captions, or a manifest with captions');
  }
  let tokenizer: TextTokenizer;
  const tokenizerFile = path.join(out, CLIP_TOKENIZER_FILE);
  if (options.tokenizer) {
    tokenizer = TextTokenizer.load(options.tokenizer);
  } else {
    events.emit({ type: 'stage', name: 'tokenizer', detail: `training ${options.vocab ?? 1024} tokens on ${source.records.length} captions` });
    const captions = source.records.flatMap((r) => r.captions);
    tokenizer = await TextTokenizer.train(captions, { vocabSize: options.vocab ?? 1024, lowercase: true });
  }
  const arch: ClipArch = { ...CLIP_EMOJI_ARCH, ...options.arch, vocab: tokenizer.vocabSize };
  const info: ClipRunInfo = { format: CLIP_FORMAT, arch, tokenizer: CLIP_TOKENIZER_FILE, lowercase: tokenizer.lowercase };
  const val = options.val ? await readPairs(options.val, arch.resolution) : undefined;
  const valPool = Math.max(2, options.valPool ?? 100);
  if (val && val.captions.length < valPool) {
    throw new DataError(`${options.val} has ${val.captions.length} readable pairs, fewer than one retrieval pool of ${valPool}`, 'give a larger validation set or a smaller pool');
  }

  const rng = new Philox(options.seed);
  const model = new Clip(arch, rng.fork(1)).to(options.device ?? 'cpu');
  const named = model.namedParameters();
  const group = (decay: boolean) => named.filter(([n]) => clipDecays(n) === decay).map(([name, tensor]) => ({ name, tensor }));
  const optimizer = new AdamW([{ params: group(true) }, { params: group(false), weightDecay: 0 }], {
    lr: options.lr, beta1: 0.9, beta2: 0.98, eps: 1e-6, weightDecay: options.weightDecay,
  });
  const batchSize = Math.min(options.batchSize, source.records.length);
  const loader = new DataLoader(source, { batchSize, resolution: arch.resolution, seed: options.seed, shuffle: true });
  const lr = warmupCosine(options.lr, options.lr * 0.05, Math.min(options.warmupSteps, options.steps), options.steps);

  // All checked (the model and its optimizer are made): the first write.
  removeInterruptedWrites(lock, [CHECKPOINTS_DIR], events);
  tokenizer.save(tokenizerFile);
  writeFileAtomicSync(path.join(out, CLIP_INFO_FILE), `${JSON.stringify(info, null, 2)}\n`);
  const metricsFile = path.join(out, 'metrics.jsonl');
  writeFileAtomicSync(metricsFile, '');
  const logEvery = options.logEvery ?? 10;
  const augment = options.augment ?? 0.1;
  const augmentRng = rng.fork(2);
  const evalEvery = options.evalEvery ?? 100;
  const bestFile = path.join(out, CLIP_BEST_FILE);
  fs.rmSync(bestFile, { force: true });
  let best: { checkpoint: string; step: number; textToImageTop1: number } | undefined;
  const started = performance.now();
  let last = { loss: NaN, accuracy: NaN };
  let checkpoint = '';
  const save = (step: number, metrics: Record<string, number> = {}): void => {
    checkpoint = writeCheckpoint(out, {
      model: named,
      optimizer: optimizer.stateTensors(),
      state: { kind: 'clip', step, optimizer_step: optimizer.step, rng: {}, data: loader.state(), metrics },
      keep: 0,
    });
    // Keep the newest two and the best; the others go.
    const steps = listCheckpoints(out);
    for (const s of steps.slice(0, -2)) {
      if (s !== best?.step) fs.rmSync(path.join(out, CHECKPOINTS_DIR, checkpointDirName(s)), { recursive: true, force: true });
    }
    events.emit({ type: 'artifact', kind: 'checkpoint', path: checkpoint });
  };
  const validate = (step: number): void => {
    if (!val) return;
    const r = measureRetrieval({ model, tokenizer }, val, valPool);
    const improved = !best || r.textToImageTop1 > best.textToImageTop1;
    const line = { step, split: 'val', val_t2i_top1: r.textToImageTop1, val_i2t_top1: r.imageToTextTop1, val_clip_score: r.clipScore, val_pairs: r.pools * valPool, best: improved };
    fs.appendFileSync(metricsFile, `${JSON.stringify(line)}\n`);
    events.emit({ type: 'metrics', step, split: 'val', values: { t2i_top1: r.textToImageTop1, i2t_top1: r.imageToTextTop1, clip_score: r.clipScore } });
    if (improved) {
      best = { checkpoint: '', step, textToImageTop1: r.textToImageTop1 };
      save(step, { val_t2i_top1: r.textToImageTop1 });
      best.checkpoint = checkpoint;
      writeFileAtomicSync(bestFile, `${CHECKPOINTS_DIR}/${checkpointDirName(step)}\n`);
    }
  };
  try {
    events.emit({ type: 'stage', name: 'training', detail: `${model.parameterCount()} parameters, ${options.steps} updates of ${batchSize} pairs` });
    for (let step = 0; step < options.steps; step++) {
      const batch = await loader.next();
      const packed = batch.captions.map((c) => model.packTokens(tokenizer.encode(c)));
      const done = step + 1;
      const logging = done % logEvery === 0 || done === options.steps;
      // Transfers of a step: the batch in; the loss and the logit scale out (one copy); at a log step, the logits.
      const values = tidy(() => {
        const pixels = Tensor.from(augment > 0 ? augmentImages(batch.images, batchSize, arch.resolution, augment, augmentRng) : batch.images, batch.shape, 'f32', model.device);
        const tokens = Tensor.from(concatRows(packed.map((p) => p.row)), [batchSize, arch.context], 'i32', model.device);
        zeroGrad(model.parameters());
        const { loss, logits } = model.loss(pixels, tokens, packed.map((p) => p.end));
        backward(loss);
        optimizer.update(lr(step));
        const [lossValue, logitScale] = readScalars([loss, model.logitScale]);
        return { loss: lossValue, logitScale, accuracy: logging ? diagonalAccuracy(logits.toArray() as Float32Array, batchSize) : NaN };
      });
      const logitScale = clampLogitScale(model, values.logitScale);
      if (!Number.isFinite(values.loss)) throw new Error(`dalle: the CLIP loss became ${values.loss} at update ${step + 1}; lower --lr`);
      last = values;
      if (logging) {
        const line = { step: done, loss: values.loss, batch_accuracy: values.accuracy, lr: lr(step), temperature: 1 / Math.exp(logitScale), seconds: (performance.now() - started) / 1000 };
        fs.appendFileSync(metricsFile, `${JSON.stringify(line)}\n`);
        events.emit({ type: 'metrics', step: done, split: 'train', values: { loss: values.loss, batch_accuracy: values.accuracy } });
      }
      events.emit({ type: 'progress', task: 'train-clip', step: done, total: options.steps, unit: 'update', metrics: { loss: values.loss } });
      if (val && (done % evalEvery === 0 || done === options.steps)) validate(done);
      if (options.checkpointEvery && done % options.checkpointEvery === 0 && done < options.steps && best?.step !== done) save(done);
    }
    events.emit({ type: 'done', task: 'train-clip' });
    if (best?.step !== options.steps) save(options.steps);
    return {
      steps: options.steps,
      loss: last.loss,
      batchAccuracy: last.accuracy,
      checkpoint,
      best,
      parameters: model.parameterCount(),
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    loader.close();
    optimizer.dispose();
    model.dispose();
  }
}

/**
 * CLIP clips exp(t) at 100 so the logits cannot blow up; the parameter is set back after any update past it.
 * `value` is the parameter's value after the update (read out with the step's loss); returns the value it has now.
 */
function clampLogitScale(model: Clip, value: number): number {
  const max = Float32Array.of(Math.log(100));
  if (value <= max[0]) return value;
  model.logitScale.backend.copyIn(model.logitScale.address, max);
  return max[0];
}

function concatRows(rows: readonly Int32Array[]): Int32Array {
  const out = new Int32Array(rows.reduce((s, r) => s + r.length, 0));
  let o = 0;
  for (const r of rows) {
    out.set(r, o);
    o += r.length;
  }
  return out;
}

/** Fraction of rows of a (B, B) logit matrix whose largest entry is on the diagonal. */
export function diagonalAccuracy(logits: ArrayLike<number>, B: number): number {
  let hits = 0;
  for (let i = 0; i < B; i++) {
    let best = 0;
    for (let j = 1; j < B; j++) if (logits[i * B + j] > logits[i * B + best]) best = j;
    if (best === i) hits++;
  }
  return hits / B;
}

/**
 * A random affine warp of each image (B, 3, R, R) in [0, 1]: scale by exp(u * ln(1 + strength)) about the centre and
 * shift by up to strength * R pixels on each axis, bilinear, white outside (the emoji background). No flips or colour
 * changes: captions name directions and colours. Returns a new array.
 */
export function augmentImages(images: Float32Array, B: number, R: number, strength: number, rng: Philox): Float32Array {
  const out = new Float32Array(images.length);
  const draws = rng.fillUniform(new Float32Array(3 * B));
  const plane = R * R;
  const c0 = (R - 1) / 2;
  for (let b = 0; b < B; b++) {
    const scale = Math.exp((2 * draws[3 * b] - 1) * Math.log(1 + strength));
    const dx = (2 * draws[3 * b + 1] - 1) * strength * R;
    const dy = (2 * draws[3 * b + 2] - 1) * strength * R;
    for (let y = 0; y < R; y++) {
      // Output pixel (x, y) reads the source at ((x - c0 - dx) / scale + c0, (y - c0 - dy) / scale + c0).
      const sy = (y - c0 - dy) / scale + c0;
      const y0 = Math.floor(sy);
      const fy = sy - y0;
      for (let x = 0; x < R; x++) {
        const sx = (x - c0 - dx) / scale + c0;
        const x0 = Math.floor(sx);
        const fx = sx - x0;
        for (let c = 0; c < 3; c++) {
          const base = (b * 3 + c) * plane;
          const at = (yy: number, xx: number): number => (yy < 0 || yy >= R || xx < 0 || xx >= R ? 1 : images[base + yy * R + xx]);
          out[base + y * R + x] = (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1)) + fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
        }
      }
    }
  }
  return out;
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
export function measureRetrieval(clip: Pick<LoadedClip, 'model' | 'tokenizer'>, pairs: ClipPairs, pool: number): ClipRetrieval {
  const N = pairs.captions.length;
  const R = clip.model.arch.resolution;
  const img = new Float32Array(N * clip.model.arch.embed);
  for (let start = 0; start < N; start += 64) {
    const n = Math.min(64, N - start);
    img.set(embedImages(clip.model, pairs.pixels.subarray(start * 3 * R * R, (start + n) * 3 * R * R), n), start * clip.model.arch.embed);
  }
  return poolRetrieval(img, embedTexts(clip, pairs.captions), N, pool);
}

/** A trained CLIP, loaded from a run directory or a checkpoint directory. */
export interface LoadedClip {
  readonly model: Clip;
  readonly tokenizer: TextTokenizer;
  /** The tokenizer.json it was loaded from. */
  readonly tokenizerFile: string;
  readonly runDir: string;
  readonly checkpoint: string;
  readonly step: number;
}

/**
 * Opens a CLIP: a checkpoint directory, or a run directory: its best checkpoint by validation (RUN/best, written when
 * it was trained with a validation set), else its latest.
 */
export function loadClip(target: string, device: Device = 'cpu'): LoadedClip {
  const bestFile = path.join(target, CLIP_BEST_FILE);
  let pointed = target;
  if (fs.existsSync(bestFile) && !fs.existsSync(path.join(target, 'state.json'))) {
    const pointer = readTextFileSync(bestFile, TEXT_LIMITS.runMetadata).trim();
    if (!/^checkpoints\/step-\d+$/.test(pointer)) {
      throw new CheckpointError(`${bestFile} should hold 'checkpoints/step-N', it holds ${JSON.stringify(pointer.slice(0, 80))}`, `remove it to use the latest checkpoint, or write a checkpoint's path into it`);
    }
    pointed = path.join(target, pointer);
  }
  const resolved = resolveCheckpoint(pointed, 'clip');
  if (resolved.state.kind !== 'clip') {
    throw new CheckpointError(`${resolved.dir} is a ${resolved.state.kind} checkpoint, not a CLIP one`, 'give a run directory made by `dalle train-clip`');
  }
  const infoFile = path.join(resolved.runDir, CLIP_INFO_FILE);
  if (!fs.existsSync(infoFile)) throw new CheckpointError(`${resolved.runDir} has no ${CLIP_INFO_FILE}`, 'give a run directory made by `dalle train-clip`');
  let info: ClipRunInfo;
  try {
    info = JSON.parse(readTextFileSync(infoFile, TEXT_LIMITS.runMetadata)) as ClipRunInfo;
  } catch (error) {
    if (error instanceof TextFileError) throw error;
    throw new CheckpointError(`${infoFile} is not valid JSON (${error instanceof Error ? error.message : String(error)})`, 'give a run directory made by `dalle train-clip`, or train the CLIP again');
  }
  if (info.format !== CLIP_FORMAT) throw new CheckpointError(`${infoFile} has format ${JSON.stringify(info.format)}, expected ${CLIP_FORMAT}`, 'train the CLIP again with this version of dalle');
  const tokenizerFile = path.join(resolved.runDir, info.tokenizer);
  const tokenizer = TextTokenizer.load(tokenizerFile);
  const model = new Clip(info.arch, new Philox(0));
  try {
    loadCheckpointModel(resolved.dir, new Map(model.namedParameters()));
    model.to(device); // read on the host (the same files on every device), moved once
  } catch (error) {
    model.dispose();
    throw error;
  }
  return { model, tokenizer, tokenizerFile, runDir: resolved.runDir, checkpoint: resolved.dir, step: resolved.state.step };
}

/** L2-normalised text embeddings (N, E) of captions, in batches. */
export function embedTexts(clip: Pick<LoadedClip, 'model' | 'tokenizer'>, captions: readonly string[], batch = 64): Float32Array {
  const { model } = clip;
  const E = model.arch.embed;
  const out = new Float32Array(captions.length * E);
  for (let start = 0; start < captions.length; start += batch) {
    const part = captions.slice(start, start + batch);
    const packed = part.map((c) => model.packTokens(clip.tokenizer.encode(c)));
    const data = noGrad(() =>
      tidy(() => {
        const tokens = Tensor.from(concatRows(packed.map((p) => p.row)), [part.length, model.arch.context], 'i32', model.device);
        return l2Normalize(model.encodeText(tokens, packed.map((p) => p.end))).toArray() as Float32Array;
      }),
    );
    out.set(data, start * E);
  }
  return out;
}

/** L2-normalised image embeddings (N, E) of pixels (N, 3, R, R) in [0, 1]. */
export function embedImages(model: Clip, pixels: Float32Array, count: number): Float32Array {
  return noGrad(() =>
    tidy(() => {
      const R = model.arch.resolution;
      return l2Normalize(model.encodeImage(Tensor.from(pixels, [count, 3, R, R], 'f32', model.device))).toArray() as Float32Array;
    }),
  );
}
