/**
 * Where a training run starts (fresh, or its latest checkpoint) and the optimizer's part of a resume. The checkpoint
 * format itself is ../checkpoint; this is what only training does with it.
 */
import { CheckpointError, CheckpointState, RunKind, TRAIN_COMMANDS, listCheckpoints, readCheckpointOptimizer, resolveCheckpoint } from '../checkpoint';

export interface TrainingStart {
  /** The checkpoint resumed from (its state.json) and its directory; both undefined on a fresh start. */
  readonly state?: CheckpointState;
  readonly dir?: string;
  /** Updates already done: the first update of this run is number startStep + 1. */
  readonly startStep: number;
}

/**
 * Where a training run starts: with `resume`, the run's latest checkpoint (which must be of `kind` and not past
 * `steps`); without, a run directory that has no checkpoints yet (so a typo cannot overwrite a run). `existingRun`
 * words the refusal of the latter (default: "OUT already has checkpoints").
 */
export function resolveTrainingStart(
  out: string, kind: RunKind, resume: boolean | undefined, steps: number, existingRun?: { readonly message: string; readonly hint: string },
): TrainingStart {
  let state: CheckpointState | undefined;
  let dir: string | undefined;
  if (resume) {
    const found = resolveCheckpoint(out, kind);
    if (found.state.kind !== kind) throw new CheckpointError(`${found.dir} is a ${found.state.kind} checkpoint, not a ${kind} one`, `resume a run made by \`${TRAIN_COMMANDS[kind]}\``);
    state = found.state;
    dir = found.dir;
  } else if (listCheckpoints(out).length > 0) {
    throw new CheckpointError(existingRun?.message ?? `${out} already has checkpoints`, existingRun?.hint ?? 'continue it with --resume, or choose a new --out');
  }
  const startStep = state?.step ?? 0;
  if (startStep > steps) {
    throw new CheckpointError(`the checkpoint is at update ${startStep}, past train.steps = ${steps}`, 'raise train.steps (--set train.steps=N) to train further');
  }
  return { state, dir, startStep };
}

/** What restoreOptimizer needs of an optimizer (AdamW). */
export interface RestorableOptimizer {
  loadStateTensors(step: number, get: (name: string) => Float32Array | undefined): void;
}

/**
 * Restores the optimizer from a checkpoint's optimizer.safetensors at `state.optimizer_step`. With `weightsOnly`
 * allowed, returns 'fresh' and leaves the optimizer as made (zero moments, step 0) when that file holds no tensors at
 * all: a checkpoint of weights only, as `dalle convert openai-dvae` writes (zero moments would cost as much space as
 * the weights twice over). A state that lacks some of the optimizer's tensors is a CheckpointError (another model
 * configuration), and so is an empty one where weights-only checkpoints are not allowed.
 */
export function restoreOptimizer(dir: string, state: CheckpointState, optimizer: RestorableOptimizer, options: { readonly weightsOnly: boolean }): 'restored' | 'fresh' {
  const moments = readCheckpointOptimizer(dir);
  if (moments.size === 0 && options.weightsOnly) return 'fresh';
  try {
    optimizer.loadStateTensors(state.optimizer_step, (name) => moments.get(name));
  } catch (error) {
    throw new CheckpointError(`${dir}: ${error instanceof Error ? error.message : String(error)}`, 'the checkpoint was written for another model configuration: resume with the config.yaml of its run');
  }
  return 'restored';
}
