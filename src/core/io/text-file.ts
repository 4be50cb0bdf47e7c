/**
 * Reading text files that users hand us (captions, manifests, configs, tokenizers, run metadata), bounded.
 *
 * A read takes at most limit + 1 bytes from the descriptor, whatever stat says, so /dev/zero, a FIFO or stdin that
 * never ends are refused after limit + 1 bytes instead of growing memory without end. Line-based files also have a
 * longest line, so a "caption" of 300 MB is an error naming its line rather than something printed or tokenized whole.
 */
import * as fs from 'node:fs';
import { TextFileError } from './errors';

/** How much of one kind of text file we read. */
export interface TextLimits {
  /** Names the kind in messages: 'captions file', 'config file'. */
  readonly what: string;
  /** Largest file in bytes. */
  readonly maxBytes: number;
  /** Longest line in characters (UTF-16 code units); absent: one document, only maxBytes applies. */
  readonly maxLineChars?: number;
}

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * The limits of each kind of text file. Generous: each is far above what a real file of the kind holds, and below
 * V8's longest string (~512 Mi characters), past which Node could not hold the text anyway.
 */
export const TEXT_LIMITS = {
  /**
   * `--captions FILE` of generate, rerank and tokenizer train: one caption a line. A million captions of 200
   * bytes is 200 MB. A caption is cut to the prior's text_len tokens (256 in the paper), so a line of 64 Ki
   * characters is already hundreds of times longer than anything used.
   */
  captionList: { what: 'captions file', maxBytes: 256 * MiB, maxLineChars: 64 * KiB },
  /** The `.txt` beside one image (or in a tar sample): a few captions of one image. */
  imageCaptions: { what: 'caption file', maxBytes: 1 * MiB, maxLineChars: 64 * KiB },
  /** JSON Lines / CSV data-set manifests: a line per image holds a path and its captions. */
  manifest: { what: 'manifest', maxBytes: 256 * MiB, maxLineChars: 1 * MiB },
  /** A YAML config: the shipped ones are a few KB. */
  config: { what: 'config file', maxBytes: 1 * MiB },
  /** A Hugging Face tokenizer.json: the largest public ones, with 200k+ tokens, are ~30 MB. */
  tokenizer: { what: 'tokenizer file', maxBytes: 256 * MiB },
  /**
   * Files dalle writes into run and export folders (state.json with the dVAE's codebook-usage histograms, export
   * info, checksum manifests, `latest`): a few KB to a few MB.
   */
  runMetadata: { what: 'run metadata file', maxBytes: 64 * MiB },
} as const satisfies Record<string, TextLimits>;

/** Standard input, for `--captions -`. */
export const STDIN = '-';

/** Size of each read from a descriptor whose size is unknown (FIFO, character device, stdin). */
const CHUNK_BYTES = 1 * MiB;

/** How `file` is named in messages ('-' is stdin). */
export function describeTextSource(file: string): string {
  return file === STDIN ? 'stdin' : file;
}

/**
 * The bytes of `file` ('-' for stdin), at most `limits.maxBytes`: reads at most maxBytes + 1 bytes and throws
 * TextFileError when there are more. fs errors (ENOENT, EISDIR, EACCES) are thrown as they are, for callers to word.
 */
export function readBoundedSync(file: string, limits: TextLimits): Buffer {
  const fd = file === STDIN ? 0 : fs.openSync(file, 'r');
  try {
    const chunks = new BoundedChunks(file, limits, fs.fstatSync(fd));
    for (let chunk = chunks.next(); chunk !== undefined; chunk = chunks.next()) {
      if (!chunks.add(readSyncRetrying(fd, chunk))) break;
    }
    return chunks.bytes();
  } finally {
    if (file !== STDIN) fs.closeSync(fd);
  }
}

/** The async twin of readBoundedSync (data-set caption files are read many at a time). */
export async function readBounded(file: string, limits: TextLimits): Promise<Buffer> {
  const handle = await fs.promises.open(file, 'r');
  try {
    const chunks = new BoundedChunks(file, limits, await handle.stat());
    for (let chunk = chunks.next(); chunk !== undefined; chunk = chunks.next()) {
      if (!chunks.add((await handle.read(chunk, 0, chunk.length, null)).bytesRead)) break;
    }
    return chunks.bytes();
  } finally {
    await handle.close();
  }
}

/** The buffers of one bounded read: hands out the next buffer to fill until limit + 1 bytes have come. */
class BoundedChunks {
  private readonly cap: number;
  private readonly chunks: Buffer[] = [];
  private total = 0;
  private current: Buffer | undefined;

  constructor(
    private readonly file: string,
    private readonly limits: TextLimits,
    private readonly stat: fs.Stats,
  ) {
    if (stat.isDirectory()) throw Object.assign(new Error(`EISDIR: illegal operation on a directory, read '${file}'`), { code: 'EISDIR' });
    this.cap = limits.maxBytes + 1;
  }

  /** The buffer to read into next, or undefined once limit + 1 bytes are in. */
  next(): Buffer | undefined {
    if (this.total >= this.cap) return undefined;
    // A regular file says its size: read it in one go (plus a byte, in case it grew). Else a chunk at a time.
    const size = this.total === 0 && this.stat.isFile() ? this.stat.size + 1 : CHUNK_BYTES;
    this.current = Buffer.allocUnsafe(Math.min(size, this.cap - this.total));
    return this.current;
  }

  /** Counts `n` bytes read into the last buffer; false at the end of the file. */
  add(n: number): boolean {
    if (n === 0) return false;
    this.chunks.push(n === this.current!.length ? this.current! : this.current!.subarray(0, n));
    this.total += n;
    return true;
  }

  bytes(): Buffer {
    if (this.total > this.limits.maxBytes) throw tooLarge(this.file, this.limits);
    return this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.total);
  }
}

/** Text of bytes read from `file`, checked against `limits.maxLineChars`. */
export function decodeUserText(bytes: Uint8Array, file: string, limits: TextLimits): string {
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8').replace(/^\uFEFF/, '');
  if (limits.maxLineChars !== undefined) checkLineLengths(text, file, limits);
  return text;
}

/** readBoundedSync + decodeUserText. */
export function readTextFileSync(file: string, limits: TextLimits): string {
  return decodeUserText(readBoundedSync(file, limits), file, limits);
}

/** readBounded + decodeUserText. */
export async function readTextFile(file: string, limits: TextLimits): Promise<string> {
  return decodeUserText(await readBounded(file, limits), file, limits);
}

function checkLineLengths(text: string, file: string, limits: TextLimits): void {
  const max = limits.maxLineChars!;
  let start = 0;
  for (let line = 1; start <= text.length; line++) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    if (end - start > max) {
      throw new TextFileError(
        file,
        `line ${line} has ${end - start} characters, more than the ${max} a line of a ${limits.what} may have`,
        `check that ${describeTextSource(file)} is a ${limits.what} (one entry a line), and split or shorten that line`,
        line,
      );
    }
    start = end + 1;
  }
}

/** Throws TextFileError when `byteCount` bytes are more than a file of the kind may have (for sizes known up front). */
export function checkTextSize(file: string, byteCount: number, limits: TextLimits): void {
  if (byteCount > limits.maxBytes) throw tooLarge(file, limits);
}

function tooLarge(file: string, limits: TextLimits): TextFileError {
  return new TextFileError(
    file,
    `it has more than ${limits.maxBytes} bytes, the most a ${limits.what} may have`,
    `check that ${describeTextSource(file)} is the ${limits.what} you meant to give (not a device, a pipe that never ends or a binary file)`,
  );
}

/** fs.readSync that waits out EAGAIN (stdin can be a non-blocking pipe or terminal). */
function readSyncRetrying(fd: number, buffer: Buffer): number {
  for (;;) {
    try {
      return fs.readSync(fd, buffer, 0, buffer.length, null);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EAGAIN') throw error;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
    }
  }
}
