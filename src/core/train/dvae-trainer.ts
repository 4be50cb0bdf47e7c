/**
 * The dVAE training loop (Ramesh et al. 2021, Appendix A; docs/ARCHITECTURE.md "Models"). It never prints: it emits CoreEvents.
 *
 * Per update s (0-based): a batch from the DataLoader; lr(s), beta(s), tau(s) from dvaeSchedules; the loss
 * recon + beta * KL with gumbel noise drawn from the run's noise stream; backward; AdamW. Every log_every updates a
 * line in RUN/metrics.jsonl, every sample_every a grid of originals (top row) over reconstructions (bottom row) in
 * RUN/samples/, every checkpoint_every (and at the end, and on stop()) a checkpoint (checkpoint.ts).
 *
 * Weight decay applies to the conv weights (`.w`) only. Biases are left undecayed: decay exists to limit the scale of
 * weights that multiply activations; a bias only shifts them, and pulling it toward 0 shifts every pixel or logit
 * the same way without regularizing anything (the usual convention, which the paper follows for the prior: no decay
 * on gains and biases).
 *
 * Exact resume: everything random or stateful is saved in state.json and restored: the noise Philox (state()), the
 * loader position, AdamW's step (the moments are in optimizer.safetensors; a checkpoint whose optimizer.safetensors
 * holds no tensors, a converted model's, starts AdamW fresh), and the accumulators of the current
 * metrics interval and codebook-usage window. lr, beta and tau are pure functions of the step. So a resumed run's
 * losses are bitwise those of an uninterrupted run with the same seed (test/commands/dvae-commands.test.ts).
 *
 * Codebook usage: at every log step the current batch is encoded to argmax codes (no noise, so no random numbers are
 * drawn); the last USAGE_WINDOW such batches form the window. perplexity = exp(H(p)), p the codes' frequencies in the
 * window (V when every code is equally used, 1 when one code is); dead codes = codes not seen in the window.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { ConfigError, DvaeConfig, dvaeConfig, writeRunConfig } from '../config';
import { DataLoader } from '../data/loader';
import { openDataSource } from '../data/sources/open';
import { EventSink, silentSink } from '../events';
import { RunLock, acquireRunLock } from '../io/run-lock';
import { planesToRgb, tileImages, writePng } from '../image/grid';
import { Dvae, dvaeLoss, dvaeSchedules, kmeansCodebookInit } from '../models/dvae';
import { parseDevice } from '../backend/device';
import { Philox, Tensor, backward, noGrad, readScalars, tidy, zeroGrad } from '../tensor';
import { AdamW } from './adamw';
import { clipGradNorm } from './clip';
import {
  CHECKPOINTS_DIR,
  CheckpointError,
  loadCheckpointModel,
  resolveTrainingStart,
  restoreCheckpointOptimizer,
  writeCheckpoint,
} from './checkpoint';
import { startPeakMemory } from './peak-memory';
import { removeInterruptedWrites, truncateMetrics } from './run-folder';

export const METRICS_FILE = 'metrics.jsonl';
export const SAMPLES_DIR = 'samples';
/** The gumbel noise's stream: Philox(seed).fork(this) ('nois'); init uses Philox(seed), data its own fork. */
export const NOISE_STREAM_ID = 0x6e6f6973;
/** The k-means codebook init's images and draws: Philox(seed).fork(this) ('kmin'), apart from the training data order. */
export const CODEBOOK_INIT_STREAM_ID = 0x6b6d696e;
/** Log-step batches in the codebook-usage window. */
export const USAGE_WINDOW = 4;
/** Images (of the batch) shown in a sample grid. */
const SAMPLE_IMAGES = 8;
/** Progress events at most this often (ms), plus the first and last update. */
const PROGRESS_INTERVAL_MS = 200;

export interface DvaeTrainOptions {
  /** The resolved config (train-dvae writes it to RUN/config.yaml). On resume, the run's config (+ overrides). */
  readonly config: DvaeConfig;
  /** The run directory. */
  readonly out: string;
  /** Continue from RUN/latest. Without it, a run directory that already has checkpoints is an error. */
  readonly resume?: boolean;
  /** Checkpoints to keep (default 3). */
  readonly keepCheckpoints?: number;
  readonly events?: EventSink;
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

export interface DvaeTrainResult {
  readonly runDir: string;
  /** Updates completed. */
  readonly step: number;
  readonly totalSteps: number;
  /** True when stop() ended the run early. */
  readonly stopped: boolean;
  readonly resumedFrom?: number;
  readonly checkpoint: string;
  readonly lastLoss?: number;
  /** The most bytes the run held on its device (runtime.device) from model creation to the end (peak-memory.ts). */
  readonly peakBytesInUse: number;
}

/** Accumulators saved in state.json `metrics`, so a resumed run writes the same metrics.jsonl lines. */
interface MetricsState {
  interval_loss_sum: number;
  interval_steps: number;
  /** Histograms of the usage window's batches (oldest first), each V counts. */
  usage: number[][];
}

export class DvaeTrainer {
  private stopRequested = false;
  private readonly events: EventSink;

  constructor(private readonly options: DvaeTrainOptions) {
    this.events = options.events ?? silentSink;
  }

  /** Ask the loop to finish the current update, write a checkpoint and return (safe to call from a signal handler). */
  stop(): void {
    this.stopRequested = true;
  }

  get stopping(): boolean {
    return this.stopRequested;
  }

  /** Trains under the run directory's lock (io/run-lock.ts): a second process on the same run is refused. */
  async run(): Promise<DvaeTrainResult> {
    const lock = acquireRunLock(this.options.out, { command: 'dalle train-dvae', events: this.events });
    try {
      return await this.train(lock);
    } finally {
      lock.release();
    }
  }

  // Everything is checked (checkpoint, config against its weights, data) before the first write into the run, so a
  // refused start or resume leaves the run directory as it was.
  private async train(lock: RunLock): Promise<DvaeTrainResult> {
    const { config, out } = this.options;
    const t = config.train;
    const emit = this.events.emit.bind(this.events);
    // Where we start: fresh, or the run's latest checkpoint.
    const { state: resumed, dir: resumedDir, startStep } = resolveTrainingStart(out, 'dvae', 'dalle train-dvae', this.options.resume, t.steps);
    if (config.data.path === null || config.data.path === undefined) {
      throw new ConfigError('is not set: the dVAE needs images to train on', {
        keyPath: 'data.path',
        hint: 'pass --data PATH (a folder, a .jsonl/.csv manifest or .tar shards), or --set data.path=PATH',
      });
    }

    // Data.
    emit({ type: 'stage', name: 'loading data', detail: config.data.path });
    const source = await openDataSource(config.data.path);
    const loaderOptions = {
      batchSize: t.batch_size,
      resolution: config.data.resolution,
      seed: config.runtime.seed,
      maxInputPixels: config.data.max_input_pixels,
      prefetchBatches: config.data.prefetch_batches,
      events: this.events,
    };
    const loader = resumed?.data ? DataLoader.fromState(source, loaderOptions, resumed.data) : new DataLoader(source, loaderOptions);

    // Model, optimizer, noise. The model is initialized on the host (the seeded init is the same on every device) and
    // moved to runtime.device once; the optimizer's moments are made beside its parameters.
    const device = parseDevice(config.runtime.device);
    const peakBytesInUse = startPeakMemory(device); // the model, its optimizer and the steps
    const model = new Dvae(config, { seed: config.runtime.seed }).to(device);
    const named = model.namedParameters();
    const decay = named.filter(([name]) => name.endsWith('.w'));
    const noDecay = named.filter(([name]) => !name.endsWith('.w'));
    const toGroup = (list: Array<[string, Tensor]>) => list.map(([name, tensor]) => ({ name, tensor }));
    const optimizer = new AdamW(
      [{ params: toGroup(decay) }, { params: toGroup(noDecay), weightDecay: 0 }],
      { lr: t.lr, beta1: t.beta1, beta2: t.beta2, eps: t.eps, weightDecay: t.weight_decay },
    );
    try {
      const schedules = dvaeSchedules(config);
      let noise = new Philox(config.runtime.seed).fork(NOISE_STREAM_ID);
      const V = model.arch.vocab_size;
      let metrics: MetricsState = { interval_loss_sum: 0, interval_steps: 0, usage: [] };
      const metricsFile = path.join(out, METRICS_FILE);
      let weightsOnly = false;
      if (resumed && resumedDir) {
        loadCheckpointModel(resumedDir, new Map(named));
        weightsOnly = restoreCheckpointOptimizer(resumedDir, resumed, optimizer) === 'fresh';
        // A weights-only checkpoint (a converted model) starts the rest as a fresh run would, except what it records.
        if (resumed.rng.noise) noise = Philox.fromState(resumed.rng.noise);
        else if (!weightsOnly) throw new CheckpointError(`${resumedDir}/state.json has no rng.noise`, 'the checkpoint is not from train-dvae: train again');
        if (!weightsOnly || Object.keys(resumed.metrics).length > 0) metrics = checkMetricsState(resumed.metrics, V, resumedDir);
      }

      // All checked: the first write.
      removeInterruptedWrites(lock, [CHECKPOINTS_DIR, SAMPLES_DIR], this.events);
      emit({ type: 'artifact', kind: 'config', path: writeRunConfig(out, dvaeConfig, config) });
      // Lines past the checkpoint (all of them on a fresh start) were written by a run that died before checkpointing.
      truncateMetrics(metricsFile, startStep);
      if (resumed) {
        emit({ type: 'log', level: 'info', message: `resuming from ${resumedDir} (update ${startStep} of ${t.steps})` });
        if (weightsOnly) emit({ type: 'log', level: 'info', message: `${resumedDir} holds weights but no optimizer state: AdamW starts fresh (zero moments, step 0)` });
      } else if (t.codebook_init === 'kmeans') {
        await initCodebook(model, source, config, loaderOptions, this.events);
      }

      const params = optimizer.parameters;
      let step = startStep;
      let lastCheckpoint: string | undefined = resumedDir;
      let lastCheckpointStep = resumed ? startStep : -1;
      let lastLoss: number | undefined;
      let lastProgress = 0;
      const started = performance.now();
      let intervalStart = started;
      let intervalStepsHere = 0; // updates of this interval run by this process (a resumed interval began in another)
      let lastEmitted: { step: number; metrics: Record<string, number> } | undefined;
      const checkpoint = (): void => {
        if (lastCheckpointStep === step) return;
        lastCheckpoint = writeCheckpoint(out, {
          model: named,
          optimizer: optimizer.stateTensors(),
          state: {
            kind: 'dvae',
            step,
            optimizer_step: optimizer.step,
            rng: { noise: noise.state() },
            data: loader.state(),
            metrics: { ...metrics },
          },
          keep: this.options.keepCheckpoints,
        });
        lastCheckpointStep = step;
        emit({ type: 'artifact', kind: 'checkpoint', path: lastCheckpoint });
      };

      emit({ type: 'stage', name: 'training', detail: `${model.parameterCount()} parameters, updates ${startStep + 1}-${t.steps}` });
      while (step < t.steps && !this.stopRequested) {
        const batch = await loader.next();
        const lr = schedules.lr(step);
        const beta = schedules.beta(step);
        const tau = schedules.tau(step);
        const logging = (step + 1) % t.log_every === 0;
        // Transfers of a step: the batch in; its scalars out (one copy); at a log step, the batch's codes out.
        const values = tidy(() => {
          const x = Tensor.from(batch.images, batch.shape, 'f32', device); // (B, 3, R, R)
          zeroGrad(params);
          const r = dvaeLoss(model, x, {
            tau,
            beta,
            rng: noise,
            usageWeight: t.usage_weight,
            straightThrough: t.straight_through,
            encoderFrozen: step < t.decoder_warmup_steps,
            reconLoss: t.recon_loss,
            reconSigma: t.recon_sigma,
          });
          backward(r.loss);
          // Clipping (train.grad_clip > 0; the paper has none) bounds the update a single loss spike can make.
          const { norm } = clipGradNorm(params, t.grad_clip);
          optimizer.update(lr);
          const [loss, recon, kl, reconPerDim, klPerCell, usageGap] = readScalars([r.loss, r.recon, r.kl, r.reconPerDim, r.klPerCell, r.usageGap]);
          // Codebook usage: the batch's argmax codes under the updated weights (no noise, so no random numbers drawn).
          const codes = logging ? (noGrad(() => model.encode(x).toArray()) as Int32Array) : undefined;
          return { loss, recon, kl, reconPerDim, klPerCell, usageGap, gradNorm: norm, codes };
        });
        if (!Number.isFinite(values.loss)) {
          throw new Error(`dalle: the dVAE loss became ${values.loss} at update ${step + 1} (recon ${values.recon}, kl ${values.kl}); lower train.lr, or resume from an earlier checkpoint`);
        }
        step++;
        lastLoss = values.loss;
        metrics.interval_loss_sum += values.loss;
        metrics.interval_steps += 1;
        intervalStepsHere += 1;

        const now = performance.now();
        const imagesPerS = ((step - startStep) * t.batch_size) / Math.max(1e-3, (now - started) / 1000);
        const shown = { loss: values.loss, recon: values.recon, kl: values.kl, tau, beta, lr, images_per_s: imagesPerS };
        if (now - lastProgress >= PROGRESS_INTERVAL_MS || step === t.steps || step === startStep + 1) {
          lastProgress = now;
          emit({ type: 'progress', task: 'train', step, total: t.steps, unit: 'update', metrics: shown });
          lastEmitted = undefined;
        } else {
          lastEmitted = { step, metrics: shown };
        }

        if (values.codes) {
          const hist = new Array<number>(V).fill(0);
          for (const c of values.codes) hist[c]++;
          metrics.usage.push(hist);
          if (metrics.usage.length > USAGE_WINDOW) metrics.usage.shift();
          const usage = codebookUsage(metrics.usage, V);
          const intervalS = Math.max(1e-3, (now - intervalStart) / 1000);
          const line: DvaeMetricsLine = {
            step,
            loss: values.loss,
            recon: values.recon,
            kl: values.kl,
            recon_per_dim: values.reconPerDim,
            kl_per_cell: values.klPerCell,
            usage_gap: values.usageGap,
            grad_norm: values.gradNorm,
            loss_mean: metrics.interval_loss_sum / metrics.interval_steps,
            lr, beta, tau,
            perplexity: usage.perplexity,
            dead_codes: usage.deadCodes,
            epoch: batch.epoch,
            images_per_s: (intervalStepsHere * t.batch_size) / intervalS,
          };
          fs.appendFileSync(metricsFile, JSON.stringify(line) + '\n');
          metrics.interval_loss_sum = 0;
          metrics.interval_steps = 0;
          intervalStart = now;
          intervalStepsHere = 0;
          const { step: _step, ...shown } = line;
          emit({ type: 'metrics', step, split: 'train', values: shown });
        }

        if (step % t.sample_every === 0) {
          const file = await writeSampleGrid(model, batch.images, batch.shape, path.join(out, SAMPLES_DIR, `step-${step}.png`));
          emit({ type: 'artifact', kind: 'samples', path: file });
        }
        if (step % t.checkpoint_every === 0) checkpoint();
      }
      // The bar ends at the last update done (stop() can end the loop between throttled progress events).
      if (lastEmitted) emit({ type: 'progress', task: 'train', step: lastEmitted.step, total: t.steps, unit: 'update', metrics: lastEmitted.metrics });
      checkpoint();
      emit({ type: 'done', task: 'train' });
      return {
        runDir: out,
        step,
        totalSteps: t.steps,
        stopped: step < t.steps,
        resumedFrom: resumed?.step,
        checkpoint: lastCheckpoint as string,
        lastLoss,
        peakBytesInUse: peakBytesInUse(),
      };
    } finally {
      loader.close();
      optimizer.dispose();
      model.dispose();
    }
  }
}

/** train.codebook_init: kmeans: clusters the encoder features of train.codebook_init_images images of the source. */
async function initCodebook(model: Dvae, source: Awaited<ReturnType<typeof openDataSource>>, config: DvaeConfig, loaderOptions: { resolution: number; maxInputPixels: number; prefetchBatches: number }, events: EventSink): Promise<void> {
  const t = config.train;
  const count = Math.min(t.codebook_init_images, source.records.length);
  events.emit({ type: 'stage', name: 'codebook init', detail: `k-means of the encoder features of ${count} images` });
  const rng = new Philox(config.runtime.seed).fork(CODEBOOK_INIT_STREAM_ID);
  const batchSize = Math.min(32, count);
  const loader = new DataLoader(source, { ...loaderOptions, batchSize, seed: config.runtime.seed ^ CODEBOOK_INIT_STREAM_ID, events });
  const R = config.data.resolution;
  const C = model.arch.input_channels;
  const images = new Float32Array(count * C * R * R);
  try {
    for (let seen = 0; seen < count; ) {
      const batch = await loader.next();
      const take = Math.min(batchSize, count - seen);
      images.set(batch.images.subarray(0, take * C * R * R), seen * C * R * R);
      seen += take;
    }
  } finally {
    loader.close();
  }
  const r = kmeansCodebookInit(model, images, [count, C, R, R], { rng, logitStd: t.codebook_init_logit_std });
  events.emit({ type: 'log', level: 'info', message: `codebook init: k-means of ${r.vectors} feature vectors, perplexity ${r.perplexity.toFixed(1)} of ${model.arch.vocab_size}, ${r.deadCodes} empty codes` });
}

/** perplexity exp(H) of the pooled code histogram, and the codes never seen. */
export function codebookUsage(histograms: readonly (readonly number[])[], V: number): { perplexity: number; deadCodes: number } {
  const total = new Float64Array(V);
  for (const h of histograms) for (let v = 0; v < V; v++) total[v] += h[v];
  let n = 0;
  for (const c of total) n += c;
  let entropy = 0;
  let dead = 0;
  for (const c of total) {
    if (c === 0) dead++;
    else entropy -= (c / n) * Math.log(c / n);
  }
  return { perplexity: n > 0 ? Math.exp(entropy) : 0, deadCodes: dead };
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

function checkMetricsState(value: Readonly<Record<string, unknown>>, V: number, dir: string): MetricsState {
  const m = value as Partial<MetricsState>;
  const ok =
    typeof m.interval_loss_sum === 'number' &&
    Number.isSafeInteger(m.interval_steps) &&
    Array.isArray(m.usage) &&
    m.usage.every((h) => Array.isArray(h) && h.length === V);
  if (!ok) {
    throw new CheckpointError(`${dir}/state.json: metrics are not a dVAE trainer's (interval_loss_sum, interval_steps, usage of ${V} counts)`, 'the checkpoint is from another vocab_size or another program: resume with the config.yaml of its run');
  }
  return { interval_loss_sum: m.interval_loss_sum as number, interval_steps: m.interval_steps as number, usage: (m.usage as number[][]).map((h) => [...h]) };
}
