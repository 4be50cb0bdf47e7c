/**
 * The prior as a training task of the one loop (loop.ts; Ramesh et al. 2021, Appendix B; docs/ARCHITECTURE.md
 * "Models").
 *
 * Data: the data set's images encoded once by the dVAE into token grids (data/token-cache.ts), captions tokenized on
 * the fly with the run's BPE tokenizer (RUN/tokenizer.json: --tokenizer FILE, or trained on the training captions).
 * Per update s (0-based): batch_size examples in the seeded epoch order (data/order.ts: epochOrder, captionDraws);
 * each caption replaced by all padding tokens with probability train.caption_dropout, else BPE-encoded with dropout
 * data.bpe_dropout (both drawn from the run's augmentation stream), truncated to text_len and padded (padText);
 * loss = text_loss_weight * text CE + image_loss_weight * image CE (nats per token); the loop then clips the global
 * gradient norm to grad_clip and runs AdamW (beta 0.9 / 0.96, eps 1e-8, weight decay 4.5e-2 on the linear weights
 * only, not on gains, biases or embeddings) with lr warmed up linearly over warmup_steps then cosine-decayed to lr_min.
 * Every log_every updates a line in RUN/metrics.jsonl; every val_every a line with the val split's losses per text
 * and per image token (no dropout of either kind; eval/prior-split-loss.ts).
 *
 * Exact resume: besides what the loop saves, state.json holds the data position (epoch, position), the augmentation
 * Philox and the token cache key, which must match (same dVAE checkpoint and data). lr is a pure function of the
 * step. So a resumed run's losses are those of an uninterrupted run (test/train/prior-trainer.test.ts).
 * Key: B = batch_size, L = text_len, N = image_grid^2.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CheckpointError, CheckpointState } from '../checkpoint';
import { ConfigError, PriorConfig, priorConfig, writeRunConfig } from '../config';
import { TokenCache, TokenSplit, loadOrBuildTokenCache } from '../data/token-cache';
import { captionDraws, dataRandom, epochOrder, pickCaption } from '../data/order';
import { imageTokens, splitLossMeans, validationLossSums } from '../eval/prior-split-loss';
import { EventSink, silentSink } from '../events';
import { loadDvae } from '../models/dvae/load';
import { PRIOR_TOKENIZER_FILE } from '../models/prior/load';
import { Prior, padText, priorDecays } from '../models/prior';
import { Device, parseDevice } from '../backend/device';
import { Philox, Tensor } from '../tensor';
import { TextTokenizer } from '../text';
import { shareFromRankZero } from '../distributed/agree';
import type { Collective } from '../distributed/collective';
import { TrainingLoop, TrainingLoopOptions, TrainingResult, checkGlobalBatch } from './loop';
import { createPrecision, priorResblocks } from './precision';
import { Schedule, warmupCosine } from './schedule';
import { MetricsInterval, PrepareContext, RunWriter, StepForward, StepTiming, StepValues, TaskCheckpointState, TaskModel, TaskSettings, TrainingTask } from './task';

/** The augmentation stream (caption dropout, BPE dropout): Philox(seed).fork(this) ('augm'). Init uses Philox(seed). */
export const AUG_STREAM_ID = 0x6175676d;

export interface PriorTrainOptions extends TrainingLoopOptions {
  /** The resolved config (data.path and data.dvae set). On resume, the run's config (+ overrides). */
  readonly config: PriorConfig;
  /** A tokenizer.json to use (copied to RUN/tokenizer.json); default: RUN/tokenizer.json on resume, else trained. */
  readonly tokenizer?: string;
  readonly keepCheckpoints?: number;
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

export interface PriorTrainResult extends TrainingResult {
  readonly lastVal?: PriorValLine;
  readonly tokenCache: string;
}

/** Where the next example comes from: order(epoch)[position]. */
interface DataPosition {
  epoch: number;
  position: number;
}

/** A batch: its text (B, L) and image (B, N) tokens, and the epoch of its last example. */
interface PriorBatch {
  readonly text: Int32Array;
  readonly image: Int32Array;
  readonly epoch: number;
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

/** Trains a prior into a run directory: the one loop with the prior task. */
export class PriorTrainer extends TrainingLoop<PriorBatch, StepForward, never, Omit<PriorTrainResult, keyof TrainingResult>> {
  constructor(options: PriorTrainOptions) {
    super(new PriorTask(options.config, options.out, options.tokenizer, options.keepCheckpoints), options);
  }
}

class PriorTask implements TrainingTask<PriorBatch, StepForward, never, Omit<PriorTrainResult, keyof TrainingResult>> {
  readonly kind = 'prior' as const;
  readonly settings: TaskSettings;
  readonly device: Device;
  private readonly lrAt: Schedule;
  private events: EventSink = silentSink;
  private worldSize = 1;
  private rank = 0;
  private collective?: Collective;
  private cache?: TokenCache;
  private tokenizer?: TextTokenizer;
  private saveTokenizer: () => string = () => '';
  private batcher?: TokenBatcher;
  private model?: Prior;
  private aug: Philox;
  private lastVal?: PriorValLine;

  constructor(
    private readonly config: PriorConfig,
    private readonly out: string,
    private readonly tokenizerFile: string | undefined,
    keepCheckpoints: number | undefined,
  ) {
    const t = config.train;
    this.device = parseDevice(config.runtime.device);
    this.lrAt = warmupCosine(t.lr, t.lr_min, t.warmup_steps, t.steps);
    this.aug = new Philox(config.runtime.seed).fork(AUG_STREAM_ID);
    this.settings = {
      steps: t.steps,
      progressTask: 'train',
      label: 'prior',
      divergenceHint: 'lower train.lr, or resume from an earlier checkpoint',
      optimizer: { lr: t.lr, beta1: t.beta1, beta2: t.beta2, eps: t.eps, weightDecay: t.weight_decay },
      gradClip: t.grad_clip,
      logEvery: t.log_every,
      checkpointEvery: t.checkpoint_every,
      keepCheckpoints,
      validateEvery: t.val_every,
    };
  }

  private get train(): TokenSplit {
    return (this.cache as TokenCache).train;
  }

  private get prior(): Prior {
    if (!this.model) throw new Error('dalle: the prior task has no model yet');
    return this.model;
  }

  lr(index: number): number {
    return this.lrAt(index);
  }

  // Everything is checked (config against the dVAE, data and its token cache, tokenizer) before the first write.
  async prepare({ start, events, worldSize, rank, collective }: PrepareContext): Promise<void> {
    const { config } = this;
    const m = config.model;
    this.events = events;
    this.worldSize = worldSize;
    this.rank = rank;
    this.collective = collective;
    checkGlobalBatch(config.train.batch_size, worldSize);
    const resumed = start.state;
    if (!config.data.path) {
      throw new ConfigError('is not set: the prior needs captioned images to train on', { keyPath: 'data.path', hint: 'pass --data DIR (e.g. the output of `dalle dataset emoji`), or --set data.path=DIR' });
    }
    if (!config.data.dvae) {
      throw new ConfigError('is not set: the prior trains on the token grids of a trained dVAE', { keyPath: 'data.dvae', hint: 'pass --dvae RUN (a `dalle train-dvae` run directory or one of its checkpoints)' });
    }

    // The dVAE and the token grids.
    events.emit({ type: 'stage', name: 'loading data', detail: `${config.data.path} with the dVAE ${config.data.dvae}` });
    // Every model of the job on runtime.device: the dVAE (it encodes the images when the token cache is built), the prior.
    const dvae = loadDvae(config.data.dvae, this.device);
    try {
      if (dvae.gridSide !== m.image_grid || dvae.model.arch.vocab_size !== m.image_vocab) {
        throw new ConfigError(
          `the dVAE ${dvae.checkpoint} makes ${dvae.gridSide}x${dvae.gridSide} grids of ${dvae.model.arch.vocab_size} codes, the prior is set up for ${m.image_grid}x${m.image_grid} grids of ${m.image_vocab}`,
          { keyPath: 'model.image_grid', hint: `set --set model.image_grid=${dvae.gridSide} --set model.image_vocab=${dvae.model.arch.vocab_size}, or use the dVAE this config was made for` },
        );
      }
      // A resume needs the token grids it was trained on: a changed data set or dVAE is refused before any encoding.
      const checkKey = (key: string): void => {
        const trainedOn = (resumed?.metrics as { token_cache?: string } | undefined)?.token_cache;
        if (resumed && trainedOn !== key) {
          throw new CheckpointError(
            `${start.dir} was trained on token cache ${trainedOn}, but the data set and dVAE now give ${key}: the images, captions or dVAE checkpoint changed`,
            'resume with the same --data and --dvae (data.path, data.dvae in the run config.yaml), or start a new run',
          );
        }
      };
      // Data parallelism: rank 0 builds the cache (when it is not there yet) while the others wait, then they read it.
      if (rank === 0) this.cache = await loadOrBuildTokenCache({ data: config.data.path, dvae, events, checkKey });
      await collective.barrier();
      if (rank > 0) this.cache = await loadOrBuildTokenCache({ data: config.data.path, dvae, events, checkKey });
    } finally {
      dvae.model.dispose();
    }
    if (this.train.shape[0] < 1) throw new ConfigError(`has no training images`, { keyPath: 'data.path' });
    // Data parallelism: rank 0's tokenizer on every rank (one trained on the captions is trained once, by rank 0).
    if (rank === 0) {
      const { tokenizer, save } = await this.prepareTokenizer(this.train, !!resumed);
      this.tokenizer = tokenizer;
      this.saveTokenizer = save;
    }
    if (worldSize > 1) {
      const text = await shareFromRankZero(collective, rank === 0 ? Buffer.from((this.tokenizer as TextTokenizer).toJsonText()) : undefined);
      if (rank > 0) this.tokenizer = TextTokenizer.fromJson(JSON.parse(Buffer.from(text).toString('utf8')), 'rank 0\'s tokenizer');
    }
    // Every rank forms the same global batch of B examples (same order, same caption and BPE dropout draws), then
    // trains on its part: examples [rank * B / N, (rank + 1) * B / N).
    this.batcher = new TokenBatcher(this.train, config.runtime.seed, { epoch: 0, position: 0 });
  }

  // Seeded init on the host, moved once. Mixed precision (runtime.precision; train/precision): fp32 does nothing; fp16
  // runs each resblock (2 per layer) with its own gradient scale (train.grad_scale; one per data-parallel worker).
  createModel(): TaskModel {
    const { config } = this;
    const model = new Prior(config.model, new Philox(config.runtime.seed)).to(this.device);
    this.model = model;
    model.recompute = config.train.recompute; // activation recomputation per block (memory for time)
    const precision = createPrecision(config.runtime.precision, { gradScale: config.train.grad_scale, workers: this.worldSize });
    precision.attach(priorResblocks(model));
    model.residual = precision;
    return { named: model.namedParameters(), decays: priorDecays, parameterCount: model.parameterCount(), precision, detail: `${this.train.shape[0]} images` };
  }

  restore(state: CheckpointState, dir: string): void {
    if (!state.rng.aug) throw new CheckpointError(`${dir}/state.json has no rng.aug`, 'the checkpoint is not from train-prior: train again');
    this.aug = Philox.fromState(state.rng.aug);
    const d = state.data;
    const records = this.train.shape[0];
    const seed = this.config.runtime.seed;
    if (!d || d.records !== records || d.seed !== seed) {
      throw new CheckpointError(`${dir}/state.json's data position does not fit ${records} training images with seed ${seed}`, 'resume with the run\'s own config.yaml and data');
    }
    (this.batcher as TokenBatcher).pos = { epoch: d.epoch, position: d.position };
  }

  writeRunFiles(): Array<{ kind: string; path: string }> {
    return [
      { kind: 'config', path: writeRunConfig(this.out, priorConfig, this.config) },
      { kind: 'tokenizer', path: this.saveTokenizer() },
    ];
  }

  private captionIds(caption: string, rng?: Philox): number[] {
    const L = this.config.model.text_len;
    const ids = (this.tokenizer as TextTokenizer).encode(caption, rng ? { dropout: this.config.data.bpe_dropout, rng } : {});
    return ids.length > L ? ids.slice(0, L) : ids;
  }

  async nextBatch(): Promise<PriorBatch> {
    const { model: m, train: t } = this.config;
    const examples = (this.batcher as TokenBatcher).next(t.batch_size);
    const ids = examples.map((e) => (t.caption_dropout > 0 && this.aug.uniform() < t.caption_dropout ? [] : this.captionIds(e.caption, this.aug)));
    const part = t.batch_size / this.worldSize;
    const mine = (list: readonly unknown[]) => list.slice(this.rank * part, (this.rank + 1) * part);
    return {
      text: padText(mine(ids) as number[][], m.text_len, m.text_vocab),
      image: imageTokens(this.train, (mine(examples) as typeof examples).map((e) => e.index)),
      epoch: examples[examples.length - 1].epoch,
    };
  }

  private get weights(): { text: number; image: number } {
    return { text: this.config.train.text_loss_weight, image: this.config.train.image_loss_weight };
  }

  // Transfers of a step: the batch's text and image tokens in; its loss, text and image losses out (one copy).
  forward(batch: PriorBatch): StepForward {
    const { model: m, train: t } = this.config;
    const N = m.image_grid * m.image_grid;
    const B = t.batch_size / this.worldSize; // this rank's part of the global batch
    const r = this.prior.loss(Tensor.from(batch.text, [B, m.text_len], 'i32', this.device), Tensor.from(batch.image, [B, N], 'i32', this.device), this.weights);
    return { loss: r.loss, scalars: { text_loss: r.textLoss, image_loss: r.imageLoss } };
  }

  progressMetrics(values: StepValues, _batch: PriorBatch, timing: StepTiming): Record<string, number> {
    return { loss: values.loss, text_loss: values.scalars.text_loss, image_loss: values.scalars.image_loss, lr: values.lr, ms_per_update: timing.msThisUpdate };
  }

  metricsLine(values: StepValues, batch: PriorBatch, interval: MetricsInterval): Omit<PriorMetricsLine, 'step' | 'grad_scales' | 'skipped'> {
    return {
      loss: values.loss,
      text_loss: values.scalars.text_loss,
      image_loss: values.scalars.image_loss,
      loss_mean: interval.lossMean,
      grad_norm: values.gradNorm,
      lr: values.lr,
      epoch: batch.epoch,
      examples_per_s: (interval.updatesHere * this.config.train.batch_size) / interval.seconds,
      ms_per_update: (1000 * interval.seconds) / Math.max(1, interval.updatesHere),
    };
  }

  async validate(step: number, writer: RunWriter): Promise<void> {
    const val = (this.cache as TokenCache).val;
    if (!val) return;
    const { model: m, train: t } = this.config;
    // Data parallelism: each rank computes every N-th batch; the sums over ranks make the split's means.
    const sums = validationLossSums(this.prior, val, t.batch_size, t.val_batches, (c) => this.captionIds(c), m.text_len, m.text_vocab, this.weights, { index: this.rank, count: this.worldSize });
    const total = Float64Array.from([sums.text, sums.image, sums.examples]);
    if (this.worldSize > 1) await (this.collective as Collective).allReduce(total, 'sum');
    const r = splitLossMeans({ text: total[0], image: total[1], examples: total[2] }, this.weights);
    const line: PriorValLine = { step, ...r };
    this.lastVal = line;
    writer.appendMetrics(line);
    const { step: _s, ...values } = line;
    this.events.emit({ type: 'metrics', step, split: 'val', values });
  }

  checkpointState(): TaskCheckpointState {
    const pos = (this.batcher as TokenBatcher).pos;
    return {
      rng: { aug: this.aug.state() },
      data: { seed: this.config.runtime.seed, records: this.train.shape[0], epoch: pos.epoch, position: pos.position },
      metrics: { token_cache: (this.cache as TokenCache).key },
    };
  }

  result(): Omit<PriorTrainResult, keyof TrainingResult> {
    return { lastVal: this.lastVal, tokenCache: (this.cache as TokenCache).dir };
  }

  dispose(): void {
    this.model?.dispose();
  }

  /**
   * --tokenizer FILE (copied into the run by `save`), else RUN/tokenizer.json on resume, else one trained on the
   * captions (saved by `save`); checked against model.text_vocab.
   */
  private async prepareTokenizer(train: TokenSplit, resuming: boolean): Promise<{ tokenizer: TextTokenizer; save: () => string }> {
    const { config } = this;
    const target = path.join(this.out, PRIOR_TOKENIZER_FILE);
    const emit = this.events.emit.bind(this.events);
    let tokenizer: TextTokenizer;
    // Nothing is written here: `save` writes RUN/tokenizer.json (when it is new) once everything else is checked.
    let isNew = true;
    if (this.tokenizerFile) {
      tokenizer = TextTokenizer.load(this.tokenizerFile);
      isNew = path.resolve(this.tokenizerFile) !== path.resolve(target);
      // A resumed run keeps the tokenizer its weights were trained with: another one would change every caption's ids.
      if (resuming && isNew && fs.existsSync(target) && TextTokenizer.load(target).toJsonText() !== tokenizer.toJsonText()) {
        throw new CheckpointError(
          `--tokenizer ${this.tokenizerFile} is not the tokenizer ${target} this run was trained with`,
          'leave out --tokenizer to resume with the run\'s own, or start a new run (--out) with the other tokenizer',
        );
      }
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
        `is ${config.model.text_vocab}, but the tokenizer ${this.tokenizerFile ?? target} has ${tokenizer.vocabSize} tokens`,
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
