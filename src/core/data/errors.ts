/**
 * Data errors. Two kinds, on purpose:
 * - DataError: the data set as a whole cannot be used (missing path, no readable records, a missing emoji package,
 *   a resume state from another data set). It stops the command; the CLI maps it to exit code 4 with its hint.
 * - SkipError: one record cannot be used (corrupt, truncated, not an image, too large). It never stops anything:
 *   sources and the loader catch it, count it by reason in a SkipReport, and go on with the next record.
 */

/** Why one record was left out. Stable strings: they appear in --json output and in dataset.json. */
export type SkipReason =
  /** The bytes are not in any image format sharp reads (a text file named .png, an unknown extension). */
  | 'not-an-image'
  /** An image format, but the data inside is damaged. */
  | 'corrupt'
  /** An image format that ends early (no PNG IEND chunk, no JPEG end marker, a tar entry cut short). */
  | 'truncated'
  /** A zero-byte file. */
  | 'empty'
  /** More pixels than data.max_input_pixels: refused before decoding, so a huge file cannot exhaust memory. */
  | 'too-large'
  /** A file named by a manifest that does not exist. */
  | 'missing-file'
  /** A file that exists but cannot be read (permissions, I/O error). */
  | 'unreadable'
  /** A manifest line or row that is not valid JSON / CSV, or lacks the image column. */
  | 'bad-manifest-entry'
  /** A tar-shard sample (a key) with captions but no image. */
  | 'no-image'
  /** A record without any caption, where captions are required. */
  | 'no-caption'
  /** A second image for the same sample key (webdataset), or the same file named twice; the first one is kept. */
  | 'duplicate';

/** One record could not be used; `reason` says why, `detail` is the underlying message. */
export class SkipError extends Error {
  override readonly name = 'SkipError';

  constructor(
    readonly reason: SkipReason,
    readonly detail: string,
  ) {
    super(`${reason}: ${detail}`);
  }
}

/** The data set cannot be used at all; `hint` says what to do next. */
export class DataError extends Error {
  override readonly name = 'DataError';

  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(message);
  }
}
