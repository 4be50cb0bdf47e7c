/**
 * Copies a child's output to the launcher's stream line by line, each line prefixed (`[rank 2] `), so the lines of
 * several processes interleave whole. Works on bytes (a UTF-8 character split across chunks stays whole); a line longer
 * than MAX_PENDING_BYTES is written in pieces, each prefixed, instead of being held without bound; a last line without
 * a newline gets one when the stream ends.
 */
import { Readable, Writable } from 'node:stream';

export const MAX_PENDING_BYTES = 64 * 1024;
const NEWLINE = 0x0a;

/** Resolves when `source` has ended and everything it wrote was handed to `target`. */
export function copyPrefixedLines(source: Readable, target: Writable, prefix: string): Promise<void> {
  const head = Buffer.from(prefix);
  let pending: Buffer = Buffer.alloc(0);
  const write = (line: Buffer): void => {
    target.write(Buffer.concat([head, line]));
  };
  return new Promise((resolve) => {
    source.on('data', (chunk: Buffer) => {
      let data = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      let newline = data.indexOf(NEWLINE);
      if (newline !== -1) {
        // every complete line of the chunk in one write: fewer writes, and still whole lines
        const last = data.lastIndexOf(NEWLINE);
        const lines: Buffer[] = [];
        let start = 0;
        while (newline !== -1 && newline <= last) {
          lines.push(head, data.subarray(start, newline + 1));
          start = newline + 1;
          newline = data.indexOf(NEWLINE, start);
        }
        target.write(Buffer.concat(lines));
        data = data.subarray(start);
      }
      while (data.length > MAX_PENDING_BYTES) {
        write(Buffer.concat([data.subarray(0, MAX_PENDING_BYTES), Buffer.from('\n')]));
        data = data.subarray(MAX_PENDING_BYTES);
      }
      pending = Buffer.from(data); // a copy: the chunk's memory is not held
    });
    const finish = (): void => {
      if (pending.length > 0) write(Buffer.concat([pending, Buffer.from('\n')]));
      pending = Buffer.alloc(0);
      resolve();
    };
    source.on('end', finish);
    source.on('error', finish);
  });
}
