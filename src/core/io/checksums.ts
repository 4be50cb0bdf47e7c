/**
 * SHA-256 of files, and SHA256SUMS manifests: one `<64 hex digits>  <file name>` line per file, the format
 * `sha256sum` writes, so `cd DIR && sha256sum -c SHA256SUMS` checks a folder with the standard tool too.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { FileFormatError } from './errors';

export const CHECKSUMS_FILE = 'SHA256SUMS';

/** Bytes hashed per read when a file is hashed from disk. */
const HASH_CHUNK_BYTES = 1 << 20;

/** SHA-256 (hex) of the concatenation of `chunks`: what a writer hashes as it writes them. */
export function sha256Hex(chunks: readonly Uint8Array[]): string {
  const hash = createHash('sha256');
  for (const chunk of chunks) hash.update(chunk);
  return hash.digest('hex');
}

/** SHA-256 (hex) of a file, read a chunk at a time (memory stays flat whatever the file's size). */
export function sha256File(file: string): string {
  const hash = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    const buffer = Buffer.allocUnsafe(HASH_CHUNK_BYTES);
    for (;;) {
      const n = fs.readSync(fd, buffer, 0, buffer.length, null);
      if (n === 0) break;
      hash.update(buffer.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

/** A SHA256SUMS text for `digests` (file name -> hex digest), sorted by name. */
export function formatChecksums(digests: ReadonlyMap<string, string>): string {
  return [...digests.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, digest]) => `${digest}  ${name}\n`)
    .join('');
}

const LINE = /^([0-9a-f]{64}) [ *]([^/\\]+)$/;

/** File name -> hex digest of a SHA256SUMS text (`file` names it in errors). Throws FileFormatError. */
export function parseChecksums(text: string, file: string): Map<string, string> {
  const digests = new Map<string, string>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (line === '') return;
    const match = LINE.exec(line);
    const fail = (detail: string): never => {
      throw new FileFormatError(file, `line ${i + 1} ${detail}`, 'Write it again (sha256sum FILES > SHA256SUMS in its folder), or remove it to load the files unchecked', CHECKSUMS_FILE);
    };
    if (match === null) fail(`is not "<64 lower-case hex digits>  <file name>": ${JSON.stringify(line.slice(0, 100))}`);
    if (digests.has(match![2])) fail(`lists ${match![2]} a second time`);
    digests.set(match![2], match![1]);
  });
  return digests;
}
