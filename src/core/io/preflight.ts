/**
 * Checks an output path before the work that produces it, so that a bad --out fails in a second with a message
 * naming it, instead of after an hour of encoding with a raw errno:
 *
 *   - the path is of the right kind: a file output is not an existing folder (nor a device or pipe, which an atomic
 *     write would replace); a folder output is not an existing file;
 *   - every existing folder on the way is a folder (`a.txt/x.npy` is refused);
 *   - the nearest existing folder is writable: a temporary file `.dalle-write-test-PID-RANDOM` is created and removed
 *     there (permission bits alone do not tell: root ignores them, and a read-only mount ignores them the other way);
 *   - with `bytes` (the size of what will be written, where it is known beforehand), the file system has that much
 *     free space (statfs), else an OutputWriteError (exit 5) before the work.
 * The checks write nothing that stays. Missing folders are created when the output is written, by makeOutputFolder
 * (as `mkdir -p`): every dalle command creates the folder of its output file, and its output folder.
 * Failures are OutputPathError (exit 4) or OutputWriteError (exit 5), write-errors.ts.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { OutputPathError, OutputWriteError, guardWriteSync, writeFailure } from './write-errors';

export interface PreflightOptions {
  /** How the user gave the path, for messages: '--out' (default). */
  readonly flag?: string;
  /** Bytes about to be written there, when known before the work: less free space is refused up front. */
  readonly bytes?: number;
}

/** The prefix of the probe file; hidden, so an output folder's ownership check (output-folder.ts) ignores it. */
export const WRITE_PROBE_PREFIX = '.dalle-write-test-';

function statOf(target: string): fs.Stats | undefined {
  try {
    return fs.statSync(target);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ENOTDIR') return undefined; // a file on the way: reported by nearestExistingFolder
    throw writeFailure(error, target);
  }
}

/** The deepest existing folder at or above the folder of `target` (absolute); one that is a file is refused. */
function nearestExistingFolder(target: string, flag: string, given: string): string {
  let dir = path.dirname(path.resolve(target));
  for (;;) {
    const stat = statOf(dir);
    if (stat !== undefined) {
      if (!stat.isDirectory()) {
        throw new OutputPathError(given, `${flag} ${given}: ${dir} is a file, not a folder`, `choose a path whose folders are folders (or move ${dir} away)`, 'ENOTDIR');
      }
      return dir;
    }
    const up = path.dirname(dir);
    if (up === dir) return dir;
    dir = up;
  }
}

/** Creates and removes a probe file in `dir`: proves it writable for this process. */
function probeWritable(dir: string, flag: string, given: string): void {
  const probe = path.join(dir, `${WRITE_PROBE_PREFIX}${process.pid}-${crypto.randomBytes(6).toString('hex')}`);
  let fd: number;
  try {
    fd = fs.openSync(probe, 'wx', 0o600);
  } catch (error) {
    const named = writeFailure(error, probe);
    if (named instanceof OutputPathError || named instanceof OutputWriteError) {
      // Name what the user gave, not the probe file.
      const why = named.code === 'EROFS' ? `${dir} is on a read-only file system` : named.code === 'EACCES' || named.code === 'EPERM' ? `${dir} is not writable (permission denied)` : `cannot create a file in ${dir} (${named.code})`;
      const Kind = named instanceof OutputWriteError ? OutputWriteError : OutputPathError;
      throw new Kind(given, `${flag} ${given}: ${why}`, `choose a ${flag} in a folder you can write to`, named.code);
    }
    throw named;
  }
  fs.closeSync(fd);
  fs.rmSync(probe, { force: true });
}

function megabytes(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(bytes < 2 ** 20 ? 3 : 1)} MiB`;
}

/** Refuses (exit 5) when the file system holding `dir` has less than `bytes` free for this user. */
function checkFreeSpace(dir: string, bytes: number, flag: string, given: string): void {
  let free: number;
  try {
    const stats = fs.statfsSync(dir);
    free = Number(stats.bavail) * Number(stats.bsize);
  } catch {
    return; // statfs unsupported here: the write itself will say if space runs out
  }
  if (free < bytes) {
    throw new OutputWriteError(
      given,
      `${flag} ${given}: not enough free space: the output needs ${megabytes(bytes)}, the disk holding ${dir} has ${megabytes(free)} free`,
      `free some space there (\`df -h ${dir}\` shows it), or choose a ${flag} on another disk`,
      'ENOSPC',
    );
  }
}

/**
 * Checks that the file `file` can be written (see the module comment). An existing file is fine: it is replaced
 * atomically when the output is written. Its folder is made by makeOutputFolder(path.dirname(file)).
 */
export function preflightOutputFile(file: string, options: PreflightOptions = {}): void {
  const flag = options.flag ?? '--out';
  const stat = statOf(file);
  if (stat?.isDirectory()) {
    throw new OutputPathError(file, `${flag} ${file} is a folder; ${flag} names the file to write`, `give a file path, e.g. ${path.join(file, 'NAME')} to write inside that folder`, 'EISDIR');
  }
  if (stat !== undefined && !stat.isFile()) {
    throw new OutputPathError(file, `${flag} ${file} is not a regular file (a device, pipe or socket), which the output would replace`, 'give the path of a regular file', 'EINVAL');
  }
  const existing = nearestExistingFolder(file, flag, file);
  probeWritable(existing, flag, file);
  if (options.bytes !== undefined) checkFreeSpace(existing, options.bytes, flag, file);
}

/** Checks that the folder `dir` can be written into (see the module comment); makeOutputFolder(dir) creates it. */
export function preflightOutputFolder(dir: string, options: PreflightOptions = {}): void {
  const flag = options.flag ?? '--out';
  const stat = statOf(dir);
  if (stat !== undefined && !stat.isDirectory()) {
    throw new OutputPathError(dir, `${flag} ${dir} is a file, not a folder`, `give a folder (created if missing), or move the file ${dir} away`, 'EEXIST');
  }
  const existing = stat !== undefined ? path.resolve(dir) : nearestExistingFolder(path.join(dir, 'x'), flag, dir);
  probeWritable(existing, flag, dir);
  if (options.bytes !== undefined) checkFreeSpace(existing, options.bytes, flag, dir);
}

/** Creates `dir` and its missing parents (mkdir -p), failing with a named error (write-errors.ts). */
export function makeOutputFolder(dir: string): void {
  guardWriteSync(dir, () => fs.mkdirSync(dir, { recursive: true }));
}
