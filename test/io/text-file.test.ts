/**
 * Users' text files: size limits that hold for endless sources, per-line limits, and strict decoding (UTF-8 with or
 * without a BOM, UTF-16 with a BOM; Latin-1 and NUL refused with the line and byte offset).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TextFileError } from '../../src/core/io/errors';
import { decodeUserText, readBounded, readBoundedSync, readTextFileSync, TEXT_LIMITS, TextLimits } from '../../src/core/io/text-file';

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

describe('io: decoding users\' text files', () => {
  const LIMITS: TextLimits = { what: 'test file', maxBytes: 1000, maxLineChars: 100 };
  const decode = (bytes: Buffer, file = 'captions.txt'): string => decodeUserText(bytes, file, LIMITS);

  it('reads UTF-8 with or without a byte-order mark (dropped)', () => {
    assert.equal(decode(Buffer.from('café ☕ 👍🏽\n', 'utf8')), 'café ☕ 👍🏽\n');
    assert.equal(decode(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('café\n', 'utf8')])), 'café\n');
    assert.equal(decode(Buffer.from('a literal \uFFFD is text\n', 'utf8')), 'a literal \uFFFD is text\n');
  });

  it('decodes UTF-16 LE and BE files that start with their byte-order mark', () => {
    const text = 'café ☕ 👍🏽\r\nsecond line\r\n';
    const le = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')]);
    assert.equal(decode(le), text);
    const be = Buffer.from(le);
    for (let i = 0; i < be.length; i += 2) [be[i], be[i + 1]] = [be[i + 1], be[i]];
    assert.equal(be[0], 0xfe);
    assert.equal(decode(be), text);
    expectTextFileError(() => decode(le.subarray(0, le.length - 1)), /captions\.txt: it starts with a UTF-16LE byte-order mark but is not valid UTF-16LE/, /iconv -f utf-16le -t utf-8 captions\.txt > captions\.txt\.utf8/);
  });

  it('refuses Latin-1 (bytes that are not UTF-8), naming the line and byte offset and the iconv command', () => {
    // line 2 spells a real U+FFFD in UTF-8 (fine), then the Latin-1 byte of 'é' (0xE9)
    const bytes = Buffer.concat([Buffer.from('a red apple\n\uFFFD then caf', 'utf8'), Buffer.from([0xe9]), Buffer.from(' au lait\n')]);
    expectTextFileError(
      () => decode(bytes, 'my captions.txt'),
      /^my captions\.txt:2: it is not UTF-8: line 2, byte offset 24 holds 0xe9, which does not begin or continue a UTF-8 character \(is it Latin-1 or Windows-1252\?\)/,
      /iconv -f latin1 -t utf-8 'my captions\.txt' > 'my captions\.txt\.utf8'/,
    );
  });

  it('refuses NUL characters (binary files, UTF-16 without a byte-order mark), naming the line', () => {
    expectTextFileError(() => decode(Buffer.from('one\ntwo\0three\n')), /captions\.txt:2: line 2 holds a NUL character \(byte offset 7\)/);
    expectTextFileError(() => decode(Buffer.from('no byte-order mark\n', 'utf16le')), /captions\.txt:1: line 1 holds a NUL character \(byte offset 1\): .*UTF-16/);
  });
});
