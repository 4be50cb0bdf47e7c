/**
 * Output paths that cannot be written, as a user meets them with `dalle encode` and `dalle decode` on a tiny trained
 * dVAE: a missing folder is created; a path under a file, a folder that cannot be written, --out of the wrong kind and
 * too little free space fail before the work with a named error and exit code 4 or 5 naming the path; a disk that
 * fills up during the writes is a named error (exit 5), never a raw errno.
 *
 * Tests run as root, where permission bits do not stop a write. "Cannot be written" therefore uses /sys (sysfs refuses
 * new files even to root) and, where this process may mount file systems, a read-only tmpfs; "disk full" uses a small
 * tmpfs filled up. Without mount rights (not root, or a container without CAP_SYS_ADMIN) those cases are skipped,
 * saying so.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import { readNpySync, writeNpySync } from '../../src/core/io/npy';
import { trainTinyDvaeRun } from '../harness/tiny-dvae-run';
import { temporaryDir } from './helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');

function dalle(args: string[]) {
  return runCommand(args, { root: ROOT });
}

interface JsonRun {
  /** The error the command ended with (--json prints it as the last line), if any. */
  readonly error?: { name: string; message: string; suggestions?: string[]; oclif?: { exit?: number } };
  /** Every JSON line: the events, then the result or the error. */
  readonly lines: Array<{ type?: string; task?: string }>;
}

/** Runs a command with --json: its events and its error as a script sees them. */
async function dalleJson(args: string[]): Promise<JsonRun> {
  const { stdout, error } = await dalle([...args, '--json']);
  const lines = stdout
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as { type?: string; task?: string; error?: JsonRun['error'] });
  return { error: (error as JsonRun['error']) ?? lines.at(-1)?.error, lines };
}

/** Whether the work began: a progress event of `task`. */
function workStarted(run: JsonRun, task: 'encode' | 'decode'): boolean {
  return run.lines.some((event) => event.type === 'progress' && event.task === task);
}

/** Mounts a tmpfs of `kib` KiB at a fresh folder (read-only with `readOnly`); undefined where mounting is not allowed. */
function mountTmpfs(kib: number, readOnly = false): string | undefined {
  const dir = temporaryDir('dalle-tmpfs-');
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${kib}k${readOnly ? ',ro' : ''}`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch {
    return undefined;
  }
  mounted.push(dir);
  return dir;
}
const mounted: string[] = [];

/** Fills the file system holding `dir` with one file until no byte more fits. */
function fillUp(dir: string): void {
  const fd = fs.openSync(path.join(dir, 'filler'), 'w');
  const block = Buffer.alloc(4096, 1);
  try {
    for (;;) fs.writeSync(fd, block);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
  } finally {
    fs.closeSync(fd);
  }
}

describe('commands: output paths that cannot be written', function () {
  this.timeout(60000);
  let work: string;
  let images: string;
  let run: string;
  let tokens: string;

  before(async () => {
    ({ work, images, run } = await trainTinyDvaeRun('dalle-out-paths-', 20));
    tokens = path.join(work, 'codes.npy');
    writeNpySync(tokens, { dtype: 'i32', shape: [4, 8, 8], data: new Int32Array(4 * 64).map((_, i) => (i * 5) % 16) });
  });

  after(() => {
    for (const dir of mounted.splice(0)) execFileSync('umount', [dir]);
  });

  afterEach(() => {
    process.exitCode = undefined;
  });

  it('encode creates the missing folder of --out (tok/x.npy with no tok/)', async () => {
    const out = path.join(work, 'tok', 'deeper', 'x.npy');
    const { error } = await dalle(['encode', '--dvae', run, images, '--out', out]);
    assert.equal(error, undefined, error?.message);
    assert.deepEqual(readNpySync(out).shape, [20, 8, 8]);
    assert.equal(fs.readFileSync(path.join(work, 'tok', 'deeper', 'x.inputs.txt'), 'utf8').trim().split('\n').length, 20);
  });

  it('encode refuses, before encoding, a path under a file, a folder given as the file, and a folder it cannot write', async () => {
    const file = path.join(work, 'a-file.txt');
    fs.writeFileSync(file, 'not a folder\n');
    const under = await dalleJson(['encode', '--dvae', run, images, '--out', path.join(file, 'x.npy')]);
    assert.equal(under.error?.name, 'OutputPathError');
    assert.equal(under.error?.oclif?.exit, 4);
    assert.match(under.error?.message ?? '', /--out .*a-file\.txt\/x\.npy: .*a-file\.txt is a file, not a folder/);
    assert.ok(!workStarted(under, 'encode'), 'nothing was encoded');

    const folder = path.join(work, 'a-folder');
    fs.mkdirSync(folder);
    const isFolder = await dalleJson(['encode', '--dvae', run, images, '--out', folder]);
    assert.equal(isFolder.error?.name, 'OutputPathError');
    assert.equal(isFolder.error?.oclif?.exit, 4);
    assert.match(isFolder.error?.message ?? '', /--out .*a-folder is a folder; --out names the file to write/);
    assert.ok(!workStarted(isFolder, 'encode'));

    // sysfs lets no one create a file, root included.
    if (fs.existsSync('/sys/kernel')) {
      const sys = await dalleJson(['encode', '--dvae', run, images, '--out', '/sys/tokens.npy']);
      assert.equal(sys.error?.name, 'OutputPathError');
      assert.equal(sys.error?.oclif?.exit, 4);
      assert.match(sys.error?.message ?? '', /--out \/sys\/tokens\.npy: \/sys is not writable \(permission denied\)/);
      assert.ok(!workStarted(sys, 'encode'));
    }
  });

  it('encode and decode refuse a read-only folder before the work (read-only tmpfs)', async function () {
    const readOnly = mountTmpfs(64, true);
    if (readOnly === undefined) {
      console.log('      (skipped: this process cannot mount a read-only tmpfs; the /sys case above covers an unwritable folder)');
      this.skip();
    }
    const e = await dalleJson(['encode', '--dvae', run, images, '--out', path.join(readOnly, 'tok', 'x.npy')]);
    assert.equal(e.error?.name, 'OutputPathError');
    assert.equal(e.error?.oclif?.exit, 4);
    assert.match(e.error?.message ?? '', /--out .*tok\/x\.npy: .* is on a read-only file system/);
    assert.ok(!workStarted(e, 'encode'));
    const d = await dalleJson(['decode', '--dvae', run, tokens, '--out', path.join(readOnly, 'png')]);
    assert.equal(d.error?.name, 'OutputPathError');
    assert.match(d.error?.message ?? '', /is on a read-only file system/);
    assert.ok(!workStarted(d, 'decode'));
  });

  it('decode refuses --out naming a file where a folder is needed', async () => {
    const file = path.join(work, 'not-a-folder.png');
    fs.writeFileSync(file, 'x');
    const r = await dalleJson(['decode', '--dvae', run, tokens, '--out', file]);
    assert.equal(r.error?.name, 'OutputPathError');
    assert.equal(r.error?.oclif?.exit, 4);
    assert.match(r.error?.message ?? '', /--out .*not-a-folder\.png is a file, not a folder/);
    assert.match((r.error?.suggestions ?? []).join(' '), /give a folder/);
    assert.ok(!workStarted(r, 'decode'));
    assert.equal(fs.readFileSync(file, 'utf8'), 'x');
  });

  it('encode refuses too little free space before encoding (exit 5), naming the path and the sizes', async function () {
    const small = mountTmpfs(64);
    if (small === undefined) {
      console.log('      (skipped: this process cannot mount a tmpfs to fill up)');
      this.skip();
    }
    fillUp(small);
    const out = path.join(small, 'tokens.npy');
    const r = await dalleJson(['encode', '--dvae', run, images, '--out', out]);
    assert.equal(r.error?.name, 'OutputWriteError');
    assert.equal(r.error?.oclif?.exit, 5);
    assert.match(r.error?.message ?? '', /--out .*tokens\.npy: not enough free space: the output needs 0\.005 MiB, the disk holding .* has 0\.000 MiB free/);
    assert.ok(!workStarted(r, 'encode'), 'nothing was encoded');
    assert.ok(!fs.existsSync(out));
  });

  it('a disk that fills up while decode writes is a named error (exit 5) naming the file, not a raw ENOSPC', async function () {
    const small = mountTmpfs(64);
    if (small === undefined) {
      console.log('      (skipped: this process cannot mount a tmpfs to fill up)');
      this.skip();
    }
    // Two 4 KiB blocks left: room for the folder's lock file and decode.json (one block each), none for the PNGs too.
    fs.mkdirSync(path.join(small, 'png'));
    fillUp(small);
    const filler = path.join(small, 'filler');
    fs.truncateSync(filler, fs.statSync(filler).size - 2 * 4096);
    const r = await dalle(['decode', '--dvae', run, tokens, '--out', path.join(small, 'png')]);
    assert.equal(r.error?.name, 'OutputWriteError');
    assert.equal(r.error?.oclif?.exit, 5);
    // Which file meets the full disk depends on how the small files before it fill their blocks: any of decode's.
    assert.match(r.error?.message ?? '', /no space left on the device to write .*png\/(00000\d\.png|decode\.json)/);
    assert.match(((r.error as { suggestions?: string[] }).suggestions ?? []).join(' '), /free some space on the disk holding .*png/);
    assert.deepEqual(fs.readdirSync(path.join(small, 'png')).filter((name) => name.includes('.tmp-')), [], 'no temporary file left behind');
  });
});
