/** Bounded reads of users' text files: size limits that hold for endless sources, and per-line limits. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TextFileError } from '../../src/core/io/errors';
import { readBounded, readBoundedSync, readTextFileSync, TEXT_LIMITS, TextLimits } from '../../src/core/io/text-file';

const SMALL: TextLimits = { what: 'test file', maxBytes: 100, maxLineChars: 10 };

function temporaryFile(name: string, contents: string | Buffer): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dalle-text-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, name);
  fs.writeFileSync(file, contents);
  return file;
}

function expectTextFileError(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof TextFileError, `expected a TextFileError, got ${String(error)}`);
    for (const p of patterns) assert.match(`${error.message} | ${error.hint}`, p);
    return true;
  });
}

describe('io: bounded text reads', () => {
  it('reads a file up to its limit exactly, and refuses one byte more', async () => {
    const exact = temporaryFile('exact.txt', 'x'.repeat(100));
    assert.equal(readBoundedSync(exact, SMALL).length, 100);
    assert.equal((await readBounded(exact, SMALL)).length, 100);
    const over = temporaryFile('over.txt', 'x'.repeat(101));
    expectTextFileError(() => readBoundedSync(over, SMALL), /over\.txt: it has more than 100 bytes, the most a test file may have/);
    await assert.rejects(readBounded(over, SMALL), (error: unknown) => error instanceof TextFileError && /more than 100 bytes/.test(error.message));
    assert.equal(readBoundedSync(temporaryFile('empty.txt', ''), SMALL).length, 0);
  });

  it('stops reading an endless source (/dev/zero) after limit + 1 bytes', async () => {
    const started = Date.now();
    expectTextFileError(() => readBoundedSync('/dev/zero', TEXT_LIMITS.config), /\/dev\/zero: it has more than 1048576 bytes, the most a config file may have/);
    await assert.rejects(readBounded('/dev/zero', TEXT_LIMITS.imageCaptions), /more than 1048576 bytes/);
    assert.ok(Date.now() - started < 5000, 'bounded reads of /dev/zero must stop at the limit');
  });

  it('reads a FIFO (no size to stat) and refuses one that sends more than the limit', async function () {
    if (process.platform === 'win32') this.skip();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dalle-fifo-'));
    after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const fifo = path.join(dir, 'captions.fifo');
    await new Promise<void>((resolve, reject) => spawn('mkfifo', [fifo]).on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`mkfifo: ${code}`)))));
    // a writer that sends 1 MB, far past the 100-byte limit; it is killed once the reader stops
    const writer = spawn('sh', ['-c', `head -c 1000000 /dev/zero > "${fifo}"`]);
    try {
      await assert.rejects(readBounded(fifo, SMALL), /more than 100 bytes/);
    } finally {
      writer.kill();
    }
  });

  it('refuses a line longer than the limit, naming the file, the line and the limit', () => {
    const file = temporaryFile('captions.txt', 'short\nalso short\n' + 'y'.repeat(11) + '\nlast\n');
    expectTextFileError(() => readTextFileSync(file, SMALL), /captions\.txt:3: line 3 has 11 characters, more than the 10 a line of a test file may have/);
    const last = temporaryFile('last.txt', 'ok\n' + 'z'.repeat(11)); // no newline at the end
    expectTextFileError(() => readTextFileSync(last, SMALL), /last\.txt:2: line 2 has 11 characters/);
    assert.equal(readTextFileSync(temporaryFile('fine.txt', '0123456789\r\nab\n'), { ...SMALL, maxLineChars: 11 }), '0123456789\r\nab\n');
  });
});
