/**
 * Errors raised when a file is not a valid instance of its format.
 *
 * Every message names the file, what is wrong with it and what to do next, so that a user who meets a truncated
 * checkpoint or a foreign file can act on the message alone.
 */

export class FileFormatError extends Error {
  override name = 'FileFormatError';

  constructor(
    /** The file (or '<memory>' for an in-memory buffer) that failed to parse. */
    readonly file: string,
    /** What is wrong, e.g. 'header length 1234 exceeds the file size 100'. */
    readonly detail: string,
    /** What the user can do about it. */
    readonly hint: string,
    formatName: string,
  ) {
    super(`invalid ${formatName} file ${JSON.stringify(file)}: ${detail}. ${hint}`);
  }
}

/** The default advice for a file that fails validation. */
export const CORRUPT_FILE_HINT =
  'The file is truncated or corrupt, or is not in this format: write it again (re-run the command that produced it) ' +
  'or restore it from a copy';

/** Raised by atomic writes when the target directory already exists and replacing it was not asked for. */
export class TargetExistsError extends Error {
  override name = 'TargetExistsError';
  readonly code = 'EEXIST';

  constructor(readonly target: string) {
    super(`${JSON.stringify(target)} already exists. Remove it first, or pass { replace: true } to replace it`);
  }
}

/**
 * A text file a user gave us that cannot be read as text of its kind: too large, a line too long (and, with
 * decoding, not UTF-8 or holding NUL). Names the file and, where there is one, the line. Exit code 4 (input).
 */
export class TextFileError extends Error {
  override name = 'TextFileError';

  constructor(
    /** The file ('-' for stdin). */
    readonly file: string,
    /** What is wrong, e.g. 'line 3 has 70000 characters, more than the 65536 ...'. */
    readonly detail: string,
    /** What the user can do about it. */
    readonly hint: string,
    /** 1-based line of the problem, when it is in one line. */
    readonly line?: number,
  ) {
    super(`${file === '-' ? 'stdin' : file}${line === undefined ? '' : `:${line}`}: ${detail}`);
  }
}
