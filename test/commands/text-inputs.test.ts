/**
 * Users' text inputs as commands read them: endless files (/dev/zero) and over-long lines are refused with the file,
 * the line and the limit (exit code 4, or 3 for a config), never read without end; `dataset inspect` shows a long
 * caption cut, with its full length.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import sharp from 'sharp';
import { temporaryDir } from './helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const BIN = path.join(ROOT, 'bin', 'run.js');

/** Runs the CLI in a child process, as a shell would, with a memory ceiling so an unbounded read fails fast. */
function dalleProcess(args: string[]) {
  const run = spawnSync(process.execPath, ['--max-old-space-size=512', BIN, ...args], { encoding: 'utf8', timeout: 120000 });
  return { status: run.status, signal: run.signal, output: `${run.stdout}\n${run.stderr}`.replace(/\s+/g, ' ') }; // oclif wraps lines
}

function dalle(args: string[]) {
  return runCommand(args, { root: ROOT });
}

async function pngFile(file: string): Promise<void> {
  await sharp({ create: { width: 4, height: 4, channels: 3, background: { r: 200, g: 10, b: 10 } } }).png().toFile(file);
}

describe('commands: bounded text inputs', function () {
  this.timeout(120000);

  afterEach(() => {
    process.exitCode = undefined;
  });

  it('generate --captions /dev/zero is refused at the captions limit (exit 4), not read without end', () => {
    const out = path.join(temporaryDir('dalle-text-cmd-'), 'out');
    const run = dalleProcess(['generate', '--captions', '/dev/zero', '--out', out]);
    assert.equal(run.status, 4, run.output);
    assert.match(run.output, /\/dev\/zero: it has more than 268435456 bytes, the most a captions file may have/);
  });

  it('--config /dev/zero is refused at the config limit (exit 3)', () => {
    const run = dalleProcess(['config', '--config', '/dev/zero']);
    assert.equal(run.status, 3, run.output);
    assert.match(run.output, /\/dev\/zero.*cannot read the config file: it has more than 1048576 bytes/);
  });

  it('tokenizer train refuses a caption line over the limit, naming the file and line', async () => {
    const dir = temporaryDir('dalle-text-cmd-');
    const captions = path.join(dir, 'captions.txt');
    fs.writeFileSync(captions, `a red apple\na green pear\n${'long '.repeat(20000)}\na cat\n`);
    const { error } = await dalle(['tokenizer', 'train', '--captions', captions, '--vocab', '300', '--out', path.join(dir, 'tok.json')]);
    assert.equal(error?.oclif?.exit, 4, error?.message);
    assert.match(error!.message, /captions\.txt:3: line 3 has 100000 characters, more than the 65536 a line of a captions file may have/);
    assert.equal(fs.existsSync(path.join(dir, 'tok.json')), false);
  });

  it('dataset inspect refuses a manifest line and a caption file over their limits, naming file and line', async () => {
    const dir = temporaryDir('dalle-text-cmd-');
    await pngFile(path.join(dir, 'a.png'));
    const manifest = path.join(dir, 'm.jsonl');
    const huge = 'x'.repeat(1024 * 1024 + 1);
    fs.writeFileSync(manifest, `{"image": "a.png", "caption": "fine"}\n{"image": "a.png", "caption": "${huge}"}\n`);
    const bad = await dalle(['dataset', 'inspect', manifest, '--decode', '0']);
    assert.equal(bad.error?.oclif?.exit, 4, bad.error?.message);
    assert.match(bad.error!.message, /m\.jsonl:2: line 2 has 1048610 characters, more than the 1048576 a line of a manifest may have/);

    const folder = path.join(dir, 'folder');
    fs.mkdirSync(folder);
    await pngFile(path.join(folder, 'b.png'));
    fs.writeFileSync(path.join(folder, 'b.txt'), 'y'.repeat(2 * 1024 * 1024));
    const tooBig = await dalle(['dataset', 'inspect', folder, '--decode', '0']);
    assert.equal(tooBig.error?.oclif?.exit, 4, tooBig.error?.message);
    assert.match(tooBig.error!.message, /b\.txt: it has more than 1048576 bytes, the most a caption file may have/);
  });

  it('dataset inspect shows a long caption cut to 200 characters, with its full length', async () => {
    const dir = temporaryDir('dalle-text-cmd-');
    await pngFile(path.join(dir, 'c.png'));
    const long = 'an armchair in the shape of an avocado, '.repeat(1000).trim(); // 39,999 characters
    fs.writeFileSync(path.join(dir, 'c.txt'), `${long}\n`);
    const { error, stdout } = await dalle(['dataset', 'inspect', dir, '--decode', '0']);
    assert.equal(error, undefined, error?.message);
    const shown = stdout.split('\n').find((line) => line.includes('(c.png)'));
    assert.ok(shown !== undefined, stdout);
    assert.ok(shown.length < 300, `a caption line of ${shown.length} characters was printed`);
    assert.match(shown, /"an armchair in the shape of an avocado, an armchair .*\.\.\. \(39999 characters in all\)"/);
  });
});

describe('commands: text encodings', function () {
  this.timeout(60000);

  afterEach(() => {
    process.exitCode = undefined;
  });

  it('tokenizer train refuses a Latin-1 captions file with the line, byte offset and iconv command (exit 4)', async () => {
    const dir = temporaryDir('dalle-text-enc-');
    const captions = path.join(dir, 'latin1.txt');
    fs.writeFileSync(captions, Buffer.from('a red apple\nun caf\u00e9 au lait\n', 'latin1'));
    const { error } = await dalle(['tokenizer', 'train', '--captions', captions, '--vocab', '260', '--out', path.join(dir, 'tok.json')]);
    assert.equal(error?.oclif?.exit, 4, error?.message);
    assert.match(error!.message, /latin1\.txt:2: it is not UTF-8: line 2, byte offset 18 holds 0xe9/);
    assert.match(error!.suggestions?.join(' ') ?? '', /iconv -f latin1 -t utf-8 .*latin1\.txt/);
  });

  it('dataset inspect reads a UTF-16 caption file (with its byte-order mark) as the text it holds', async () => {
    const dir = temporaryDir('dalle-text-enc-');
    await pngFile(path.join(dir, 'cup.png'));
    fs.writeFileSync(path.join(dir, 'cup.txt'), Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('un café ☕\r\n', 'utf16le')]));
    const { error, stdout } = await dalle(['dataset', 'inspect', dir, '--decode', '0']);
    assert.equal(error, undefined, error?.message);
    assert.match(stdout, /^ {2}"un café ☕" {2}\(cup\.png\)$/m);
  });

  it('dataset inspect refuses a Latin-1 manifest and a caption file holding NUL, naming the file and line (exit 4)', async () => {
    const dir = temporaryDir('dalle-text-enc-');
    await pngFile(path.join(dir, 'a.png'));
    const manifest = path.join(dir, 'm.jsonl');
    fs.writeFileSync(manifest, Buffer.from('{"image": "a.png", "caption": "fine"}\n{"image": "a.png", "caption": "caf\u00e9"}\n', 'latin1'));
    const latin1 = await dalle(['dataset', 'inspect', manifest, '--decode', '0']);
    assert.equal(latin1.error?.oclif?.exit, 4, latin1.error?.message);
    assert.match(latin1.error!.message, /m\.jsonl:2: it is not UTF-8: line 2, byte offset 72 holds 0xe9/);

    const folder = path.join(dir, 'folder');
    fs.mkdirSync(folder);
    await pngFile(path.join(folder, 'b.png'));
    fs.writeFileSync(path.join(folder, 'b.txt'), 'a caption\nthen\0binary\n');
    const nul = await dalle(['dataset', 'inspect', folder, '--decode', '0']);
    assert.equal(nul.error?.oclif?.exit, 4, nul.error?.message);
    assert.match(nul.error!.message, /b\.txt:2: line 2 holds a NUL character/);
  });

  it('dataset inspect refuses a CSV row with more fields than the header, naming the file and line (exit 4)', async () => {
    const dir = temporaryDir('dalle-text-enc-');
    await pngFile(path.join(dir, 'a.png'));
    const manifest = path.join(dir, 'm.csv');
    fs.writeFileSync(manifest, 'image,caption\na.png,"red, round"\na.png,red, round\n');
    const { error } = await dalle(['dataset', 'inspect', manifest, '--decode', '0']);
    assert.equal(error?.oclif?.exit, 4, error?.message);
    assert.match(error!.message, /m\.csv:3: the row has 3 fields, the header has 2 \(image, caption\)/);
  });
});
