/**
 * The one training loop (docs/ARCHITECTURE.md "Training"): every trainer is a task (task.ts) that brings its data,
 * model, step, metrics and validation; the loop does the rest, the same way for all of them. It never prints: it
 * emits CoreEvents.
 *
 * A run: take the run folder's lock (io/run-lock.ts) -> find where it starts (fresh, or RUN/latest with --resume) ->
 * the task checks everything and loads its data -> model, AdamW (decay per the task's predicate), resume (weights,
 * moments, mixed precision's scales, the metrics interval, the task's streams) -> only then the first write: remove
 * what interrupted writes left, the run's files, metrics.jsonl cut back to the checkpoint -> the updates -> the last
 * checkpoint. So a refused start or resume leaves the folder byte for byte as it was.
 *
 * An update: batch -> forward -> backward -> gradients synchronised across ranks -> mixed precision unscales ->
 * global norm clipped -> AdamW (skipped when a gradient is not finite) -> the step's scalars read in one copy ->
 * progress (throttled), a metrics line every log_every, validation, samples, a checkpoint every checkpoint_every.
 * stop() (SIGINT, SIGTERM) ends the run after the current update with a checkpoint there.
 *
 * Exact resume: the loop saves AdamW's step and moments, mixed precision's scales and the accumulators of the
 * current metrics interval; the task saves its random streams and data position. Schedules are pure functions of the
 * step. So a resumed run's losses and metrics lines are bitwise those of an uninterrupted run.
 *
 * Data parallelism (distributed/): `collective` says which rank this process is; only rank 0 writes into the run
 * folder or emits progress; `gradientSync` makes the gradients the mean over ranks between backward and clipping;
 * fp16's overflow flags agree over ranks; all ranks stop at the same update (agreeToStop); the step's scalars are read
 * in one place and averaged over ranks (readStepScalars, averageStepScalars). Each task takes its equal part of the
 * global batch (train.batch_size is the global batch: the same updates whatever the number of ranks).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { CHECKPOINTS_DIR, CheckpointError, CheckpointState, TRAIN_COMMANDS, checkpointDirName, loadCheckpointModel, pruneCheckpoints, writeCheckpoint } from '../checkpoint';
import { ConfigError } from '../config';
import { agreeToStop, meanOfScalars } from '../distributed/agree';
import { Collective, SingleProcess } from '../distributed/collective';
import { GradientSync, NoGradientSync } from '../distributed/gradient-sync';
import { CoreEvent, EventSink, silentSink } from '../events';
import { writeFileAtomicSync } from '../io/atomic';
import { RunLock, acquireRunLock } from '../io/run-lock';
import { Tensor, backward, readScalars, tidy, track, whileGradientsComplete, zeroGrad } from '../tensor';
import { AdamW } from './adamw';
import { clipGradNorm } from './clip';
import { startPeakMemory } from './peak-memory';
import type { PrecisionState } from './precision';
import { TrainingStart, resolveTrainingStart, restoreOptimizer } from './resume';
import { removeInterruptedWrites, truncateMetrics } from './run-folder';
import { RunWriter, StepContext, StepForward, StepValues, TaskModel, TrainingTask } from './task';

export const METRICS_FILE = 'metrics.jsonl';
/** Progress events at most this often (ms), plus the first and last update. */
const PROGRESS_INTERVAL_MS = 200;

export interface TrainingLoopOptions {
  /** The run directory. */
  readonly out: string;
  /** Continue from RUN/latest. Without it, a run directory that already has checkpoints is refused. */
  readonly resume?: boolean;
  readonly events?: EventSink;
  /** Data parallelism: which rank this process is, and the reductions (default: one process). */
  readonly collective?: Collective;
  /** Makes every parameter's gradient the mean over ranks (default: nothing to do in one process). */
  readonly gradientSync?: (params: readonly Tensor[]) => GradientSync;
}

/** What every training run returns; a task adds its own fields (TrainingTask.result). */
export interface TrainingResult {
  readonly runDir: string;
  /** Updates completed. */
  readonly step: number;
  readonly totalSteps: number;
  /**
   * The exit code a stop asked for (a signal's), when a stop ended the run: this rank's, or another rank's when only
   * that one was signalled (data parallelism: all ranks stop together).
   */
  readonly stopExitCode?: number;
  /** True when stop() ended the run early. */
  readonly stopped: boolean;
  readonly resumedFrom?: number;
  /** The last checkpoint written (or resumed from). */
  readonly checkpoint: string;
  readonly lastLoss?: number;
  /** The most bytes the run held on its device (runtime.device) from model creation to the end (peak-memory.ts). */
  readonly peakBytesInUse: number;
}

/** The accumulators of the current metrics interval, saved in state.json `metrics`. */
interface Interval {
  interval_loss_sum: number;
  interval_steps: number;
}

/** A task's training run: a StoppableJob (src/cli/stop-signals.ts), so a command wires SIGINT/SIGTERM to stop(). */
export class TrainingLoop<B, F extends StepForward, E, R extends object> {
  private stopRequested = false;
  private stopExitCode = 0;
  /** The exit code the ranks agreed to stop with (0: not stopped by a request). */
  private agreedStopCode = 0;
  private readonly events: EventSink;
  private readonly collective: Collective;

  constructor(
    private readonly task: TrainingTask<B, F, E, R>,
    private readonly options: TrainingLoopOptions,
  ) {
    this.collective = options.collective ?? new SingleProcess();
    this.events = this.writes ? (options.events ?? silentSink) : rankEvents(options.events ?? silentSink);
  }

  /** Ask the loop to finish the current update, write a checkpoint and return (safe to call from a signal handler). */
  /** `exitCode`: what the process should exit with once stopped (a signal's, 128 + its number; default Ctrl-C's). */
  stop(exitCode = 130): void {
    this.stopRequested = true;
    this.stopExitCode = exitCode;
  }

  get stopping(): boolean {
    return this.stopRequested;
  }

  /** Whether this process writes the run folder: data-parallel rank 0 (the only one of a single process). */
  private get writes(): boolean {
    return this.collective.rank === 0;
  }

  /** Trains under the run directory's lock (io/run-lock.ts): a second process on the same run is refused. */
  async run(): Promise<TrainingResult & R> {
    const lock = this.writes ? acquireRunLock(this.options.out, { command: TRAIN_COMMANDS[this.task.kind], events: this.events }) : undefined;
    try {
      return await this.train(lock);
    } finally {
      lock?.release();
    }
  }

  /**
   * The one place a run decides to stop: every rank must leave at the same update (or the others would wait for it
   * forever in the next reduction), so the ranks' requests are combined: one asks, all stop.
   */
  private async agreeToStop(): Promise<boolean> {
    this.agreedStopCode = await agreeToStop(this.collective, this.stopRequested ? this.stopExitCode : 0);
    return this.agreedStopCode > 0;
  }

  /**
   * The one place a step's scalars leave the device (readScalars: one copy) and become the run's: each rank holds
   * its part's values, the run's are their mean over ranks (equal parts; one reduction; one process: as read).
   */
  private readStepScalars(tensors: Readonly<Record<string, Tensor>>): { names: string[]; values: number[] } {
    const names = Object.keys(tensors);
    return { names, values: readScalars(names.map((name) => tensors[name])) };
  }

  private async averageStepScalars(read: { names: string[]; values: number[] }): Promise<Record<string, number>> {
    const values = await meanOfScalars(this.collective, read.values);
    return Object.fromEntries(read.names.map((name, i) => [name, values[i]]));
  }

  private async train(lock: RunLock | undefined): Promise<TrainingResult & R> {
    const { task, events } = this;
    const s = task.settings;
    const { rank, worldSize } = this.collective;
    const start = resolveTrainingStart(this.options.out, task.kind, this.options.resume, s.steps, s.existingRun);
    try {
      await task.prepare({ start, rank, worldSize, events, collective: this.collective });
      const peakBytesInUse = startPeakMemory(task.device); // the model, its optimizer and the steps: not the data's preparation
      const model = task.createModel();
      const optimizer = createOptimizer(model, s.optimizer);
      const sync = (this.options.gradientSync ?? (() => new NoGradientSync()))(optimizer.parameters);
      try {
        return await this.trainModel({ lock, start, model, optimizer, sync, peakBytesInUse });
      } finally {
        sync.dispose();
        optimizer.dispose();
      }
    } finally {
      task.dispose();
    }
  }

  private async trainModel(run: {
    lock: RunLock | undefined;
    start: TrainingStart;
    model: TaskModel;
    optimizer: AdamW;
    sync: GradientSync;
    peakBytesInUse: () => number;
  }): Promise<TrainingResult & R> {
    const { task } = this;
    const { out } = this.options;
    const s = task.settings;
    const { start, model, optimizer, sync } = run;
    const emit = (event: CoreEvent): void => this.events.emit(event);
    const { state: resumed, dir: resumedDir, startStep } = start;
    const { rank, worldSize } = this.collective;
    const precision = model.precision;
    const named = model.named;
    // Mixed precision (train/precision): 16-bit Adam moments where it pays; fp32 does nothing.
    precision?.attachOptimizer(named, optimizer.stateTensors());
    let interval: Interval = { interval_loss_sum: 0, interval_steps: 0 };
    let weightsOnly = false;
    if (resumed && resumedDir) {
      loadCheckpointModel(resumedDir, new Map(named));
      weightsOnly = restoreOptimizer(resumedDir, resumed, optimizer, { weightsOnly: s.weightsOnlyResume ?? false }) === 'fresh';
      precision?.load((resumed.metrics as { precision?: PrecisionState }).precision);
      interval = readInterval(resumed, resumedDir, weightsOnly);
      task.restore(resumed, resumedDir, weightsOnly);
    }

    const params = optimizer.parameters;
    let step = startStep;
    let lastCheckpoint: string | undefined = resumedDir;
    let lastCheckpointStep = resumed ? startStep : -1;
    let lastLoss: number | undefined;
    let lastProgress = 0;
    let started = performance.now();
    let intervalStart = started;
    let intervalStepsHere = 0; // updates of this interval run by this process (a resumed interval began in another)
    let lastEmitted: { step: number; metrics: Record<string, number> } | undefined;
    const checkpoint = (): string => {
      if (lastCheckpointStep === step && lastCheckpoint !== undefined) return lastCheckpoint;
      const dir = path.join(out, CHECKPOINTS_DIR, checkpointDirName(step));
      if (this.writes) {
        const own = task.checkpointState();
        writeCheckpoint(out, {
          model: named,
          optimizer: optimizer.stateTensors(),
          state: {
            kind: task.kind,
            step,
            optimizer_step: optimizer.step,
            rng: own.rng,
            data: own.data,
            metrics: { ...interval, ...own.metrics, ...(precision ? { precision: precision.state() } : {}) },
          },
          keep: 0,
        });
        pruneCheckpoints(out, s.keepCheckpoints ?? 3, [step, ...(task.keptCheckpoints?.() ?? [])]);
        emit({ type: 'artifact', kind: 'checkpoint', path: dir });
      }
      lastCheckpoint = dir;
      lastCheckpointStep = step;
      return dir;
    };
    const writer = this.writerFor(checkpoint);
    // All checked: the first write.
    if (run.lock) {
      removeInterruptedWrites(run.lock, [CHECKPOINTS_DIR, ...(s.folders ?? [])], this.events);
      for (const artifact of task.writeRunFiles(writer)) emit({ type: 'artifact', ...artifact });
      // Lines past the checkpoint (all of them on a fresh start) were written by a run that died before checkpointing.
      truncateMetrics(path.join(out, METRICS_FILE), startStep);
    }
    if (resumed) {
      emit({ type: 'log', level: 'info', message: `resuming from ${resumedDir} (update ${startStep} of ${s.steps})` });
      if (weightsOnly) emit({ type: 'log', level: 'info', message: `${resumedDir} holds weights but no optimizer state: AdamW starts fresh (zero moments, step 0)` });
    }
    await task.beforeTraining?.(!resumed);
    started = performance.now();
    intervalStart = started;

    const isLogStep = (n: number): boolean => n % s.logEvery === 0 || (s.logLastStep === true && n === s.steps);
    // Data parallelism: fp16's overflow flags agree over ranks (the largest count), so all ranks skip alike.
    const agreeOnOverflow = worldSize > 1 ? (counts: Float64Array) => this.collective.allReduceSync(counts, 'max') : undefined;

    emit({ type: 'stage', name: 'training', detail: `${model.parameterCount} parameters, ${model.detail ? `${model.detail}, ` : ''}updates ${startStep + 1}-${s.steps}` });
    while (step < s.steps) {
      // The loop is otherwise synchronous: yield to the event loop once per update so that a SIGINT handler (the
      // command's Ctrl-C, which calls stop()) gets to run.
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (await this.agreeToStop()) break;
      const context: StepContext = { index: step, logging: isLogStep(step + 1), lr: task.lr(step), rank, worldSize };
      const batch = await task.nextBatch(context);
      const stepStart = performance.now();
      // Forward and backward in one scope; what forward returns lives on into the update's scope, which frees it.
      const forward = tidy(() => {
        zeroGrad(params);
        const f = task.forward(batch, context);
        if (sync.onGradientReady) whileGradientsComplete(sync.onGradientReady, () => backward(f.loss));
        else backward(f.loss);
        return f;
      });
      try {
        await sync.finish(); // gradients: the mean over ranks from here on
      } catch (error) {
        tidy(() => adoptTensors(forward));
        throw error;
      }
      const read = tidy(() => {
          adoptTensors(forward); // freed with this scope (parameters among them are kept: track() skips them)
          // Gradients back in true units; false when a resblock's fp16 gradient overflowed: the update is skipped.
          const finite = precision ? precision.unscaleGradients(agreeOnOverflow) : true;
          // Clipping (train.grad_clip > 0) bounds the update a single loss spike can make.
          const { norm } = clipGradNorm(params, s.gradClip);
          if (finite && Number.isFinite(norm)) optimizer.update(context.lr);
          precision?.endStep();
          const after = task.afterUpdate?.(forward, context);
          const scalars = this.readStepScalars({ loss: forward.loss, ...forward.scalars, ...after?.scalars });
          return { scalars, gradNorm: norm, extra: after?.extra };
      });
      const { loss, ...scalars } = await this.averageStepScalars(read.scalars);
      if (!Number.isFinite(loss) || !Number.isFinite(read.gradNorm)) {
        const shown = Object.entries({ loss, ...scalars }).map(([name, value]) => `${name} ${value}`).join(', ');
        throw new Error(`dalle: the ${s.label} loss or gradient became non-finite at update ${step + 1} (${shown}, gradient norm ${read.gradNorm}); ${s.divergenceHint}`);
      }
      step++;
      const values: StepValues<E> = { step, lr: context.lr, loss, scalars, gradNorm: read.gradNorm, extra: read.extra };
      task.afterStep?.(values);
      lastLoss = loss;
      interval.interval_loss_sum += loss;
      interval.interval_steps += 1;
      intervalStepsHere += 1;

      const now = performance.now();
      const shown = task.progressMetrics(values, batch, { updatesHere: step - startStep, secondsHere: (now - started) / 1000, msThisUpdate: now - stepStart });
      if (now - lastProgress >= PROGRESS_INTERVAL_MS || step === s.steps || step === startStep + 1) {
        lastProgress = now;
        emit({ type: 'progress', task: s.progressTask, step, total: s.steps, unit: 'update', metrics: shown });
        lastEmitted = undefined;
      } else {
        lastEmitted = { step, metrics: shown };
      }

      if (context.logging) {
        const own = task.metricsLine(values, batch, {
          lossMean: interval.interval_loss_sum / interval.interval_steps,
          updatesHere: intervalStepsHere,
          seconds: Math.max(1e-3, (now - intervalStart) / 1000),
          secondsHere: (now - started) / 1000,
        });
        const line = { step, ...own, ...precision?.metrics(), ...sync.metrics?.() };
        writer.appendMetrics(line);
        interval = { interval_loss_sum: 0, interval_steps: 0 };
        intervalStart = performance.now();
        intervalStepsHere = 0;
        emit({ type: 'metrics', step, split: 'train', values: numbersOf(line) });
      }
      if (task.validate && s.validateEvery && (step % s.validateEvery === 0 || step === s.steps)) {
        await task.validate(step, writer);
        intervalStart = performance.now(); // validation time does not count as training throughput
      }
      if (task.sample && s.sampleEvery && step % s.sampleEvery === 0 && this.writes) {
        emit({ type: 'artifact', kind: 'samples', path: await task.sample(batch, step) });
      }
      if (s.checkpointEvery > 0 && step % s.checkpointEvery === 0) checkpoint();
    }
    // The bar ends at the last update done (stop() can end the loop between throttled progress events).
    if (lastEmitted) emit({ type: 'progress', task: s.progressTask, step: lastEmitted.step, total: s.steps, unit: 'update', metrics: lastEmitted.metrics });
    const final = checkpoint();
    emit({ type: 'done', task: s.progressTask });
    return {
      runDir: out,
      step,
      totalSteps: s.steps,
      stopped: step < s.steps,
      resumedFrom: resumed?.step,
      checkpoint: final,
      lastLoss,
      peakBytesInUse: run.peakBytesInUse(),
      ...(this.agreedStopCode > 0 ? { stopExitCode: this.agreedStopCode } : {}),
      ...task.result(),
    };
  }

  /** The task's way into the run folder: writes on rank 0, nothing elsewhere. */
  private writerFor(checkpoint: () => string): RunWriter {
    const { out } = this.options;
    const writes = this.writes;
    return {
      dir: out,
      writes,
      appendMetrics: (line) => {
        if (writes) fs.appendFileSync(path.join(out, METRICS_FILE), JSON.stringify(line) + '\n');
      },
      writeFile: (name, contents) => {
        const file = path.join(out, name);
        if (writes) writeFileAtomicSync(file, contents);
        return file;
      },
      checkpoint,
    };
  }
}

/** AdamW over the model's parameters: one group with the task's weight decay, one without (the predicate's). */
function createOptimizer(model: TaskModel, options: TrainingTask['settings']['optimizer']): AdamW {
  const group = (decays: boolean) => model.named.filter(([name]) => model.decays(name) === decays).map(([name, tensor]) => ({ name, tensor }));
  return new AdamW([{ params: group(true) }, { params: group(false), weightDecay: 0 }], options);
}

/** The metrics interval saved in a checkpoint (absent only from a weights-only one: a converted model's). */
function readInterval(state: CheckpointState, dir: string, weightsOnly: boolean): Interval {
  const m = state.metrics as Partial<Interval>;
  if (weightsOnly && m.interval_loss_sum === undefined && m.interval_steps === undefined) return { interval_loss_sum: 0, interval_steps: 0 };
  if (typeof m.interval_loss_sum !== 'number' || !Number.isSafeInteger(m.interval_steps) || (m.interval_steps as number) < 0) {
    throw new CheckpointError(
      `${dir}/state.json: metrics.interval_loss_sum and metrics.interval_steps are missing or not numbers`,
      `the checkpoint is not from \`${TRAIN_COMMANDS[state.kind as keyof typeof TRAIN_COMMANDS] ?? 'dalle'}\` or is damaged: resume from an earlier checkpoint, or train again`,
    );
  }
  return { interval_loss_sum: m.interval_loss_sum, interval_steps: m.interval_steps as number };
}

/** Puts the tensors a forward returned (not parameters: keep() marked those) into the current scope. */
function adoptTensors(value: unknown, depth = 0): void {
  if (value instanceof Tensor) {
    track(value);
    return;
  }
  if (value === null || typeof value !== 'object' || depth > 4) return;
  if (Array.isArray(value)) for (const v of value) adoptTensors(v, depth + 1);
  else if (Object.getPrototypeOf(value) === Object.prototype) for (const v of Object.values(value)) adoptTensors(v, depth + 1);
}

/** The numeric fields of a metrics line but its step, for the metrics event. */
function numbersOf(line: Record<string, unknown>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, value] of Object.entries(line)) if (key !== 'step' && typeof value === 'number') out[key] = value;
  return out;
}

/**
 * train.batch_size is the global batch: each of the worldSize ranks trains on an equal part of it, so that a run makes
 * the same updates whatever the number of ranks (and can resume with another).
 */
export function checkGlobalBatch(batchSize: number, worldSize: number): void {
  if (batchSize % worldSize === 0) return;
  const lower = Math.max(worldSize, batchSize - (batchSize % worldSize));
  throw new ConfigError(`is ${batchSize}, which ${worldSize} data-parallel ranks cannot share equally (it is the global batch: each rank trains on batch_size / ranks)`, {
    keyPath: 'train.batch_size',
    hint: `use a multiple of ${worldSize} (e.g. --set train.batch_size=${lower}), or another number of ranks`,
  });
}

/** The events of a rank other than 0: its stages and warnings, not the run's progress, metrics or files. */
function rankEvents(events: EventSink): EventSink {
  return { emit: (event) => (['progress', 'metrics', 'artifact', 'done'].includes(event.type) ? undefined : events.emit(event)) };
}
