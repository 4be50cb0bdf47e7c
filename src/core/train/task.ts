/**
 * What a model brings to the one training loop (loop.ts): its data, its model, its step, its metrics, its part of a
 * checkpoint, its validation and samples. Everything else (the run folder, resume, AdamW and its groups, mixed
 * precision's calls, clipping, cadences, metrics intervals, progress, signals, data-parallel ranks) is the loop's.
 * The tasks: dvae-trainer.ts, prior-trainer.ts, clip-trainer.ts.
 *
 * Order of the calls (docs/ARCHITECTURE.md "Files and faults": validate, then write):
 *   prepare -> createModel -> (resume: restore) -> writeRunFiles (rank 0) -> beforeTraining ->
 *   per update: nextBatch -> forward (+ backward by the loop) -> afterUpdate -> afterStep -> progressMetrics ->
 *     metricsLine (log steps) -> validate (validation steps) -> sample (sample steps, rank 0) -> checkpointState
 *   -> result -> dispose (always, also after an error).
 */
import type { Collective } from '../distributed/collective';
import type { CheckpointState, RunKind } from '../checkpoint';
import type { LoaderState } from '../data/loader';
import type { Device } from '../backend/device';
import type { EventSink } from '../events';
import type { Tensor } from '../tensor';
import type { PhiloxState } from '../tensor/rng';
import type { AdamWOptions } from './adamw';
import type { Precision } from './precision';
import type { TrainingStart } from './resume';

/** Cadences and optimizer settings: fixed when the task is made (from its config or options). */
export interface TaskSettings {
  /** Updates of the whole run (train.steps): a run ends when it has done this many. */
  readonly steps: number;
  /** The task name of the progress and done events ('train' draws the training bar). */
  readonly progressTask: string;
  /** The model's name in messages ('dVAE', 'prior', 'CLIP'), and what to do when its loss diverges. */
  readonly label: string;
  readonly divergenceHint: string;
  /** AdamW's options; weight decay applies to the parameters the model's decay predicate picks. */
  readonly optimizer: AdamWOptions;
  /** Global gradient-norm clipping (train.grad_clip); 0: none, the norm is still logged. */
  readonly gradClip: number;
  /** A metrics line every logEvery updates, and after the last update too when logLastStep. */
  readonly logEvery: number;
  readonly logLastStep?: boolean;
  /** A checkpoint every checkpointEvery updates (0: only at the end and on stop). */
  readonly checkpointEvery: number;
  /** Checkpoints kept (the newest; default 3; 0: all); keptCheckpoints() adds ones to keep besides. */
  readonly keepCheckpoints?: number;
  /** validate() every validateEvery updates and after the last one (0 or absent: never). */
  readonly validateEvery?: number;
  /** sample() every sampleEvery updates (0 or absent: never). */
  readonly sampleEvery?: number;
  /** Sub-folders of the run the task writes atomically (their interrupted writes are cleaned at start): 'samples'. */
  readonly folders?: readonly string[];
  /** Whether a resume may start AdamW fresh from a checkpoint that holds weights only (a converted model's). */
  readonly weightsOnlyResume?: boolean;
  /** How a fresh start into a run that has checkpoints is refused (default: "OUT already has checkpoints"). */
  readonly existingRun?: { readonly message: string; readonly hint: string };
}

/** What prepare() is told: where the run starts, and which data-parallel rank this process is. */
export interface PrepareContext {
  readonly start: TrainingStart;
  readonly rank: number;
  readonly worldSize: number;
  /**
   * The ranks' reductions, for what a task must agree on besides gradients and scalars (the loader's failed records,
   * a batch statistic inside forward, the dVAE's code histogram). One process: every reduction is the identity.
   */
  readonly collective: Collective;
  /** The run's events (on ranks other than 0 without progress, metrics and artifacts). */
  readonly events: EventSink;
}

/** The model the loop trains: its parameters by name (checkpoint names), where they live, what gets weight decay. */
export interface TaskModel {
  readonly named: ReadonlyArray<[string, Tensor]>;
  readonly decays: (name: string) => boolean;
  readonly parameterCount: number;
  /** Mixed precision the model runs in (train/precision); the loop makes its calls around the update. */
  readonly precision?: Precision;
  /** What the training stage shows besides the parameter count ("12 images"). */
  readonly detail?: string;
}

/** The update being made. */
export interface StepContext {
  /** Updates done before this one (0-based: the schedules' argument); this update makes it index + 1. */
  readonly index: number;
  /** Whether this update writes a metrics line (compute what only the line needs, e.g. the dVAE's codes). */
  readonly logging: boolean;
  /** The learning rate of this update (lr(index)). */
  readonly lr: number;
  /** Data parallelism: this process's rank of worldSize. Each rank trains on its equal part of the global batch. */
  readonly rank: number;
  readonly worldSize: number;
}

/** A forward pass: the loss to differentiate and the scalars read out with it. Tensors here die with the step. */
export interface StepForward {
  readonly loss: Tensor;
  readonly scalars?: Readonly<Record<string, Tensor>>;
}

/** What afterUpdate hands back: more one-element tensors to read with the loss, and host values of its own. */
export interface AfterUpdate<E> {
  readonly scalars?: Readonly<Record<string, Tensor>>;
  readonly extra?: E;
}

/** An update's numbers on the host. */
export interface StepValues<E = unknown> {
  /** Updates done, this one included. */
  readonly step: number;
  readonly lr: number;
  readonly loss: number;
  /** The task's scalars (forward's and afterUpdate's), by name. */
  readonly scalars: Readonly<Record<string, number>>;
  /** Global gradient norm of the update, before clipping. */
  readonly gradNorm: number;
  readonly extra?: E;
}

/** Time as a progress bar shows it. */
export interface StepTiming {
  /** Updates this process has run, and the seconds since it started training. */
  readonly updatesHere: number;
  readonly secondsHere: number;
  /** This update's milliseconds (its batch's preparation excluded). */
  readonly msThisUpdate: number;
}

/** The metrics interval a line closes: the updates since the previous line. */
export interface MetricsInterval {
  /** Mean loss over the interval (a resumed run counts the interval's updates from before the resume too). */
  readonly lossMean: number;
  /** Updates of the interval run by this process, and their seconds (validation excluded). */
  readonly updatesHere: number;
  readonly seconds: number;
  /** Seconds since this process started training. */
  readonly secondsHere: number;
}

/** The task's part of state.json; the loop adds kind, step, optimizer_step and its metric accumulators. */
export interface TaskCheckpointState {
  readonly rng: Readonly<Record<string, PhiloxState>>;
  readonly data?: LoaderState;
  /** Accumulators of the task's own (saved after the loop's interval_loss_sum and interval_steps). */
  readonly metrics?: Readonly<Record<string, unknown>>;
}

/** Writing into the run folder from a task: only data-parallel rank 0 writes, the other ranks compute alike. */
export interface RunWriter {
  readonly dir: string;
  /** Whether this process writes the run's files (rank 0). */
  readonly writes: boolean;
  /** Appends one line to RUN/metrics.jsonl. */
  appendMetrics(line: object): void;
  /** Writes RUN/<name> atomically; returns its path. */
  writeFile(name: string, contents: string): string;
  /** A checkpoint at the current update (at most one per update: the loop's own at that update is then skipped). */
  checkpoint(): string;
}

export interface TrainingTask<B = unknown, F extends StepForward = StepForward, E = unknown, R extends object = object> {
  /** The kind of run (state.json `kind`); TRAIN_COMMANDS names its command. */
  readonly kind: RunKind;
  readonly settings: TaskSettings;
  /** Where the model trains (runtime.device): the run's peak memory is that device's. */
  readonly device: Device;
  /**
   * Everything that can refuse the run, and the data: runs before anything is written into the run folder, so a
   * refused start or resume leaves it as it was. Reads only.
   */
  prepare(context: PrepareContext): Promise<void>;
  /** The model on its device (seeded init on the host, moved once). Called once, after prepare. */
  createModel(): TaskModel;
  /** The task's part of a resume (the loop has loaded the weights and the optimizer): random streams, accumulators. */
  restore(state: CheckpointState, dir: string, weightsOnly: boolean): void;
  /** The run's own files besides checkpoints and metrics (config.yaml, tokenizer.json), on rank 0, once checked. */
  writeRunFiles(writer: RunWriter): Array<{ kind: string; path: string }>;
  /** After the first write, before the first update (the dVAE's k-means codebook init on a fresh start). */
  beforeTraining?(fresh: boolean): Promise<void>;
  /** The next batch (host work; random draws of augmentation happen here, in update order). */
  nextBatch(context: StepContext): Promise<B>;
  /** Forward on the device; the loop then runs backward on `loss`. Inside a scope: tensors made here are freed. */
  forward(batch: B, context: StepContext): F;
  /** After the update (or its skip), in the same scope: reads of the updated model (the dVAE's codes). */
  afterUpdate?(forward: F, context: StepContext): AfterUpdate<E> | undefined;
  /** After the values are read (CLIP clamps its logit scale). */
  afterStep?(values: StepValues<E>): void;
  /** The values beside the progress bar. */
  progressMetrics(values: StepValues<E>, batch: B, timing: StepTiming): Record<string, number>;
  /** A metrics.jsonl line after `step` (the loop puts step first and mixed precision's fields last). */
  metricsLine(values: StepValues<E>, batch: B, interval: MetricsInterval): Record<string, unknown>;
  /** Validation at a validation step (every rank computes it; writes go through `writer`). */
  validate?(step: number, writer: RunWriter): Promise<void> | void;
  /** A sample image of the model at a sample step (rank 0 only); returns the file written. */
  sample?(batch: B, step: number): Promise<string>;
  checkpointState(): TaskCheckpointState;
  /** Checkpoints pruning must keep besides the newest (CLIP's best). */
  keptCheckpoints?(): readonly number[];
  /** What the task adds to the run's result. */
  result(): R;
  /** Frees the model, loaders and caches (after an error too, so it must cope with a partial prepare). */
  dispose(): void;
  /** The learning rate of update index (0-based): a pure function of the step, so a resume computes the same. */
  lr(index: number): number;
}
