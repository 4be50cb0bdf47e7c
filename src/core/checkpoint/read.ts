/**
 * Finding and reading checkpoints: what `--dvae X` / `--prior X` / `--clip X` / `--resume` resolve to, state.json
 * checked field by field, and the tensor files loaded with their checks. state.json records the byte size of both
 * tensor files, so a file truncated or replaced after the fact is caught before anything is loaded; SHA256SUMS catches
 * a flipped bit, checked once per load as the file is opened. A checkpoint from before SHA256SUMS loads unchecked.
 * Every floating-point value loaded must be finite (io/finite.ts): a NaN weight is an error naming its tensor.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadTensorsInto } from '../io/tensors';
import { CHECKSUMS_FILE, parseChecksums, sha256File } from '../io/checksums';
import { checkFinite, NonFiniteTensorError } from '../io/finite';
import { SafetensorsReader } from '../io/safetensors';
import { readTextFileSync, TEXT_LIMITS } from '../io/text-file';
import type { Tensor } from '../tensor';
import {
  CHECKPOINTS_DIR,
  CHECKPOINT_FORMAT,
  CHECKPOINT_VERSION,
  CheckpointError,
  CheckpointState,
  LATEST_FILE,
  MODEL_FILE,
  OPTIMIZER_FILE,
  RunKind,
  STATE_FILE,
  STEP_DIR,
  TRAIN_COMMANDS,
  checkpointDirName,
  trainedBy,
} from './format';

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

export interface ResolvedCheckpoint {
  /** The run directory (holds config.yaml). */
  readonly runDir: string;
  /** The checkpoint directory (holds model.safetensors, state.json). */
  readonly dir: string;
  readonly state: CheckpointState;
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
  if (s.format !== CHECKPOINT_FORMAT) problems.push(`format is ${JSON.stringify(s.format)}, expected "${CHECKPOINT_FORMAT}"`);
  if (s.version !== CHECKPOINT_VERSION) problems.push(`version is ${JSON.stringify(s.version)}, this dalle reads ${CHECKPOINT_VERSION}`);
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
