/**
 * The prior's training loop (Ramesh et al. 2021, Appendix B; docs/ARCHITECTURE.md "Models"). It never prints: it emits CoreEvents.
 *
 * Data: the data set's images encoded once by the dVAE into token grids (data/token-cache.ts), captions tokenized on
 * the fly with the run's BPE tokenizer (RUN/tokenizer.json: --tokenizer FILE, or trained on the training captions).
 * Per update s (0-based): batch_size examples in the seeded epoch order (data/order.ts: epochOrder, captionDraws);
 * each caption replaced by all padding tokens with probability train.caption_dropout, else BPE-encoded with dropout
 * data.bpe_dropout (both drawn from the run's augmentation stream), truncated to text_len and padded (padText);
 * loss = text_loss_weight * text CE + image_loss_weight * image CE (nats per token); backward; global gradient norm
 * clipped to grad_clip; AdamW (beta 0.9 / 0.96, eps 1e-8, weight decay 4.5e-2 on the linear weights only, not on
 * gains, biases or embeddings) with lr warmed up linearly over warmup_steps then cosine-decayed to lr_min.
 * Every log_every updates a line in RUN/metrics.jsonl; every val_every a line with the val split's losses per text
 * and per image token (no dropout of either kind); every checkpoint_every (and at the end, and on stop()) a checkpoint.
 *
 * Exact resume: state.json holds the data position (epoch, position), the augmentation Philox, AdamW's step and the
 * metric accumulators; the token cache key must match (same dVAE checkpoint and data). lr is a pure function of the
 * step. So a resumed run's losses are those of an uninterrupted run (test/train/prior-trainer.test.ts).
 * Key: B = batch_size, L = text_len, N = image_grid^2.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { ConfigError, PriorConfig, priorConfig, writeRunConfig } from '../config';
import { TokenCache, TokenSplit, loadOrBuildTokenCache } from '../data/token-cache';
import { captionDraws, dataRandom, epochOrder, pickCaption } from '../data/order';
import { EventSink, silentSink } from '../events';
import { RunLock, acquireRunLock } from '../io/run-lock';
import { loadTrainedDvae } from '../image/dvae-codec';
import { Prior, padText, priorDecays } from '../models/prior';
import { parseDevice } from '../backend/device';
import { Philox, Tensor, backward, noGrad, readScalars, tidy, zeroGrad } from '../tensor';
import { TextTokenizer } from '../text';
import { AdamW } from './adamw';
import {
  CHECKPOINTS_DIR,
  CheckpointError,
  loadCheckpointModel,
  readCheckpointOptimizer,
  resolveTrainingStart,
  writeCheckpoint,
} from './checkpoint';
import { clipGradNorm } from './clip';
import { removeInterruptedWrites, truncateMetrics } from './run-folder';
import { PrecisionState, createPrecision, priorResblocks } from './precision';
import { startPeakMemory } from './peak-memory';
import { warmupCosine } from './schedule';

export const METRICS_FILE = 'metrics.jsonl';
export const TOKENIZER_FILE = 'tokenizer.json';
/** The augmentation stream (caption dropout, BPE dropout): Philox(seed).fork(this) ('augm'). Init uses Philox(seed). */
export const AUG_STREAM_ID = 0x6175676d;
const PROGRESS_INTERVAL_MS = 200;

export interface PriorTrainOptions {
  /** The resolved config (data.path and data.dvae set). On resume, the run's config (+ overrides). */
  readonly config: PriorConfig;
  readonly out: string;
  /** A tokenizer.json to use (copied to RUN/tokenizer.json); default: RUN/tokenizer.json on resume, else trained. */
  readonly tokenizer?: string;
  readonly resume?: boolean;
  readonly keepCheckpoints?: number;
  readonly events?: EventSink;
}

export interface PriorMetricsLine {
  step: number;
  loss: number;
  text_loss: number;
  image_loss: number;
  /** Mean loss over the updates since the previous line. */
  loss_mean: number;
  grad_norm: number;
  lr: number;
  epoch: number;
  examples_per_s: number;
  ms_per_update: number;
  /** fp16 only (runtime.precision): the gradient scale each resblock ran this update with, and updates skipped so far. */
  grad_scales?: number[];
  skipped?: number;
}

export interface PriorValLine {
  step: number;
  val_loss: number;
  val_text_loss: number;
  val_image_loss: number;
  val_examples: number;
}

export interface PriorTrainResult {
  readonly runDir: string;
  readonly step: number;
  readonly totalSteps: number;
  readonly stopped: boolean;
  readonly resumedFrom?: number;
  readonly checkpoint: string;
  readonly lastLoss?: number;
  readonly lastVal?: PriorValLine;
  readonly tokenCache: string;
  /** The most bytes the run held on its device (runtime.device) from model creation to the end (peak-memory.ts). */
  readonly peakBytesInUse: number;
}

interface MetricsState {
  interval_loss_sum: number;
  interval_steps: number;
  token_cache: string;
}

/** Where the next example comes from: order(epoch)[position]. */
interface DataPosition {
  epoch: number;
  position: number;
}

/** The training examples in seeded epoch order, one caption drawn per image per epoch. */
class TokenBatcher {
  private orderEpoch = -1;
  private order: Uint32Array = new Uint32Array(0);
  private draws: Float64Array = new Float64Array(0);
  private readonly data: Philox;

  constructor(private readonly split: TokenSplit, readonly seed: number, public pos: DataPosition) {
    this.data = dataRandom(seed);
  }

  get records(): number {
    return this.split.shape[0];
  }

  /** The next `count` examples: indices into the split and their captions. */
  next(count: number): Array<{ index: number; caption: string; epoch: number }> {
    const out = [];
    const N = this.records;
    while (out.length < count) {
      if (this.pos.position >= N) this.pos = { epoch: this.pos.epoch + 1, position: 0 };
      if (this.orderEpoch !== this.pos.epoch) {
        this.order = epochOrder(this.data, this.pos.epoch, N, true);
        this.draws = captionDraws(this.data, this.pos.epoch, N);
        this.orderEpoch = this.pos.epoch;
      }
      const index = this.order[this.pos.position];
      out.push({ index, caption: pickCaption(this.split.captions[index], this.draws[index]), epoch: this.pos.epoch });
      this.pos = { epoch: this.pos.epoch, position: this.pos.position + 1 };
    }
    return out;
  }
}

/** Image tokens (B, N) of the given examples. */
function imageTokens(split: TokenSplit, indices: readonly number[]): Int32Array {
  const n = split.shape[1] * split.shape[2];
  const out = new Int32Array(indices.length * n);
  indices.forEach((idx, b) => out.set(split.tokens.subarray(idx * n, (idx + 1) * n), b * n));
  return out;
}

export class PriorTrainer {
  private stopRequested = false;
  private readonly events: EventSink;

  constructor(private readonly options: PriorTrainOptions) {
    this.events = options.events ?? silentSink;
  }

  stop(): void {
    this.stopRequested = true;
  }

  get stopping(): boolean {
    return this.stopRequested;
  }

  /** Trains under the run directory's lock (io/run-lock.ts): a second process on the same run is refused. */
  async run(): Promise<PriorTrainResult> {
    const lock = acquireRunLock(this.options.out, { command: 'dalle train-prior', events: this.events });
    try {
      return await this.train(lock);
    } finally {
      lock.release();
    }
  }

  // Everything is checked (checkpoint, config against its weights, dVAE, data and its token cache, tokenizer) before
  // the first write into the run, so a refused start or resume leaves the run directory as it was.
  private async train(lock: RunLock): Promise<PriorTrainResult> {
    const { config, out } = this.options;
    const t = config.train;
    const m = config.model;
    const emit = this.events.emit.bind(this.events);
    const { state: resumed, dir: resumedDir, startStep } = resolveTrainingStart(out, 'prior', 'dalle train-prior', this.options.resume, t.steps);
    if (!config.data.path) {
      throw new ConfigError('is not set: the prior needs captioned images to train on', { keyPath: 'data.path', hint: 'pass --data DIR (e.g. the output of `dalle dataset emoji`), or --set data.path=DIR' });
    }
    if (!config.data.dvae) {
      throw new ConfigError('is not set: the prior trains on the token grids of a trained dVAE', { keyPath: 'data.dvae', hint: 'pass --dvae RUN (a `dalle train-dvae` run directory or one of its checkpoints)' });
    }

    // The dVAE and the token grids.
    emit({ type: 'stage', name: 'loading data', detail: `${config.data.path} with the dVAE ${config.data.dvae}` });
    // Every model of the job on runtime.device: the dVAE (it encodes the images when the token cache is built), the prior.
    const device = parseDevice(config.runtime.device);
    const dvae = loadTrainedDvae(config.data.dvae, device);
    let cache: TokenCache;
    try {
      if (dvae.gridSide !== m.image_grid || dvae.model.arch.vocab_size !== m.image_vocab) {
        throw new ConfigError(
          `the dVAE ${dvae.checkpoint} makes ${dvae.gridSide}x${dvae.gridSide} grids of ${dvae.model.arch.vocab_size} codes, the prior is set up for ${m.image_grid}x${m.image_grid} grids of ${m.image_vocab}`,
          { keyPath: 'model.image_grid', hint: `set --set model.image_grid=${dvae.gridSide} --set model.image_vocab=${dvae.model.arch.vocab_size}, or use the dVAE this config was made for` },
        );
      }
      // A resume needs the token grids it was trained on: a changed data set or dVAE is refused before any encoding.
      const checkKey = (key: string): void => {
        const trainedOn = (resumed?.metrics as Partial<MetricsState> | undefined)?.token_cache;
        if (resumed && trainedOn !== key) {
          throw new CheckpointError(
            `${resumedDir} was trained on token cache ${trainedOn}, but the data set and dVAE now give ${key}: the images, captions or dVAE checkpoint changed`,
            'resume with the same --data and --dvae (data.path, data.dvae in the run config.yaml), or start a new run',
          );
        }
      };
      cache = await loadOrBuildTokenCache({ data: config.data.path, dvae, events: this.events, checkKey });
    } finally {
      dvae.model.dispose();
    }
    const train = cache.train;
    if (train.shape[0] < 1) throw new ConfigError(`has no training images`, { keyPath: 'data.path' });
    const { tokenizer, save: saveTokenizer } = await this.prepareTokenizer(config, train, !!resumed);

    const peakBytesInUse = startPeakMemory(device); // the model, its optimizer and the steps: not the token cache's encoding
    const model = new Prior(m, new Philox(config.runtime.seed)).to(device); // seeded init on the host, moved once
    model.recompute = t.recompute; // activation recomputation per block (memory for time)
    const named = model.namedParameters();
    const toGroup = (list: Array<[string, Tensor]>) => list.map(([name, tensor]) => ({ name, tensor }));
    const optimizer = new AdamW(
      [{ params: toGroup(named.filter(([n]) => priorDecays(n))) }, { params: toGroup(named.filter(([n]) => !priorDecays(n))), weightDecay: 0 }],
      { lr: t.lr, beta1: t.beta1, beta2: t.beta2, eps: t.eps, weightDecay: t.weight_decay },
    );
    // Mixed precision (runtime.precision; train/precision): fp32 does nothing; fp16 runs each resblock (2 per layer)
    // with its own gradient scale (train.grad_scale; one data-parallel worker) and skips updates that overflow.
    const precision = createPrecision(config.runtime.precision, { gradScale: t.grad_scale, workers: 1 });
    precision.attach(priorResblocks(model));
    model.residual = precision;
    precision.attachOptimizer(named, optimizer.stateTensors()); // 16-bit Adam moments where it pays (fp16, bf16)
    try {
      const lrAt = warmupCosine(t.lr, t.lr_min, t.warmup_steps, t.steps);
      let aug = new Philox(config.runtime.seed).fork(AUG_STREAM_ID);
      let metrics: MetricsState = { interval_loss_sum: 0, interval_steps: 0, token_cache: cache.key };
      let position: DataPosition = { epoch: 0, position: 0 };
      const metricsFile = path.join(out, METRICS_FILE);
      if (resumed && resumedDir) {
        loadCheckpointModel(resumedDir, new Map(named));
        const moments = readCheckpointOptimizer(resumedDir);
        try {
          optimizer.loadStateTensors(resumed.optimizer_step, (name) => moments.get(name));
        } catch (error) {
          throw new CheckpointError(`${resumedDir}: ${error instanceof Error ? error.message : String(error)}`, 'the checkpoint was written for another model configuration: resume with the config.yaml of its run');
        }
        if (!resumed.rng.aug) throw new CheckpointError(`${resumedDir}/state.json has no rng.aug`, 'the checkpoint is not from train-prior: train again');
        aug = Philox.fromState(resumed.rng.aug);
        const ms = resumed.metrics as Partial<MetricsState>; // its token_cache is cache.key (checkKey above)
        metrics = { interval_loss_sum: Number(ms.interval_loss_sum), interval_steps: Number(ms.interval_steps), token_cache: cache.key };
        precision.load((resumed.metrics as { precision?: PrecisionState }).precision);
        const d = resumed.data;
        if (!d || d.records !== train.shape[0] || d.seed !== config.runtime.seed) {
          throw new CheckpointError(`${resumedDir}/state.json's data position does not fit ${train.shape[0]} training images with seed ${config.runtime.seed}`, 'resume with the run\'s own config.yaml and data');
        }
        position = { epoch: d.epoch, position: d.position };
      }

      // All checked: the first write.
      removeInterruptedWrites(lock, [CHECKPOINTS_DIR], this.events);
      emit({ type: 'artifact', kind: 'config', path: writeRunConfig(out, priorConfig, config) });
      emit({ type: 'artifact', kind: 'tokenizer', path: saveTokenizer() });
      // Lines past the checkpoint (all of them on a fresh start) were written by a run that died before checkpointing.
      truncateMetrics(metricsFile, startStep);
      if (resumed) emit({ type: 'log', level: 'info', message: `resuming from ${resumedDir} (update ${startStep} of ${t.steps})` });
      const batcher = new TokenBatcher(train, config.runtime.seed, position);
      const L = m.text_len;
      const N = m.image_grid * m.image_grid;
      const B = t.batch_size;
      const weights = { text: t.text_loss_weight, image: t.image_loss_weight };
      const captionIds = (caption: string, rng?: Philox): number[] => {
        const ids = tokenizer.encode(caption, rng ? { dropout: config.data.bpe_dropout, rng } : {});
        return ids.length > L ? ids.slice(0, L) : ids;
      };

      const params = optimizer.parameters;
      let step = startStep;
      let lastCheckpoint: string | undefined = resumedDir;
      let lastCheckpointStep = resumed ? startStep : -1;
      let lastLoss: number | undefined;
      let lastVal: PriorValLine | undefined;
      let lastProgress = 0;
      const started = performance.now();
      let intervalStart = started;
      let intervalStepsHere = 0;
      let lastEmitted: { step: number; metrics: Record<string, number> } | undefined;
      const checkpoint = (): void => {
        if (lastCheckpointStep === step) return;
        lastCheckpoint = writeCheckpoint(out, {
          model: named,
          optimizer: optimizer.stateTensors(),
          state: {
            kind: 'prior',
            step,
            optimizer_step: optimizer.step,
            rng: { aug: aug.state() },
            data: { seed: config.runtime.seed, records: train.shape[0], epoch: batcher.pos.epoch, position: batcher.pos.position },
            metrics: { ...metrics, precision: precision.state() },
          },
          keep: this.options.keepCheckpoints,
        });
        lastCheckpointStep = step;
        emit({ type: 'artifact', kind: 'checkpoint', path: lastCheckpoint });
      };
      const validate = (): void => {
        if (!cache.val) return;
        const r = validationLoss(model, cache.val, B, t.val_batches, (c) => captionIds(c), L, m.text_vocab, weights);
        lastVal = { step, ...r };
        fs.appendFileSync(metricsFile, JSON.stringify(lastVal) + '\n');
        const { step: _s, ...values } = lastVal;
        emit({ type: 'metrics', step, split: 'val', values });
      };

      emit({ type: 'stage', name: 'training', detail: `${model.parameterCount()} parameters, ${train.shape[0]} images, updates ${startStep + 1}-${t.steps}` });
      while (step < t.steps && !this.stopRequested) {
        // The loop is otherwise synchronous: yield to the event loop once per update so that a SIGINT handler (the
        // command's Ctrl-C, which calls stop()) gets to run.
        await new Promise<void>((resolve) => setImmediate(resolve));
        if (this.stopRequested) break;
        const examples = batcher.next(B);
        const ids = examples.map((e) => (t.caption_dropout > 0 && aug.uniform() < t.caption_dropout ? [] : captionIds(e.caption, aug)));
        const text = padText(ids, L, m.text_vocab);
        const image = imageTokens(train, examples.map((e) => e.index));
        const lr = lrAt(step);
        const stepStart = performance.now();
        // Transfers of a step: the batch's text and image tokens in; its loss, text and image losses out (one copy:
        // the loss decides whether the update is taken).
        const values = tidy(() => {
          zeroGrad(params);
          const r = model.loss(Tensor.from(text, [B, L], 'i32', device), Tensor.from(image, [B, N], 'i32', device), weights);
          backward(r.loss);
          // Gradients back in true units; false when a resblock's fp16 gradient overflowed: the update is skipped.
          const finite = precision.unscaleGradients();
          const { norm } = clipGradNorm(params, t.grad_clip);
          const [loss, textLoss, imageLoss] = readScalars([r.loss, r.textLoss, r.imageLoss]);
          if (finite && Number.isFinite(loss) && Number.isFinite(norm)) optimizer.update(lr);
          precision.endStep();
          return { loss, text: textLoss, image: imageLoss, norm };
        });
        if (!Number.isFinite(values.loss) || !Number.isFinite(values.norm)) {
          throw new Error(`dalle: the prior's loss or gradient became non-finite at update ${step + 1} (loss ${values.loss}, gradient norm ${values.norm}); lower train.lr, or resume from an earlier checkpoint`);
        }
        step++;
        lastLoss = values.loss;
        metrics.interval_loss_sum += values.loss;
        metrics.interval_steps += 1;
        intervalStepsHere += 1;
        const now = performance.now();
        const shown = { loss: values.loss, text_loss: values.text, image_loss: values.image, lr, ms_per_update: now - stepStart };
        if (now - lastProgress >= PROGRESS_INTERVAL_MS || step === t.steps || step === startStep + 1) {
          lastProgress = now;
          emit({ type: 'progress', task: 'train', step, total: t.steps, unit: 'update', metrics: shown });
          lastEmitted = undefined;
        } else {
          lastEmitted = { step, metrics: shown };
        }
        if (step % t.log_every === 0) {
          const intervalS = Math.max(1e-3, (now - intervalStart) / 1000);
          const line: PriorMetricsLine = {
            step,
            loss: values.loss,
            text_loss: values.text,
            image_loss: values.image,
            loss_mean: metrics.interval_loss_sum / metrics.interval_steps,
            grad_norm: values.norm,
            lr,
            epoch: examples[examples.length - 1].epoch,
            examples_per_s: (intervalStepsHere * B) / intervalS,
            ms_per_update: (1000 * intervalS) / Math.max(1, intervalStepsHere),
            ...precision.metrics(),
          };
          fs.appendFileSync(metricsFile, JSON.stringify(line) + '\n');
          metrics.interval_loss_sum = 0;
          metrics.interval_steps = 0;
          intervalStart = performance.now();
          intervalStepsHere = 0;
          const { step: _step, grad_scales: _scales, ...rest } = line;
          emit({ type: 'metrics', step, split: 'train', values: rest });
        }
        if (step % t.val_every === 0 || step === t.steps) {
          validate();
          intervalStart = performance.now(); // validation time does not count as training throughput
        }
        if (step % t.checkpoint_every === 0) checkpoint();
      }
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
        lastVal,
        tokenCache: cache.dir,
        peakBytesInUse: peakBytesInUse(),
      };
    } finally {
      optimizer.dispose();
      model.dispose();
    }
  }

  /**
   * --tokenizer FILE (copied into the run by `save`), else RUN/tokenizer.json on resume, else one trained on the
   * captions (saved by `save`); checked against model.text_vocab.
   */
  private async prepareTokenizer(
    config: PriorConfig, train: TokenSplit, resuming: boolean,
  ): Promise<{ tokenizer: TextTokenizer; save: () => string }> {
    const { out } = this.options;
    const target = path.join(out, TOKENIZER_FILE);
    const emit = this.events.emit.bind(this.events);
    let tokenizer: TextTokenizer;
    // Nothing is written here: `save` writes RUN/tokenizer.json (when it is new) once everything else is checked.
    let isNew = true;
    if (this.options.tokenizer) {
      tokenizer = TextTokenizer.load(this.options.tokenizer);
      isNew = path.resolve(this.options.tokenizer) !== path.resolve(target);
    } else if (resuming || fs.existsSync(target)) {
      if (!fs.existsSync(target)) {
        throw new CheckpointError(`${target} is missing: the run's tokenizer is needed to resume`, 'pass the tokenizer the run was trained with: --tokenizer FILE');
      }
      tokenizer = TextTokenizer.load(target);
      isNew = false;
    } else {
      const captions = train.captions.flat();
      emit({ type: 'stage', name: 'training the tokenizer', detail: `${captions.length} captions, vocabulary ${config.model.text_vocab}` });
      const lowercase = config.data.lowercase;
      try {
        tokenizer = await TextTokenizer.train(captions, { vocabSize: config.model.text_vocab, lowercase });
      } catch (error) {
        // Few distinct captions make fewer merges than text_vocab asks for: text_vocab is then an upper bound, and
        // the tokenizer takes every merge there is (the model's extra ids are simply never used).
        const m = /yield only (\d+) tokens/.exec(error instanceof Error ? error.message : '');
        if (!m) throw error;
        emit({ type: 'log', level: 'warn', message: `the training captions make only ${m[1]} BPE tokens, fewer than model.text_vocab = ${config.model.text_vocab}: using ${m[1]}` });
        tokenizer = await TextTokenizer.train(captions, { vocabSize: Number(m[1]), lowercase });
      }
    }
    if (tokenizer.vocabSize > config.model.text_vocab) {
      throw new ConfigError(
        `is ${config.model.text_vocab}, but the tokenizer ${this.options.tokenizer ?? target} has ${tokenizer.vocabSize} tokens`,
        { keyPath: 'model.text_vocab', hint: `set --set model.text_vocab=${tokenizer.vocabSize} or larger, or use a smaller tokenizer` },
      );
    }
    if (tokenizer.lowercase !== config.data.lowercase) {
      emit({ type: 'log', level: 'warn', message: `the tokenizer ${tokenizer.lowercase ? 'lower-cases' : 'keeps the case of'} captions, but data.lowercase is ${config.data.lowercase}: the tokenizer's own setting is used` });
    }
    const chosen = tokenizer;
    return {
      tokenizer,
      save: () => {
        if (isNew) chosen.save(target);
        return target;
      },
    };
  }
}

/**
 * Mean cross-entropy per text token and per image token over (the first maxBatches batches of) a split, in order,
 * with each image's first caption and no dropout. Nats per token.
 */
export function validationLoss(
  model: Prior, split: TokenSplit, batchSize: number, maxBatches: number, encode: (caption: string) => number[],
  textLen: number, textVocab: number, weights: { text: number; image: number },
): { val_loss: number; val_text_loss: number; val_image_loss: number; val_examples: number } {
  const N = split.shape[1] * split.shape[2];
  const total = maxBatches > 0 ? Math.min(split.shape[0], maxBatches * batchSize) : split.shape[0];
  let text = 0;
  let image = 0;
  for (let start = 0; start < total; start += batchSize) {
    const indices: number[] = [];
    for (let i = start; i < Math.min(total, start + batchSize); i++) indices.push(i);
    const B = indices.length;
    const ids = padText(indices.map((i) => encode(pickCaption(split.captions[i], 0))), textLen, textVocab);
    const tokens = imageTokens(split, indices);
    const r = noGrad(() => tidy(() => {
      // A batch in on the model's device, its two losses out (one copy).
      const l = model.loss(Tensor.from(ids, [B, textLen], 'i32', model.device), Tensor.from(tokens, [B, N], 'i32', model.device), weights);
      const [t, i] = readScalars([l.textLoss, l.imageLoss]);
      return { t, i };
    }));
    // Every example has the same token counts, so the per-token mean is the example-weighted mean of batch means.
    text += r.t * B;
    image += r.i * B;
  }
  const vt = text / total;
  const vi = image / total;
  return { val_loss: weights.text * vt + weights.image * vi, val_text_loss: vt, val_image_loss: vi, val_examples: total };
}
