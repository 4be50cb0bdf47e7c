/**
 * Random access to the bytes of a file or of an in-memory buffer, so that one parser serves both (and tests can
 * fuzz the parser without touching the disk).
 *
 * `read` returns a fresh buffer that starts at byte offset 0 of its ArrayBuffer (so any typed array view of it is
 * aligned), and returns fewer bytes than asked when the source ends early: callers turn that into their format's
 * "truncated" error.
 */
import * as fs from 'node:fs';

export interface ByteSource {
  /** File name for messages ('<memory>' for buffers). */
  readonly name: string;
  /** Size in bytes when the source was opened. */
  readonly size: number;
  read(position: number, length: number): Uint8Array;
  close(): void;
}

/** Largest single read: fs.readSync takes at most 2^31 - 1 bytes at a time. */
const MAX_READ_CHUNK = 1 << 30;

export class FileByteSource implements ByteSource {
  private fd: number | undefined;
  readonly size: number;

  constructor(readonly name: string) {
    this.fd = fs.openSync(name, 'r');
    try {
      this.size = fs.fstatSync(this.fd).size;
    } catch (err) {
      fs.closeSync(this.fd);
      throw err;
    }
  }

  read(position: number, length: number): Uint8Array {
    if (this.fd === undefined) throw new Error(`${JSON.stringify(this.name)} was already closed`);
    // allocUnsafeSlow: not from Node's shared pool, so byteOffset is 0, and not zero-filled since we overwrite it.
    const out = Buffer.allocUnsafeSlow(length);
    let filled = 0;
    while (filled < length) {
      const chunk = Math.min(length - filled, MAX_READ_CHUNK);
      const n = fs.readSync(this.fd, out, filled, chunk, position + filled);
      if (n === 0) break;
      filled += n;
    }
    const bytes = new Uint8Array(out.buffer, 0, length);
    return filled === length ? bytes : bytes.slice(0, filled);
  }

  close(): void {
    if (this.fd !== undefined) {
      fs.closeSync(this.fd);
      this.fd = undefined;
    }
  }
}

export class MemoryByteSource implements ByteSource {
  readonly size: number;

  constructor(
    private readonly bytes: Uint8Array,
    readonly name = '<memory>',
  ) {
    this.size = bytes.byteLength;
  }

  read(position: number, length: number): Uint8Array {
    const start = Math.min(position, this.size);
    return this.bytes.slice(start, Math.min(start + length, this.size));
  }

  close(): void {}
}
