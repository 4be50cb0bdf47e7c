/**
 * Named errors for outputs that cannot be written, so a user never meets a raw errno ("ENOENT: no such file or
 * directory, open '.x.npy.tmp-123-abc'"): each names the path the user gave and says what to do.
 *
 *   OutputPathError   exit 4 (input): the path cannot hold the output: a missing or read-only folder, a file where a
 *                     folder is needed or the reverse, a folder holding another program's files
 *   OutputWriteError  exit 5 (runtime): the write failed while running: no space left, quota exceeded, an I/O error
 *
 * writeFailure() turns an errno error of a write into one of them; atomic writes (atomic.ts) call it, so every file
 * they write fails this way.
 */
import * as path from 'node:path';

/** What both errors carry: the path, the message, what to do, and the errno code behind it, when there was one. */
abstract class OutputError extends Error {
  constructor(
    /** The path the user gave (or the file being written). */
    readonly target: string,
    message: string,
    readonly hint: string,
    /** The errno code behind it ('EACCES', ...). */
    readonly code?: string,
  ) {
    super(message);
  }
}

/** An output path that cannot be written as asked; `hint` says what to do. Exit code 4 (input). */
export class OutputPathError extends OutputError {
  override readonly name = 'OutputPathError';
}

/** A write that failed while the command ran (disk full, I/O error); `hint` says what to do. Exit code 5 (runtime). */
export class OutputWriteError extends OutputError {
  override readonly name = 'OutputWriteError';
}

/** What to tell the user for each errno a write can meet. */
function explain(code: string, target: string): OutputPathError | OutputWriteError | undefined {
  const folder = path.dirname(path.resolve(target));
  switch (code) {
    case 'ENOSPC':
      return new OutputWriteError(target, `no space left on the device to write ${target}`, `free some space on the disk holding ${folder} (\`df -h ${folder}\` shows it), or write to another disk`, code);
    case 'EDQUOT':
      return new OutputWriteError(target, `disk quota exceeded while writing ${target}`, `free some of your space on the disk holding ${folder}, or write to another disk`, code);
    case 'EROFS':
      return new OutputPathError(target, `cannot write ${target}: ${folder} is on a read-only file system`, 'choose an output path on a writable disk', code);
    case 'EACCES':
    case 'EPERM':
      return new OutputPathError(target, `cannot write ${target}: no permission to write in ${folder}`, 'choose an output path in a folder you can write to, or change its permissions', code);
    case 'ENOENT':
      return new OutputPathError(target, `cannot write ${target}: the folder ${folder} does not exist (it was removed while the command ran?)`, 'create the folder, or choose another output path', code);
    case 'ENOTDIR':
      return new OutputPathError(target, `cannot write ${target}: part of its path is a file, not a folder`, 'choose an output path whose folders are folders', code);
    case 'EISDIR':
      return new OutputPathError(target, `cannot write ${target}: it is a folder`, 'give the path of a file to write, not of a folder', code);
    case 'EEXIST':
      return new OutputPathError(target, `cannot write ${target}: something else is already at that path`, 'remove it, or choose another output path', code);
    case 'ENAMETOOLONG':
      return new OutputPathError(target, `cannot write ${target}: the name is too long for the file system`, 'choose a shorter output path', code);
    case 'EIO':
      return new OutputWriteError(target, `an I/O error occurred while writing ${target}`, `the disk holding ${folder} may be failing or disconnected: check it, or write to another disk`, code);
    default:
      return undefined;
  }
}

/**
 * The named error for a write of `target` that failed with `error` (an errno error of fs): OutputPathError or
 * OutputWriteError naming `target`, with the original as `cause` (an errno without specific advice becomes an
 * OutputWriteError). An error without an errno code, or one already named, is returned unchanged.
 */
export function writeFailure(error: unknown, target: string): unknown {
  if (error instanceof OutputPathError || error instanceof OutputWriteError) return error;
  // An fs error has a syscall and an E... code; other errors carrying a code (TargetExistsError) pass unchanged.
  const { code, syscall } = (error ?? {}) as NodeJS.ErrnoException;
  if (!(error instanceof Error) || typeof syscall !== 'string' || typeof code !== 'string' || !/^E[A-Z0-9]+$/.test(code)) return error;
  const named =
    explain(code, target) ??
    new OutputWriteError(target, `cannot write ${target}: ${error.message}`, 'check the disk and the folder, then run the command again', code);
  (named as Error).cause = error;
  return named;
}

/** Runs a synchronous write of `target`, turning its errno errors into named ones (writeFailure). */
export function guardWriteSync<T>(target: string, write: () => T): T {
  try {
    return write();
  } catch (error) {
    throw writeFailure(error, target);
  }
}

/** Runs an asynchronous write of `target`, turning its errno errors into named ones (writeFailure). */
export async function guardWrite<T>(target: string, write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (error) {
    throw writeFailure(error, target);
  }
}
