/**
 * The small CLIP as a training task of the one loop (loop.ts), on image + caption pairs.
 *
 * A run directory holds clip.json (the architecture, the tokenizer file and the training settings), tokenizer.json
 * (trained on the data's captions when none is given), metrics.jsonl, and checkpoints/step-N (the project's checkpoint
 * format, `latest` pointing at the newest; the newest two are kept, and the best). Batches come from the shared seeded
 * loader; each batch's captions are tokenized without dropout, and its images get a random affine augmentation (scale
 * and shift, white fill; no flips, no colour changes: captions name directions and colours) unless `augment` is 0.
 *
 * With `val` (held-out pairs), every `evalEvery` updates the run measures text -> image top-1 retrieval within pools
 * of `valPool` val pairs (as `dalle evaluate clip-score` does), logs it to metrics.jsonl (`split: "val"`), keeps a
 * checkpoint of each new best and points RUN/best at it; `loadClip(RUN)` then opens the best checkpoint, not the
 * latest, so the checkpoint a user gets is chosen on the validation split, never on a test split.
 *
 * Exact resume (--resume): the settings come from RUN/clip.json (options given override them: a larger `steps`
 * extends the run), the tokenizer and architecture are the run's; state.json holds the augmentation stream, the
 * loader position and the best so far. So a resumed run's losses are bitwise those of an uninterrupted one.
 * Key: B = batch, L = context, R = image side, E = embedding size.
 */
import { loaderPart, shareFromRankZero } from '../distributed/agree';
import type { Collective } from '../distributed/collective';
import { gatherOverRanks } from '../distributed/gather-over-ranks';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { CHECKPOINTS_DIR, CheckpointError, CheckpointState, checkpointDirName, resolveCheckpoint } from '../checkpoint';
import { DataLoader, openDataSource } from '../data';
import type { Batch } from '../data/loader';
import { DataError } from '../data/errors';
import { EventSink, silentSink } from '../events';
import { Device, Tensor } from '../tensor';
import { Philox } from '../tensor/rng';
import { TextTokenizer } from '../text';
import { concatRows } from '../models/clip/embed';
import { CLIP_BEST_FILE, CLIP_FORMAT, CLIP_INFO_FILE, CLIP_TOKENIZER_FILE, ClipRunInfo, readClipRunInfo } from '../models/clip/load';
import { CLIP_EMOJI_ARCH, Clip, ClipArch, clipDecays } from '../models/clip/model';
import { ClipPairs, measureRetrieval, readPairs } from '../models/clip/retrieval';
import { augmentImages } from './clip-augment';
import { TrainingLoop, TrainingLoopOptions, TrainingResult, checkGlobalBatch } from './loop';
import { Schedule, warmupCosine } from './schedule';
import { MetricsInterval, PrepareContext, RunWriter, StepContext, StepForward, StepValues, TaskCheckpointState, TaskModel, TaskSettings, TrainingTask } from './task';

/** What a CLIP run is trained with; recorded in RUN/clip.json (`train`), so --resume continues with the same. */
export interface ClipTrainSettings {
  /** The image + caption pairs trained on, and the held-out ones validated on. */
  readonly data: string;
  readonly val?: string;
  readonly steps: number;
  readonly batchSize: number;
  readonly lr: number;
  readonly weightDecay: number;
  readonly warmupSteps: number;
  readonly seed: number;
  /** Strength of the random affine augmentation (max relative scale change and shift); 0 = none. */
  readonly augment: number;
  readonly logEvery: number;
  /** A checkpoint every N updates (0 = only at the end and on stop). */
  readonly checkpointEvery: number;
  /** Updates between validations on `val`, and pairs per retrieval pool. */
  readonly evalEvery: number;
  readonly valPool: number;
}

/** The settings a fresh run gets for those not given (the command's flag defaults). */
export const CLIP_TRAIN_DEFAULTS: Omit<ClipTrainSettings, 'data' | 'val'> = {
  steps: 2000,
  batchSize: 64,
  lr: 1e-3,
  weightDecay: 0.1,
  warmupSteps: 50,
  seed: 0,
  augment: 0.1,
  logEvery: 10,
  checkpointEvery: 500,
  evalEvery: 100,
  valPool: 100,
};

export interface ClipTrainOptions extends TrainingLoopOptions, Partial<ClipTrainSettings> {
  /** Where the model trains (runtime.device; default the CPU): it is initialized on the host and moved there once. */
  readonly device?: Device;
  /** A fresh run's tokenizer: an existing tokenizer.json, or else one of `vocab` tokens trained on the captions. */
  readonly tokenizer?: string;
  readonly vocab?: number;
  /** A fresh run's architecture (the rest is CLIP_EMOJI_ARCH; vocab is the tokenizer's). */
  readonly arch?: Partial<Omit<ClipArch, 'vocab'>>;
}

export interface ClipTrainResult extends TrainingResult {
  /** Top-1 accuracy of image -> caption within the last logged batch. */
  readonly batchAccuracy: number;
  /** The checkpoint with the best validation text -> image top-1 (only with `val`) and that top-1. */
  readonly best?: { readonly checkpoint: string; readonly step: number; readonly textToImageTop1: number };
  readonly parameters: number;
  /** Seconds this process trained. */
  readonly seconds: number;
}

type ClipResultFields = Omit<ClipTrainResult, keyof TrainingResult>;

/** A batch: augmented pixels (B, 3, R, R) and the captions' packed token rows. */
interface ClipBatch {
  readonly pixels: Float32Array;
  readonly shape: Batch['shape'];
  readonly packed: ReadonlyArray<{ row: Int32Array; end: number }>;
}

/** The logits (B, B) of a step, read at a log step for the batch accuracy. */
interface ClipForward extends StepForward {
  readonly logits: Tensor;
}

/** Trains a CLIP into a run directory: the one loop with the CLIP task (a StoppableJob: Ctrl-C checkpoints). */
export class ClipTrainer extends TrainingLoop<ClipBatch, ClipForward, number, ClipResultFields> {
  constructor(options: ClipTrainOptions) {
    super(new ClipTask(options), options);
  }
}

/**
 * Trains a CLIP into `out` (or continues it with `resume`) and returns where its final checkpoint is. The run directory
 * is locked meanwhile (io/run-lock.ts), and everything (data, tokenizer, validation pairs) is checked before the first
 * write into it.
 */
export function trainClip(options: ClipTrainOptions): Promise<ClipTrainResult> {
  return new ClipTrainer(options).run();
}

class ClipTask implements TrainingTask<ClipBatch, ClipForward, number, ClipResultFields> {
  readonly kind = 'clip' as const;
  readonly device: Device;
  private resolved?: { settings: ClipTrainSettings; info?: ClipRunInfo };
  private loopSettings?: TaskSettings;
  private lrAt?: Schedule;
  private events: EventSink = silentSink;
  private resuming = false;
  private tokenizer?: TextTokenizer;
  private info?: ClipRunInfo;
  private val?: ClipPairs;
  private loader?: DataLoader;
  private batchSize = 0;
  private model?: Clip;
  private augmentRng?: Philox;
  private collective?: Collective;
  private best?: { step: number; textToImageTop1: number; checkpoint: string };
  private lastAccuracy = NaN;
  /** The logit scale after the last update (clamped). */
  private logitScale = NaN;
  private started = performance.now();

  constructor(private readonly options: ClipTrainOptions) {
    this.device = options.device ?? 'cpu';
  }

  /** The run's settings: the options over the defaults, or on --resume over the run's (RUN/clip.json). */
  private get train(): ClipTrainSettings {
    this.resolved ??= resolveClipSettings(this.options);
    return this.resolved.settings;
  }

  get settings(): TaskSettings {
    const s = this.train;
    this.loopSettings ??= {
      steps: s.steps,
      progressTask: 'train-clip',
      label: 'CLIP',
      divergenceHint: 'lower --lr',
      optimizer: { lr: s.lr, beta1: 0.9, beta2: 0.98, eps: 1e-6, weightDecay: s.weightDecay },
      gradClip: 0,
      logEvery: s.logEvery,
      logLastStep: true,
      checkpointEvery: s.checkpointEvery,
      keepCheckpoints: 2, // the newest two, and the best (keptCheckpoints)
      validateEvery: s.val ? s.evalEvery : 0,
      existingRun: { message: `${this.options.out} already holds a trained CLIP (${CHECKPOINTS_DIR}/)`, hint: 'continue it with --resume (a larger --steps trains further), or choose a new --out' },
    };
    return this.loopSettings;
  }

  private get clip(): Clip {
    if (!this.model) throw new Error('dalle: the CLIP task has no model yet');
    return this.model;
  }

  lr(index: number): number {
    const s = this.train;
    this.lrAt ??= warmupCosine(s.lr, s.lr * 0.05, Math.min(s.warmupSteps, s.steps), s.steps);
    return this.lrAt(index);
  }

  async prepare({ start, events, worldSize, rank, collective }: PrepareContext): Promise<void> {
    const s = this.train;
    const { options } = this;
    this.events = events;
    this.collective = collective;
    this.resuming = start.state !== undefined;
    const source = await openDataSource(s.data, { requireCaptions: true });
    if (source.records.length < 2) {
      throw new DataError(`${s.data} has ${source.records.length} images with captions; CLIP needs pairs`, 'give a folder of images with .txt captions, or a manifest with captions');
    }
    let arch: ClipArch;
    if (this.resolved?.info) {
      // A resumed run keeps its tokenizer and architecture.
      const info = this.resolved.info;
      this.tokenizer = TextTokenizer.load(path.join(options.out, info.tokenizer));
      arch = info.arch;
    } else {
      if (options.tokenizer) {
        this.tokenizer = TextTokenizer.load(options.tokenizer);
      } else if (rank === 0) {
        events.emit({ type: 'stage', name: 'tokenizer', detail: `training ${options.vocab ?? 1024} tokens on ${source.records.length} captions` });
        const captions = source.records.flatMap((r) => r.captions);
        this.tokenizer = await TextTokenizer.train(captions, { vocabSize: options.vocab ?? 1024, lowercase: true });
      }
      // Data parallelism: one tokenizer trained, by rank 0, used by every rank.
      if (!options.tokenizer && worldSize > 1) {
        const text = await shareFromRankZero(collective, rank === 0 ? Buffer.from((this.tokenizer as TextTokenizer).toJsonText()) : undefined);
        if (rank > 0) this.tokenizer = TextTokenizer.fromJson(JSON.parse(Buffer.from(text).toString('utf8')), 'rank 0\'s tokenizer');
      }
      arch = { ...CLIP_EMOJI_ARCH, ...options.arch, vocab: (this.tokenizer as TextTokenizer).vocabSize };
    }
    this.info = { format: CLIP_FORMAT, arch, tokenizer: CLIP_TOKENIZER_FILE, lowercase: (this.tokenizer as TextTokenizer).lowercase, train: { ...s } };
    this.val = s.val ? await readPairs(s.val, arch.resolution) : undefined;
    if (this.val && this.val.captions.length < s.valPool) {
      throw new DataError(`${s.val} has ${this.val.captions.length} readable pairs, fewer than one retrieval pool of ${s.valPool}`, 'give a larger validation set or a smaller pool');
    }
    // Data parallelism: a rank's loader takes its part of every global batch (LoaderOptions.part); one process: all.
    this.batchSize = Math.min(s.batchSize, source.records.length);
    checkGlobalBatch(this.batchSize, worldSize);
    const loaderOptions = { batchSize: this.batchSize, resolution: arch.resolution, seed: s.seed, shuffle: true, part: loaderPart(collective, this.batchSize) };
    this.loader = start.state?.data ? DataLoader.fromState(source, loaderOptions, start.state.data) : new DataLoader(source, loaderOptions);
  }

  createModel(): TaskModel {
    const rng = new Philox(this.train.seed);
    this.model = new Clip((this.info as ClipRunInfo).arch, rng.fork(1)).to(this.device);
    this.augmentRng = rng.fork(2);
    return { named: this.model.namedParameters(), decays: clipDecays, parameterCount: this.model.parameterCount(), detail: `batches of ${this.batchSize} pairs` };
  }

  restore(state: CheckpointState, dir: string): void {
    if (!state.rng.augment) {
      throw new CheckpointError(`${dir}/state.json has no rng.augment: it was written by a train-clip that could not resume`, 'train the CLIP again (without --resume, into a new --out)');
    }
    this.augmentRng = Philox.fromState(state.rng.augment);
    const best = (state.metrics as { best?: { step?: unknown; val_t2i_top1?: unknown } }).best;
    if (best !== undefined) {
      if (!Number.isSafeInteger(best.step) || typeof best.val_t2i_top1 !== 'number') {
        throw new CheckpointError(`${dir}/state.json: metrics.best is not {step, val_t2i_top1}`, 'the checkpoint is damaged: resume from an earlier one, or train again');
      }
      const step = best.step as number;
      this.best = { step, textToImageTop1: best.val_t2i_top1, checkpoint: path.join(this.options.out, CHECKPOINTS_DIR, checkpointDirName(step)) };
    }
  }

  writeRunFiles(writer: RunWriter): Array<{ kind: string; path: string }> {
    const tokenizerFile = path.join(writer.dir, CLIP_TOKENIZER_FILE);
    if (!this.resuming) (this.tokenizer as TextTokenizer).save(tokenizerFile);
    const infoFile = writer.writeFile(CLIP_INFO_FILE, `${JSON.stringify(this.info, null, 2)}\n`);
    // RUN/best names the best checkpoint so far: none on a fresh start; on a resume, the one its state records.
    if (this.best) writer.writeFile(CLIP_BEST_FILE, `${CHECKPOINTS_DIR}/${checkpointDirName(this.best.step)}\n`);
    else fs.rmSync(path.join(writer.dir, CLIP_BEST_FILE), { force: true });
    return [
      { kind: 'tokenizer', path: tokenizerFile },
      { kind: 'config', path: infoFile },
    ];
  }

  async beforeTraining(): Promise<void> {
    this.started = performance.now();
  }

  async nextBatch({ rank, worldSize }: StepContext): Promise<ClipBatch> {
    const batch = await (this.loader as DataLoader).next();
    const { augment } = this.train;
    const R = this.clip.arch.resolution;
    const tokenizer = this.tokenizer as TextTokenizer;
    const b = this.batchSize / worldSize; // this rank's images
    const rng = this.augmentRng as Philox;
    // Data parallelism: this rank's share of the global batch's warps (3 words an image), the rest passed over.
    const warp = (images: Float32Array): Float32Array => {
      rng.reserve(3 * rank * b);
      const out = augmentImages(images, b, R, augment, rng);
      rng.reserve(3 * (worldSize - 1 - rank) * b);
      return out;
    };
    return {
      pixels: augment > 0 ? warp(batch.images) : batch.images,
      shape: batch.shape,
      packed: batch.captions.map((c) => this.clip.packTokens(tokenizer.encode(c))),
    };
  }

  // Transfers of a step: the batch in; the loss and the logit scale out (one copy, by the loop); at a log step, the logits.
  forward(batch: ClipBatch, { worldSize }: StepContext): ClipForward {
    const model = this.clip;
    const pixels = Tensor.from(batch.pixels, batch.shape, 'f32', model.device);
    const tokens = Tensor.from(concatRows(batch.packed.map((p) => p.row)), [this.batchSize / worldSize, model.arch.context], 'i32', model.device);
    // Data parallelism: the loss over the global batch, each rank's embeddings gathered (gather-over-ranks.ts).
    const gather = (rows: Tensor): Tensor => gatherOverRanks(rows, this.collective as Collective);
    const { loss, logits } = model.loss(pixels, tokens, batch.packed.map((p) => p.end), gather);
    return { loss, logits };
  }

  // The logit scale as updated (a parameter: read after the update), and the batch's accuracy at a log step.
  afterUpdate(forward: ClipForward, { logging }: StepContext): { scalars: { logit_scale: Tensor }; extra?: number } {
    return {
      scalars: { logit_scale: this.clip.logitScale },
      extra: logging ? diagonalAccuracy(forward.logits.toArray() as Float32Array, this.batchSize) : undefined,
    };
  }

  afterStep(values: StepValues<number>): void {
    this.logitScale = clampLogitScale(this.clip, values.scalars.logit_scale);
    if (values.extra !== undefined) this.lastAccuracy = values.extra;
  }

  progressMetrics(values: StepValues<number>): Record<string, number> {
    return { loss: values.loss };
  }

  metricsLine(values: StepValues<number>, _batch: ClipBatch, interval: MetricsInterval): Record<string, unknown> {
    return { loss: values.loss, batch_accuracy: values.extra, lr: values.lr, temperature: 1 / Math.exp(this.logitScale), seconds: interval.secondsHere };
  }

  validate(step: number, writer: RunWriter): void {
    const val = this.val;
    if (!val) return;
    const { valPool } = this.train;
    const r = measureRetrieval({ model: this.clip, tokenizer: this.tokenizer as TextTokenizer }, val, valPool);
    const improved = !this.best || r.textToImageTop1 > this.best.textToImageTop1;
    writer.appendMetrics({ step, split: 'val', val_t2i_top1: r.textToImageTop1, val_i2t_top1: r.imageToTextTop1, val_clip_score: r.clipScore, val_pairs: r.pools * valPool, best: improved });
    this.events.emit({ type: 'metrics', step, split: 'val', values: { t2i_top1: r.textToImageTop1, i2t_top1: r.imageToTextTop1, clip_score: r.clipScore } });
    if (improved) {
      this.best = { step, textToImageTop1: r.textToImageTop1, checkpoint: '' };
      this.best.checkpoint = writer.checkpoint();
      writer.writeFile(CLIP_BEST_FILE, `${CHECKPOINTS_DIR}/${checkpointDirName(step)}\n`);
    }
  }

  checkpointState(): TaskCheckpointState {
    return {
      rng: { augment: (this.augmentRng as Philox).state() },
      data: (this.loader as DataLoader).state(),
      metrics: this.best ? { best: { step: this.best.step, val_t2i_top1: this.best.textToImageTop1 } } : {},
    };
  }

  keptCheckpoints(): readonly number[] {
    return this.best ? [this.best.step] : [];
  }

  result(): ClipResultFields {
    const best = this.best ? { checkpoint: this.best.checkpoint, step: this.best.step, textToImageTop1: this.best.textToImageTop1 } : undefined;
    return { batchAccuracy: this.lastAccuracy, best, parameters: this.clip.parameterCount(), seconds: (performance.now() - this.started) / 1000 };
  }

  dispose(): void {
    this.loader?.close();
    this.model?.dispose();
  }
}

/**
 * A fresh run's settings: the options over CLIP_TRAIN_DEFAULTS. A resumed run's: the options over those recorded in
 * RUN/clip.json; its tokenizer and architecture cannot change.
 */
function resolveClipSettings(options: ClipTrainOptions): { settings: ClipTrainSettings; info?: ClipRunInfo } {
  const given = Object.fromEntries(
    (['data', 'val', ...Object.keys(CLIP_TRAIN_DEFAULTS)] as Array<keyof ClipTrainSettings>).filter((key) => options[key] !== undefined).map((key) => [key, options[key]]),
  ) as Partial<ClipTrainSettings>;
  if (!options.resume) {
    if (given.data === undefined) throw new DataError('no training pairs given', 'pass --data PATH: a folder of images with .txt captions, a .jsonl/.csv manifest or .tar shards');
    return { settings: { ...CLIP_TRAIN_DEFAULTS, ...given, data: given.data } };
  }
  const found = resolveCheckpoint(options.out, 'clip'); // a run with a checkpoint, or a clear error
  const info = readClipRunInfo(found.runDir);
  const recorded = info.train as Partial<ClipTrainSettings> | undefined;
  const file = path.join(found.runDir, CLIP_INFO_FILE);
  if (!recorded || typeof recorded !== 'object') {
    throw new CheckpointError(`${file} records no training settings: the run was made by a train-clip that could not resume`, 'train the CLIP again (without --resume, into a new --out)');
  }
  const settings = { ...recorded, ...given } as ClipTrainSettings;
  const problems = (Object.keys(CLIP_TRAIN_DEFAULTS) as Array<keyof typeof CLIP_TRAIN_DEFAULTS>).filter((key) => typeof settings[key] !== 'number' || !Number.isFinite(settings[key]));
  if (typeof settings.data !== 'string') problems.push('data' as never);
  if (problems.length > 0) throw new CheckpointError(`${file}: train.${problems.join(', train.')} missing or not valid`, 'the run is damaged: train the CLIP again');
  if (options.tokenizer !== undefined || options.vocab !== undefined) {
    throw new CheckpointError(`a resumed CLIP keeps its tokenizer (${path.join(found.runDir, info.tokenizer)})`, 'leave out --tokenizer and --vocab with --resume');
  }
  for (const [key, value] of Object.entries(options.arch ?? {})) {
    if (value !== undefined && info.arch[key as keyof ClipArch] !== value) {
      throw new CheckpointError(`the CLIP of ${found.runDir} has ${key} ${info.arch[key as keyof ClipArch]}, not ${value}`, `a resumed CLIP keeps its architecture (${file}): leave out --${key} with --resume`);
    }
  }
  return { settings, info };
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
