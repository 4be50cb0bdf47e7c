/**
 * The checkpoint format of a run directory (docs/ARCHITECTURE.md "Formats"): the names, the state.json record and the
 * error every reader and writer of checkpoints shares. Training writes checkpoints (write.ts); training, evaluation,
 * sampling and export read them (read.ts), so none of them imports the training loop to open a model.
 *
 *   RUN/checkpoints/step-N/model.safetensors       the model's parameters, named as the model names them
 *   RUN/checkpoints/step-N/optimizer.safetensors   AdamW moments (`<param>.m`, `<param>.v`, 16-bit masters)
 *   RUN/checkpoints/step-N/state.json              step, optimizer step, RNG states, data position, metric
 *                                                  accumulators: everything an exact resume needs besides tensors
 *   RUN/checkpoints/step-N/SHA256SUMS              the SHA-256 of each tensor file, in `sha256sum` format
 *   RUN/latest                                     one line: `checkpoints/step-N` (the newest complete checkpoint)
 */
import type { LoaderState } from '../data/loader';
import type { PhiloxState } from '../tensor/rng';

export const CHECKPOINTS_DIR = 'checkpoints';
export const LATEST_FILE = 'latest';
export const MODEL_FILE = 'model.safetensors';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const STATE_FILE = 'state.json';
export const CHECKPOINT_FORMAT = 'dalle-checkpoint';
export const CHECKPOINT_VERSION = 1;
/** The name of a checkpoint directory: step-N. */
export const STEP_DIR = /^step-(\d+)$/;

/** A checkpoint or run directory that cannot be used; `hint` says what to do. Exit code 4 (input). */
export class CheckpointError extends Error {
  override readonly name = 'CheckpointError';

  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(message);
  }
}

/** state.json: JSON-safe (u64 RNG values are decimal strings; doubles round-trip exactly through JSON). */
export interface CheckpointState {
  readonly format: typeof CHECKPOINT_FORMAT;
  readonly version: number;
  /** The config kind of the run ('dvae', 'prior', 'clip'). */
  readonly kind: string;
  /** Updates completed: a resumed run's next update is number `step` (0-based). */
  readonly step: number;
  /** AdamW's own update counter (bias correction). */
  readonly optimizer_step: number;
  /** Every random stream the loop draws from, by name. */
  readonly rng: Readonly<Record<string, PhiloxState>>;
  /** The data loader's position after the last batch trained on. */
  readonly data?: LoaderState;
  /** Accumulators the loop needs to write the same metrics as an uninterrupted run (loop-specific). */
  readonly metrics: Readonly<Record<string, unknown>>;
  /** Byte sizes of the tensor files, checked on reading. */
  readonly files: Readonly<Record<string, number>>;
  /** When it was written (ISO 8601): informational. */
  readonly created: string;
}

export type CheckpointStateInput = Omit<CheckpointState, 'format' | 'version' | 'files' | 'created'>;

/** The kinds of run (state.json `kind`) and the command that trains each, which hints name. */
export const TRAIN_COMMANDS = { dvae: 'dalle train-dvae', prior: 'dalle train-prior', clip: 'dalle train-clip' } as const;
export type RunKind = keyof typeof TRAIN_COMMANDS;

export function checkpointDirName(step: number): string {
  return `step-${step}`;
}

/** "`dalle train-prior`" for a prior run; every training command when the kind expected is not known. */
export function trainedBy(kind: RunKind | undefined): string {
  return kind === undefined ? Object.values(TRAIN_COMMANDS).map((command) => `\`${command}\``).join(', ') : `\`${TRAIN_COMMANDS[kind]}\``;
}
