/**
 * What every training loop does with its run directory around the training itself: it takes the run's lock first
 * (io/run-lock.ts: no second process writes the run), checks everything, and only then, before its first write,
 * removes what writes killed mid-way left behind (a killed checkpoint write leaves `checkpoints/step-N.tmp-XXXXXX`,
 * as large as a checkpoint). The order keeps a refused start or resume from changing the folder at all.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { removeStaleTemporaries, writeFileAtomicSync } from '../io/atomic';
import type { RunLock } from '../io/run-lock';
import { EventSink } from '../events';
import { resolveCheckpoint } from '../checkpoint';

/**
 * Removes the temporaries of interrupted atomic writes in the run directory and in its `subfolders` (those the
 * trainer writes: checkpoints/, samples/), with a warning event listing them. `lock` is the run's: only a folder no
 * other process writes may be cleaned (a live writer's temporaries look the same).
 */
export function removeInterruptedWrites(lock: RunLock, subfolders: readonly string[], events: EventSink): void {
  const removed = [lock.dir, ...subfolders.map((name) => path.join(lock.dir, name))].flatMap(removeStaleTemporaries);
  if (removed.length === 0) return;
  events.emit({
    type: 'log',
    level: 'warn',
    message: `removed ${removed.length} temporary ${removed.length === 1 ? 'entry' : 'entries'} left by interrupted writes: ${removed.join(', ')}`,
  });
}

/** Whether `--resume` would find a checkpoint in `runDir` (its `latest` names a complete one). */
export function hasResumableCheckpoint(runDir: string): boolean {
  try {
    resolveCheckpoint(runDir);
    return true;
  } catch {
    return false;
  }
}

/**
 * Drops the lines of a metrics.jsonl past `step`: written after the checkpoint a run resumes from (or, on a fresh
 * start, step 0: all of them) by a run that died before its next checkpoint. The file is replaced atomically.
 */
export function truncateMetrics(file: string, step: number): void {
  if (!fs.existsSync(file)) return;
  const lines = fs.readFileSync(file, 'utf8').split('\n').filter((line) => line.trim() !== '');
  const kept = lines.filter((line) => {
    try {
      return (JSON.parse(line) as { step?: number }).step! <= step;
    } catch {
      return false;
    }
  });
  if (kept.length !== lines.length) writeFileAtomicSync(file, kept.map((l) => l + '\n').join(''));
}
