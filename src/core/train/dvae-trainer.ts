/**
 * The dVAE as a training task of the one loop (loop.ts; Ramesh et al. 2021, Appendix A; docs/ARCHITECTURE.md "Models").
 *
 * Per update s (0-based): a batch from the DataLoader; lr(s), beta(s), tau(s) from dvaeSchedules; the loss
 * recon + beta * KL with gumbel noise drawn from the run's noise stream. Every log_every updates a line in
 * RUN/metrics.jsonl, every sample_every a grid of originals (top row) over reconstructions (bottom row) in
 * RUN/samples/.
 *
 * Weight decay applies to the conv weights (`.w`) only. Biases are left undecayed: decay exists to limit the scale of
 * weights that multiply activations; a bias only shifts them, and pulling it toward 0 shifts every pixel or logit
 * the same way without regularizing anything (the usual convention, which the paper follows for the prior: no decay
 * on gains and biases).
 *
 * Exact resume: besides what the loop saves, state.json holds the noise Philox (rng.noise), the loader position and
 * the codebook-usage window (metrics.usage). A checkpoint whose optimizer.safetensors holds no tensors (a converted
 * model's) starts AdamW fresh. lr, beta and tau are pure functions of the step. So a resumed run's losses are bitwise
 * those of an uninterrupted run with the same seed (test/commands/dvae-commands.test.ts).
 *
 * Codebook usage: at every log step the current batch is encoded to argmax codes (no noise, so no random numbers are
 * drawn); the last USAGE_WINDOW such batches form the window (dvae-codebook.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CheckpointError, CheckpointState } from '../checkpoint';
import { ConfigError, DvaeConfig, dvaeConfig, writeRunConfig } from '../config';
import { Batch, DataLoader } from '../data/loader';
import { openDataSource } from '../data/sources/open';
import type { DataSource } from '../data/sources/types';
import { EventSink, silentSink } from '../events';
import { planesToRgb, tileImages, writePng } from '../image/grid';
import { Dvae, dvaeLoss, dvaeSchedules } from '../models/dvae';
import { Device, parseDevice } from '../backend/device';
import { Philox, Tensor, noGrad, tidy } from '../tensor';
import { USAGE_WINDOW, codebookUsage, initCodebook } from './dvae-codebook';
import { TrainingLoop, TrainingLoopOptions, TrainingResult, checkGlobalBatch } from './loop';
import { loaderPart } from '../distributed/agree';
import type { Collective } from '../distributed/collective';
import { meanOverRanks } from '../distributed/mean-over-ranks';
import { MetricsInterval, PrepareContext, StepContext, StepForward, StepTiming, StepValues, TaskCheckpointState, TaskModel, TaskSettings, TrainingTask } from './task';

export const SAMPLES_DIR = 'samples';
/** The gumbel noise's stream: Philox(seed).fork(this) ('nois'); init uses Philox(seed), data its own fork. */
export const NOISE_STREAM_ID = 0x6e6f6973;
/** Images (of the batch) shown in a sample grid. */
const SAMPLE_IMAGES = 8;

export interface DvaeTrainOptions extends TrainingLoopOptions {
  /** The resolved config (train-dvae writes it to RUN/config.yaml). On resume, the run's config (+ overrides). */
  readonly config: DvaeConfig;
  /** Checkpoints to keep (default 3). */
  readonly keepCheckpoints?: number;
}

/** One metrics.jsonl line. */
export interface DvaeMetricsLine {
  /** Updates completed. */
  step: number;
  loss: number;
  recon: number;
  kl: number;
  recon_per_dim: number;
  kl_per_cell: number;
  /** ln V - H(batch-mean posterior), nats: 0 when the batch spreads evenly over the codebook. */
  usage_gap: number;
  /** Global gradient norm of the logged update, before clipping. */
  grad_norm: number;
  /** Mean loss over the updates since the previous line. */
  loss_mean: number;
  lr: number;
  beta: number;
  tau: number;
  perplexity: number;
  dead_codes: number;
  epoch: number;
  images_per_s: number;
}

export type DvaeTrainResult = TrainingResult;

/** The batch x of a step, kept for the codes of a log step (encoded with the updated weights). */
interface DvaeForward extends StepForward {
  readonly x: Tensor;
}

/** Trains a dVAE into a run directory: the one loop with the dVAE task. */
export class DvaeTrainer extends TrainingLoop<Batch, DvaeForward, Int32Array, object> {
  constructor(options: DvaeTrainOptions) {
    super(new DvaeTask(options.config, options.out, options.keepCheckpoints), options);
  }
}

class DvaeTask implements TrainingTask<Batch, DvaeForward, Int32Array, object> {
  readonly kind = 'dvae' as const;
  readonly settings: TaskSettings;
  readonly device: Device;
  private readonly schedules: ReturnType<typeof dvaeSchedules>;
  private events: EventSink = silentSink;
  private source?: DataSource;
  private loader?: DataLoader;
  private model?: Dvae;
  private noise: Philox;
  private collective?: Collective;
  /** The codebook-usage window: histograms of the last log steps' codes (oldest first), each V counts. */
  private usage: number[][] = [];

  constructor(
    private readonly config: DvaeConfig,
    private readonly out: string,
    keepCheckpoints: number | undefined,
  ) {
    const t = config.train;
    this.device = parseDevice(config.runtime.device);
    this.schedules = dvaeSchedules(config);
    this.noise = new Philox(config.runtime.seed).fork(NOISE_STREAM_ID);
    this.settings = {
      steps: t.steps,
      progressTask: 'train',
      label: 'dVAE',
      divergenceHint: 'lower train.lr, or resume from an earlier checkpoint',
      optimizer: { lr: t.lr, beta1: t.beta1, beta2: t.beta2, eps: t.eps, weightDecay: t.weight_decay },
      gradClip: t.grad_clip, // > 0 bounds the update a single loss spike can make; the paper has none
      logEvery: t.log_every,
      checkpointEvery: t.checkpoint_every,
      keepCheckpoints,
      sampleEvery: t.sample_every,
      folders: [SAMPLES_DIR],
      weightsOnlyResume: true,
    };
  }

  private get loaderOptions() {
    const { config } = this;
    return {
      batchSize: config.train.batch_size,
      resolution: config.data.resolution,
      seed: config.runtime.seed,
      maxInputPixels: config.data.max_input_pixels,
      prefetchBatches: config.data.prefetch_batches,
      events: this.events,
    };
  }

  private get dvae(): Dvae {
    if (!this.model) throw new Error('dalle: the dVAE task has no model yet');
    return this.model;
  }

  lr(index: number): number {
    return this.schedules.lr(index);
  }

  async prepare({ start, events, collective }: PrepareContext): Promise<void> {
    const { config } = this;
    this.events = events;
    this.collective = collective;
    checkGlobalBatch(config.train.batch_size, collective.worldSize);
    if (config.data.path === null || config.data.path === undefined) {
      throw new ConfigError('is not set: the dVAE needs images to train on', {
        keyPath: 'data.path',
        hint: 'pass --data PATH (a folder, a .jsonl/.csv manifest or .tar shards), or --set data.path=PATH',
      });
    }
    events.emit({ type: 'stage', name: 'loading data', detail: config.data.path });
    const source = await openDataSource(config.data.path);
    this.source = source;
    // Data parallelism: a rank's loader takes its part of every global batch (LoaderOptions.part); one process: all.
    const resumedData = start.state?.data;
    const options = { ...this.loaderOptions, part: loaderPart(collective, config.train.batch_size) };
    this.loader = resumedData ? DataLoader.fromState(source, options, resumedData) : new DataLoader(source, options);
  }

  // Initialized on the host (the seeded init is the same on every device) and moved to runtime.device once.
  createModel(): TaskModel {
    this.model = new Dvae(this.config, { seed: this.config.runtime.seed }).to(this.device);
    return { named: this.model.namedParameters(), decays: (name) => name.endsWith('.w'), parameterCount: this.model.parameterCount() };
  }

  restore(state: CheckpointState, dir: string, weightsOnly: boolean): void {
    // A weights-only checkpoint (a converted model) starts the rest as a fresh run would, except what it records.
    if (state.rng.noise) this.noise = Philox.fromState(state.rng.noise);
    else if (!weightsOnly) throw new CheckpointError(`${dir}/state.json has no rng.noise`, 'the checkpoint is not from train-dvae: train again');
    if (!weightsOnly || Object.keys(state.metrics).length > 0) this.usage = checkUsage(state.metrics, this.dvae.arch.vocab_size, dir);
  }

  writeRunFiles(): Array<{ kind: string; path: string }> {
    return [{ kind: 'config', path: writeRunConfig(this.out, dvaeConfig, this.config) }];
  }

  async beforeTraining(fresh: boolean): Promise<void> {
    if (fresh && this.config.train.codebook_init === 'kmeans') await initCodebook(this.dvae, this.source as DataSource, this.config, this.loaderOptions, this.events);
  }

  nextBatch(): Promise<Batch> {
    return (this.loader as DataLoader).next();
  }

  // Transfers of a step: the batch in; its scalars out (one copy, by the loop); at a log step, the batch's codes out.
  forward(batch: Batch, { index, rank, worldSize }: StepContext): DvaeForward {
    const t = this.config.train;
    const collective = this.collective as Collective;
    // Data parallelism: this rank's share of the global batch's noise, and the usage term over the global batch.
    const part = worldSize > 1 ? { index: rank, count: worldSize, meanOverParts: (v: Tensor) => meanOverRanks(v, collective) } : undefined;
    const x = Tensor.from(batch.images, batch.shape, 'f32', this.device); // (B, 3, R, R)
    const r = dvaeLoss(this.dvae, x, {
      tau: this.schedules.tau(index),
      beta: this.schedules.beta(index),
      rng: this.noise,
      usageWeight: t.usage_weight,
      straightThrough: t.straight_through,
      encoderFrozen: index < t.decoder_warmup_steps,
      reconLoss: t.recon_loss,
      reconSigma: t.recon_sigma,
      part,
    });
    return { loss: r.loss, scalars: { recon: r.recon, kl: r.kl, recon_per_dim: r.reconPerDim, kl_per_cell: r.klPerCell, usage_gap: r.usageGap }, x };
  }

  // Codebook usage: the batch's argmax codes under the updated weights (no noise, so no random numbers drawn).
  afterUpdate(forward: DvaeForward, { logging }: StepContext): { extra: Int32Array } | undefined {
    return logging ? { extra: noGrad(() => this.dvae.encode(forward.x).toArray()) as Int32Array } : undefined;
  }

  afterStep(values: StepValues<Int32Array>): void {
    if (!values.extra) return;
    const counts = new Float64Array(this.dvae.arch.vocab_size);
    for (const c of values.extra) counts[c]++;
    // Data parallelism: each rank encoded its part of the batch; the window holds the global batch's codes.
    if (this.collective && this.collective.worldSize > 1) this.collective.allReduceSync(counts, 'sum');
    this.usage.push(Array.from(counts));
    if (this.usage.length > USAGE_WINDOW) this.usage.shift();
  }

  progressMetrics(values: StepValues<Int32Array>, _batch: Batch, timing: StepTiming): Record<string, number> {
    const { scalars } = values;
    const imagesPerS = (timing.updatesHere * this.config.train.batch_size) / Math.max(1e-3, timing.secondsHere);
    return { loss: values.loss, recon: scalars.recon, kl: scalars.kl, tau: this.schedules.tau(values.step - 1), beta: this.schedules.beta(values.step - 1), lr: values.lr, images_per_s: imagesPerS };
  }

  metricsLine(values: StepValues<Int32Array>, batch: Batch, interval: MetricsInterval): Omit<DvaeMetricsLine, 'step'> {
    const { scalars } = values;
    const usage = codebookUsage(this.usage, this.dvae.arch.vocab_size);
    return {
      loss: values.loss,
      recon: scalars.recon,
      kl: scalars.kl,
      recon_per_dim: scalars.recon_per_dim,
      kl_per_cell: scalars.kl_per_cell,
      usage_gap: scalars.usage_gap,
      grad_norm: values.gradNorm,
      loss_mean: interval.lossMean,
      lr: values.lr,
      beta: this.schedules.beta(values.step - 1),
      tau: this.schedules.tau(values.step - 1),
      perplexity: usage.perplexity,
      dead_codes: usage.deadCodes,
      epoch: batch.epoch,
      images_per_s: (interval.updatesHere * this.config.train.batch_size) / interval.seconds,
    };
  }

  sample(batch: Batch, step: number): Promise<string> {
    return writeSampleGrid(this.dvae, batch.images, batch.shape, path.join(this.out, SAMPLES_DIR, `step-${step}.png`));
  }

  checkpointState(): TaskCheckpointState {
    return { rng: { noise: this.noise.state() }, data: (this.loader as DataLoader).state(), metrics: { usage: this.usage } };
  }

  result(): object {
    return {};
  }

  dispose(): void {
    this.loader?.close();
    this.model?.dispose();
  }
}

/** Originals (top row) over their reconstructions (bottom row), for the first few images of a batch. */
export async function writeSampleGrid(model: Dvae, images: Float32Array, shape: readonly number[], file: string): Promise<string> {
  const [B, C, H, W] = shape;
  const n = Math.min(B, SAMPLE_IMAGES);
  const subset = images.subarray(0, n * C * H * W);
  const recon = noGrad(() => tidy(() => model.reconstruct(Tensor.from(subset, [n, C, H, W], 'f32', model.device)).toArray())) as Float32Array;
  const tiles = [];
  for (let i = 0; i < n; i++) tiles.push(planesToRgb(subset, [n, C, H, W], i));
  for (let i = 0; i < n; i++) tiles.push(planesToRgb(recon, [n, C, H, W], i));
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await writePng(file, tileImages(tiles, { columns: n }));
  return file;
}

/** The codebook-usage window of state.json `metrics.usage`: histograms of V counts. */
function checkUsage(value: Readonly<Record<string, unknown>>, V: number, dir: string): number[][] {
  const usage = (value as { usage?: unknown }).usage;
  if (!Array.isArray(usage) || !usage.every((h) => Array.isArray(h) && h.length === V)) {
    throw new CheckpointError(`${dir}/state.json: metrics are not a dVAE trainer's (interval_loss_sum, interval_steps, usage of ${V} counts)`, 'the checkpoint is from another vocab_size or another program: resume with the config.yaml of its run');
  }
  return (usage as number[][]).map((h) => [...h]);
}
