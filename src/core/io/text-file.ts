/**
 * Reading text files that users hand us (captions, manifests, configs, tokenizers, run metadata), bounded and decoded
 * strictly.
 *
 * A read takes at most limit + 1 bytes from the descriptor, whatever stat says, so /dev/zero, a FIFO or stdin that
 * never ends are refused after limit + 1 bytes instead of growing memory without end. Line-based files also have a
 * longest line, so a "caption" of 300 MB is an error naming its line rather than something printed or tokenized whole.
 *
 * Decoding: UTF-8, with or without a byte-order mark (dropped). A UTF-16 file with its byte-order mark (what Windows
 * editors write as "Unicode") is decoded too. Anything else is refused rather than guessed at, so text never turns
 * into U+FFFD or NUL characters silently: bytes that are not UTF-8 (Latin-1, Windows-1252) are an error naming the
 * line and byte offset with the iconv command that converts the file, and so is a NUL character (a binary file, or
 * UTF-16 without a byte-order mark).
 */
import { isUtf8 } from 'node:buffer';
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

const UTF8_BOM = [0xef, 0xbb, 0xbf];
const UTF16LE_BOM = [0xff, 0xfe];
const UTF16BE_BOM = [0xfe, 0xff];

/**
 * The text of bytes read from `file` (see the module comment for what is decoded and what refused), checked against
 * `limits.maxLineChars`. Throws TextFileError naming the file, line and byte offset of the first problem.
 */
export function decodeUserText(bytes: Uint8Array, file: string, limits: TextLimits): string {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let text: string;
  let byteOffsetOf: (index: number) => number;
  if (startsWith(buffer, UTF16LE_BOM) || startsWith(buffer, UTF16BE_BOM)) {
    const encoding = buffer[0] === 0xff ? 'utf-16le' : 'utf-16be';
    try {
      text = new TextDecoder(encoding, { fatal: true, ignoreBOM: true }).decode(buffer.subarray(2));
    } catch {
      throw new TextFileError(file, `it starts with a ${encoding.toUpperCase()} byte-order mark but is not valid ${encoding.toUpperCase()} (an odd number of bytes, or a lone surrogate)`,
        `convert it to UTF-8, e.g. ${iconvCommand(file, encoding)}`);
    }
    byteOffsetOf = (index) => 2 + 2 * index;
  } else {
    const bom = startsWith(buffer, UTF8_BOM) ? UTF8_BOM.length : 0;
    const body = buffer.subarray(bom);
    text = body.toString('utf8');
    if (!isUtf8(body)) throw notUtf8(file, body, text, bom);
    byteOffsetOf = (index) => bom + Buffer.byteLength(text.slice(0, index), 'utf8');
  }
  const nul = text.indexOf('\0');
  if (nul >= 0) {
    const line = lineAt(text, nul);
    throw new TextFileError(file, `line ${line} holds a NUL character (byte offset ${byteOffsetOf(nul)}): it is a binary file, or UTF-16 or UTF-32 text without a byte-order mark`,
      `give a UTF-8 text file; convert UTF-16 with ${iconvCommand(file, 'utf-16')}`, line);
  }
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

/** The error for bytes that are not UTF-8: the line and byte offset of the first bad byte (Node's decoder finds it). */
function notUtf8(file: string, body: Buffer, decoded: string, bomLength: number): TextFileError {
  // The decoder writes U+FFFD for each bad sequence; the first U+FFFD that the file does not spell (EF BF BD) is it.
  let index = decoded.indexOf('\uFFFD');
  let offset = 0;
  while (index >= 0) {
    offset = Buffer.byteLength(decoded.slice(0, index), 'utf8');
    if (!(body[offset] === 0xef && body[offset + 1] === 0xbf && body[offset + 2] === 0xbd)) break;
    index = decoded.indexOf('\uFFFD', index + 1);
  }
  const line = lineAt(decoded, Math.max(index, 0));
  const byte = body[offset] ?? 0;
  return new TextFileError(
    file,
    `it is not UTF-8: line ${line}, byte offset ${bomLength + offset} holds 0x${byte.toString(16).padStart(2, '0')}, which does not begin or continue a UTF-8 character (is it Latin-1 or Windows-1252?)`,
    `convert it to UTF-8, e.g. ${iconvCommand(file, 'latin1')}`,
    line,
  );
}

function iconvCommand(file: string, from: string): string {
  return file === STDIN ? `iconv -f ${from} -t utf-8 < INPUT | dalle ...` : `iconv -f ${from} -t utf-8 ${shellQuote(file)} > ${shellQuote(`${file}.utf8`)}`;
}

function shellQuote(text: string): string {
  return /^[\w./@%+=:,-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;
}

function startsWith(buffer: Buffer, prefix: readonly number[]): boolean {
  return buffer.length >= prefix.length && prefix.every((byte, i) => buffer[i] === byte);
}

/** 1-based line of the character at `index`. */
function lineAt(text: string, index: number): number {
  let line = 1;
  for (let at = text.indexOf('\n'); at >= 0 && at < index; at = text.indexOf('\n', at + 1)) line++;
  return line;
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
