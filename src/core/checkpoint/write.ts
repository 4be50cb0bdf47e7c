/**
 * Writing checkpoints. Each step-N directory is written atomically (filled under a temporary name, fsynced, renamed),
 * then `latest` is replaced atomically, then checkpoints beyond the newest `keep` are removed. A crash at any point
 * leaves `latest` naming a complete checkpoint. state.json records the byte size of both tensor files, and SHA256SUMS
 * (hashed as the files are written) their digests, which every load checks (read.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeDirectoryAtomicSync, writeFileAtomicSync } from '../io/atomic';
import { saveTensors } from '../io/tensors';
import { CHECKSUMS_FILE, formatChecksums } from '../io/checksums';
import type { Tensor } from '../tensor';
import {
  CHECKPOINTS_DIR,
  CHECKPOINT_FORMAT,
  CHECKPOINT_VERSION,
  CheckpointState,
  CheckpointStateInput,
  LATEST_FILE,
  MODEL_FILE,
  OPTIMIZER_FILE,
  STATE_FILE,
  checkpointDirName,
} from './format';
import { listCheckpoints } from './read';

export interface WriteCheckpointOptions {
  /** The model's parameters by name. */
  readonly model: ReadonlyMap<string, Tensor> | Iterable<[string, Tensor]>;
  /** The optimizer's state tensors (AdamW.stateTensors()). */
  readonly optimizer: ReadonlyMap<string, Tensor> | Iterable<[string, Tensor]>;
  readonly state: CheckpointStateInput;
  /** Keep this many newest checkpoints, remove older ones (default 3; 0 = keep all). */
  readonly keep?: number;
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
        [MODEL_FILE, saveTensors(modelFile, options.model, { format: CHECKPOINT_FORMAT, step: String(state.step) })],
        [OPTIMIZER_FILE, saveTensors(optimizerFile, options.optimizer, { format: CHECKPOINT_FORMAT, step: String(state.step) })],
      ]);
      fs.writeFileSync(path.join(dir, CHECKSUMS_FILE), formatChecksums(digests));
      const full: CheckpointState = {
        format: CHECKPOINT_FORMAT,
        version: CHECKPOINT_VERSION,
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

/** Removes all but the newest `keep` checkpoints, never those in `protect` (the one just written, a best one). */
export function pruneCheckpoints(runDir: string, keep: number, protect?: number | readonly number[]): void {
  if (!(keep > 0)) return;
  const kept = new Set(typeof protect === 'number' ? [protect] : (protect ?? []));
  const steps = listCheckpoints(runDir);
  for (const step of steps.slice(0, Math.max(0, steps.length - keep))) {
    if (kept.has(step)) continue;
    fs.rmSync(path.join(runDir, CHECKPOINTS_DIR, checkpointDirName(step)), { recursive: true, force: true });
  }
}

/** Indented JSON with arrays of numbers on one line (usage histograms would otherwise take a line per count). */
function formatStateJson(state: CheckpointState): string {
  return JSON.stringify(state, null, 2).replace(/\[\s*(-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*)\s*\]/g, (_, body: string) => `[${body.replace(/\s+/g, '')}]`) + '\n';
}
