/**
 * Checkpoints of a run directory (docs/ARCHITECTURE.md "Formats"):
 *
 *   RUN/checkpoints/step-N/model.safetensors       the model's parameters, named as the model names them
 *   RUN/checkpoints/step-N/optimizer.safetensors   AdamW moments (`<param>.m`, `<param>.v`, 16-bit masters)
 *   RUN/checkpoints/step-N/state.json              step, optimizer step, RNG states, data position, metric
 *                                                  accumulators: everything an exact resume needs besides tensors
 *   RUN/checkpoints/step-N/SHA256SUMS              the SHA-256 of each tensor file, in `sha256sum` format
 *   RUN/latest                                     one line: `checkpoints/step-N` (the newest complete checkpoint)
 *
 * Each step-N directory is written atomically (filled under a temporary name, fsynced, renamed), then `latest` is
 * replaced atomically, then checkpoints beyond the newest `keep` are removed. A crash at any point leaves `latest`
 * naming a complete checkpoint. state.json records the byte size of both tensor files, so a file truncated or
 * replaced after the fact is caught before anything is loaded; SHA256SUMS (hashed as the files are written) catches
 * a flipped bit, checked once per load as the file is opened. A checkpoint from before SHA256SUMS loads unchecked.
 * Every floating-point value loaded must be finite (io/finite.ts): a NaN weight is an error naming its tensor.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeDirectoryAtomicSync, writeFileAtomicSync } from '../io/atomic';
import { loadTensorsInto, saveTensors } from '../io/tensors';
import { CHECKSUMS_FILE, formatChecksums, parseChecksums, sha256File } from '../io/checksums';
import { checkFinite, NonFiniteTensorError } from '../io/finite';
import { SafetensorsReader } from '../io/safetensors';
import { readTextFileSync, TEXT_LIMITS } from '../io/text-file';
import type { LoaderState } from '../data/loader';
import type { PhiloxState } from '../tensor/rng';
import type { Tensor } from '../tensor';

export const CHECKPOINTS_DIR = 'checkpoints';
export const LATEST_FILE = 'latest';
export const MODEL_FILE = 'model.safetensors';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const STATE_FILE = 'state.json';
const FORMAT = 'dalle-checkpoint';
const VERSION = 1;
const STEP_DIR = /^step-(\d+)$/;

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
  readonly format: typeof FORMAT;
  readonly version: number;
  /** The config kind of the run ('dvae', 'prior'). */
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

export interface WriteCheckpointOptions {
  /** The model's parameters by name. */
  readonly model: ReadonlyMap<string, Tensor> | Iterable<[string, Tensor]>;
  /** The optimizer's state tensors (AdamW.stateTensors()). */
  readonly optimizer: ReadonlyMap<string, Tensor> | Iterable<[string, Tensor]>;
  readonly state: CheckpointStateInput;
  /** Keep this many newest checkpoints, remove older ones (default 3; 0 = keep all). */
  readonly keep?: number;
}

export function checkpointDirName(step: number): string {
  return `step-${step}`;
}

/** Writes RUN/checkpoints/step-N atomically, points `latest` at it, prunes old ones. Returns the directory. */
export function writeCheckpoint(runDir: string, options: WriteCheckpointOptions): string {
  const { state } = options;
  if (!Number.isSafeInteger(state.step) || state.step < 0) throw new RangeError(`checkpoint step must be an integer >= 0, got ${state.step}`);
  const relative = path.join(CHECKPOINTS_DIR, checkpointDirName(state.step));
  const target = path.join(runDir, relative);
  writeDirectoryAtomicSync(
    target,
    (dir) => {
      const modelFile = path.join(dir, MODEL_FILE);
      const optimizerFile = path.join(dir, OPTIMIZER_FILE);
      const digests = new Map([
        [MODEL_FILE, saveTensors(modelFile, options.model, { format: FORMAT, step: String(state.step) })],
        [OPTIMIZER_FILE, saveTensors(optimizerFile, options.optimizer, { format: FORMAT, step: String(state.step) })],
      ]);
      fs.writeFileSync(path.join(dir, CHECKSUMS_FILE), formatChecksums(digests));
      const full: CheckpointState = {
        format: FORMAT,
        version: VERSION,
        ...state,
        files: { [MODEL_FILE]: fs.statSync(modelFile).size, [OPTIMIZER_FILE]: fs.statSync(optimizerFile).size },
        created: new Date().toISOString(),
      };
      fs.writeFileSync(path.join(dir, STATE_FILE), formatStateJson(full));
    },
    { replace: true }, // a resumed run that re-reaches a step (after an interrupted write) replaces it
  );
  writeFileAtomicSync(path.join(runDir, LATEST_FILE), relative.split(path.sep).join('/') + '\n');
  pruneCheckpoints(runDir, options.keep ?? 3, state.step);
  return target;
}

/** Steps of the complete-looking checkpoints in RUN/checkpoints, ascending (temporary directories are ignored). */
export function listCheckpoints(runDir: string): number[] {
  const dir = path.join(runDir, CHECKPOINTS_DIR);
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .map((name) => STEP_DIR.exec(name))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
}

/** Removes all but the newest `keep` checkpoints (never `protect`, the one just written). */
export function pruneCheckpoints(runDir: string, keep: number, protect?: number): void {
  if (!(keep > 0)) return;
  const steps = listCheckpoints(runDir);
  for (const step of steps.slice(0, Math.max(0, steps.length - keep))) {
    if (step === protect) continue;
    fs.rmSync(path.join(runDir, CHECKPOINTS_DIR, checkpointDirName(step)), { recursive: true, force: true });
  }
}

export interface ResolvedCheckpoint {
  /** The run directory (holds config.yaml). */
  readonly runDir: string;
  /** The checkpoint directory (holds model.safetensors, state.json). */
  readonly dir: string;
  readonly state: CheckpointState;
}

/** The kinds of run (state.json `kind`) and the command that trains each, which hints name. */
export const TRAIN_COMMANDS = { dvae: 'dalle train-dvae', prior: 'dalle train-prior', clip: 'dalle train-clip' } as const;
export type RunKind = keyof typeof TRAIN_COMMANDS;

/** "`dalle train-prior`" for a prior run; every training command when the kind expected is not known. */
function trainedBy(kind: RunKind | undefined): string {
  return kind === undefined ? Object.values(TRAIN_COMMANDS).map((command) => `\`${command}\``).join(', ') : `\`${TRAIN_COMMANDS[kind]}\``;
}

/**
 * What `--dvae X` / `--prior X` / `--clip X` / `--resume` accept: a run directory (its `latest` checkpoint) or a
 * checkpoint directory (RUN/checkpoints/step-N). Reads and checks state.json and the tensor files' sizes. `kind`, the
 * kind of run expected, makes the hints name the command that trains it.
 */
export function resolveCheckpoint(target: string, kind?: RunKind): ResolvedCheckpoint {
  const stat = fs.statSync(target, { throwIfNoEntry: false });
  if (!stat) {
    throw new CheckpointError(`no run or checkpoint at ${target}: the path does not exist`, `give a run directory (runs/NAME) made by ${trainedBy(kind)}, or one of its checkpoints/step-N directories`);
  }
  if (!stat.isDirectory()) {
    throw new CheckpointError(`${target} is a file, not a run or checkpoint directory`, 'give the run directory (runs/NAME) or a checkpoints/step-N directory inside it');
  }
  if (fs.existsSync(path.join(target, STATE_FILE))) {
    const dir = path.resolve(target);
    const parent = path.dirname(dir);
    const runDir = path.basename(parent) === CHECKPOINTS_DIR ? path.dirname(parent) : parent;
    return { runDir, dir, state: readCheckpointState(dir) };
  }
  const runDir = path.resolve(target);
  const latestFile = path.join(runDir, LATEST_FILE);
  if (!fs.existsSync(latestFile)) {
    const steps = listCheckpoints(runDir);
    throw new CheckpointError(
      `${target} has no '${LATEST_FILE}' file and no ${STATE_FILE}: it is neither a run directory with a checkpoint nor a checkpoint directory`,
      steps.length > 0
        ? `pass a checkpoint directly, e.g. ${path.join(target, CHECKPOINTS_DIR, checkpointDirName(steps[steps.length - 1]))}`
        : `train first (${kind === undefined ? trainedBy(kind) : `\`${TRAIN_COMMANDS[kind]} ... --out RUN\``}); a run gets its first checkpoint at ${kind === 'clip' ? '--checkpoint-every' : 'train.checkpoint_every'} updates or at the end`,
    );
  }
  const pointer = readTextFileSync(latestFile, TEXT_LIMITS.runMetadata).trim();
  if (!/^checkpoints\/step-\d+$/.test(pointer)) {
    throw new CheckpointError(`${latestFile} should hold 'checkpoints/step-N', it holds ${JSON.stringify(pointer.slice(0, 80))}`, `write the newest complete checkpoint's path into it, e.g. echo checkpoints/step-N > ${latestFile}`);
  }
  const dir = path.join(runDir, pointer);
  if (!fs.existsSync(path.join(dir, STATE_FILE))) {
    throw new CheckpointError(`${latestFile} points at ${pointer}, which has no ${STATE_FILE}`, `point it at another checkpoint (${listCheckpoints(runDir).map(checkpointDirName).join(', ') || 'none left'}), or train again`);
  }
  return { runDir, dir, state: readCheckpointState(dir) };
}

/**
 * Where a training run starts: with `resume`, the run's latest checkpoint (which must be of `kind` and not past
 * `steps`); without, a run directory that has no checkpoints yet (so a typo cannot overwrite a run).
 */
export function resolveTrainingStart(
  out: string, kind: string, command: string, resume: boolean | undefined, steps: number,
): { state?: CheckpointState; dir?: string; startStep: number } {
  let state: CheckpointState | undefined;
  let dir: string | undefined;
  if (resume) {
    const found = resolveCheckpoint(out, Object.hasOwn(TRAIN_COMMANDS, kind) ? (kind as RunKind) : undefined);
    if (found.state.kind !== kind) throw new CheckpointError(`${found.dir} is a ${found.state.kind} checkpoint, not a ${kind} one`, `resume a run made by \`${command}\``);
    state = found.state;
    dir = found.dir;
  } else if (listCheckpoints(out).length > 0) {
    throw new CheckpointError(`${out} already has checkpoints`, 'continue it with --resume, or choose a new --out');
  }
  const startStep = state?.step ?? 0;
  if (startStep > steps) {
    throw new CheckpointError(`the checkpoint is at update ${startStep}, past train.steps = ${steps}`, 'raise train.steps (--set train.steps=N) to train further');
  }
  return { state, dir, startStep };
}

/** Reads state.json of a checkpoint directory and checks it (format, fields, bounds, tensor file sizes). */
export function readCheckpointState(dir: string): CheckpointState {
  const file = path.join(dir, STATE_FILE);
  const hint = 'the checkpoint is incomplete or damaged: resume from or use an earlier one (checkpoints/step-N), or train again';
  let parsed: unknown;
  try {
    parsed = JSON.parse(readTextFileSync(file, TEXT_LIMITS.runMetadata));
  } catch (error) {
    throw new CheckpointError(`${file} is not readable JSON (${error instanceof Error ? error.message : String(error)})`, hint);
  }
  const problems: string[] = [];
  const s = parsed as Partial<CheckpointState> | null;
  if (s === null || typeof s !== 'object') throw new CheckpointError(`${file} does not hold a JSON object`, hint);
  if (s.format !== FORMAT) problems.push(`format is ${JSON.stringify(s.format)}, expected "${FORMAT}"`);
  if (s.version !== VERSION) problems.push(`version is ${JSON.stringify(s.version)}, this dalle reads ${VERSION}`);
  if (typeof s.kind !== 'string') problems.push('kind is missing');
  if (!Number.isSafeInteger(s.step) || (s.step as number) < 0) problems.push(`step ${JSON.stringify(s.step)} is not an integer >= 0`);
  if (!Number.isSafeInteger(s.optimizer_step) || (s.optimizer_step as number) < 0) problems.push(`optimizer_step ${JSON.stringify(s.optimizer_step)} is not an integer >= 0`);
  if (typeof s.rng !== 'object' || s.rng === null) problems.push('rng is missing');
  else {
    for (const [name, r] of Object.entries(s.rng)) {
      if (typeof r?.seed !== 'string' || typeof r?.offset !== 'string' || !/^\d+$/.test(r.seed) || !/^\d+$/.test(r.offset)) problems.push(`rng.${name} is not {seed, offset} as decimal strings`);
    }
  }
  if (s.data !== undefined) {
    const d = s.data;
    for (const key of ['seed', 'records', 'epoch', 'position'] as const) {
      if (!Number.isSafeInteger(d?.[key]) || d[key] < 0) problems.push(`data.${key} ${JSON.stringify(d?.[key])} is not an integer >= 0`);
    }
  }
  if (typeof s.metrics !== 'object' || s.metrics === null) problems.push('metrics is missing');
  if (typeof s.files !== 'object' || s.files === null) problems.push('files is missing');
  if (problems.length > 0) throw new CheckpointError(`${file} is not a valid checkpoint state: ${problems.join('; ')}`, hint);
  const stepName = STEP_DIR.exec(path.basename(dir));
  if (stepName && Number(stepName[1]) !== s.step) {
    problems.push(`it says step ${s.step} but its directory is ${path.basename(dir)}`);
    throw new CheckpointError(`${file} does not belong to its directory: ${problems.join('; ')}`, hint);
  }
  for (const [name, bytes] of Object.entries(s.files as Record<string, number>)) {
    const tensorFile = path.join(dir, name);
    const actual = fs.statSync(tensorFile, { throwIfNoEntry: false })?.size;
    if (actual === undefined) problems.push(`${name} is missing`);
    else if (actual !== bytes) problems.push(`${name} has ${actual} bytes, ${STATE_FILE} recorded ${bytes} (truncated or replaced)`);
  }
  if (problems.length > 0) throw new CheckpointError(`checkpoint ${dir} is damaged: ${problems.join('; ')}`, hint);
  return s as CheckpointState;
}

/** Fills `targets` from a checkpoint's model.safetensors, with the model's name/shape checks and a CheckpointError. */
export function loadCheckpointModel(dir: string, targets: ReadonlyMap<string, Tensor>): void {
  loadCheckpointFile(path.join(dir, MODEL_FILE), (file) => loadTensorsInto(file, targets));
}

/** Host data of each optimizer tensor of a checkpoint, for AdamW.loadStateTensors. */
export function readCheckpointOptimizer(dir: string): Map<string, Float32Array> {
  return loadCheckpointFile(path.join(dir, OPTIMIZER_FILE), (file) => {
    const reader = SafetensorsReader.open(file);
    try {
      const out = new Map<string, Float32Array>();
      for (const name of reader.names) {
        const host = reader.read(name);
        if (host.dtype !== 'f32') throw new Error(`'${name}' is ${host.dtype}, optimizer state is f32`);
        checkFinite(host, file, name);
        out.set(name, host.data as Float32Array);
      }
      return out;
    } finally {
      reader.close();
    }
  });
}

/** What restoreCheckpointOptimizer needs of an optimizer (AdamW). */
export interface RestorableOptimizer {
  loadStateTensors(step: number, get: (name: string) => Float32Array | undefined): void;
}

/**
 * Restores the optimizer from a checkpoint's optimizer.safetensors at `state.optimizer_step`. Returns 'fresh' and
 * leaves the optimizer as made (zero moments, step 0) when that file holds no tensors at all: a checkpoint of weights
 * only, as `dalle convert openai-dvae` writes (zero moments would cost as much space as the weights twice over). A
 * state that lacks some of the optimizer's tensors is a CheckpointError (another model configuration).
 */
export function restoreCheckpointOptimizer(dir: string, state: CheckpointState, optimizer: RestorableOptimizer): 'restored' | 'fresh' {
  const moments = readCheckpointOptimizer(dir);
  if (moments.size === 0) return 'fresh';
  try {
    optimizer.loadStateTensors(state.optimizer_step, (name) => moments.get(name));
  } catch (error) {
    throw new CheckpointError(`${dir}: ${error instanceof Error ? error.message : String(error)}`, 'the checkpoint was written for another model configuration: resume with the config.yaml of its run');
  }
  return 'restored';
}

/** Checks `file` against its checkpoint's SHA256SUMS (when there is one), then loads it; errors are CheckpointErrors. */
function loadCheckpointFile<T>(file: string, load: (file: string) => T): T {
  verifyChecksum(file);
  try {
    return load(file);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new CheckpointError(
      `cannot load ${file}: ${message}`,
      /does not fit this model/.test(message)
        ? 'the checkpoint was written for another model configuration: use the config.yaml of its run'
        : error instanceof NonFiniteTensorError
          ? 'the weights hold NaN or infinite values (the run diverged before this checkpoint, or the file was damaged): use an earlier checkpoints/step-N, or train again'
          : 'the checkpoint is damaged: use an earlier checkpoints/step-N, or train again',
    );
  }
}

/**
 * Hashes `file` once and compares it with the line for it in SHA256SUMS beside it. A checkpoint without SHA256SUMS
 * (written before dalle recorded checksums) is loaded unchecked; one whose SHA256SUMS does not list the file, or
 * lists another digest, is refused.
 */
function verifyChecksum(file: string): void {
  const dir = path.dirname(file);
  const name = path.basename(file);
  const manifest = path.join(dir, CHECKSUMS_FILE);
  if (!fs.existsSync(manifest)) return;
  const hint = 'the checkpoint is damaged (a flipped bit, a bad copy) or was changed after it was written: use an earlier checkpoints/step-N, copy it again from where it came from, or train again';
  let expected: string | undefined;
  try {
    expected = parseChecksums(readTextFileSync(manifest, TEXT_LIMITS.runMetadata), manifest).get(name);
  } catch (error) {
    throw new CheckpointError(`cannot load ${file}: cannot read ${manifest}: ${error instanceof Error ? error.message : String(error)}`, hint);
  }
  if (expected === undefined) throw new CheckpointError(`cannot load ${file}: ${manifest} does not list ${name}, so it cannot be checked`, hint);
  const actual = sha256File(file);
  if (actual !== expected) {
    throw new CheckpointError(`cannot load ${file}: it does not match its checksum (its SHA-256 is ${actual}, ${CHECKSUMS_FILE} recorded ${expected})`, hint);
  }
}

/** Indented JSON with arrays of numbers on one line (usage histograms would otherwise take a line per count). */
function formatStateJson(state: CheckpointState): string {
  return JSON.stringify(state, null, 2).replace(/\[\s*(-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*)\s*\]/g, (_, body: string) => `[${body.replace(/\s+/g, '')}]`) + '\n';
}
