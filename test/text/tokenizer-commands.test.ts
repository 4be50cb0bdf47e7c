/**
 * `dalle tokenizer train` and `dalle tokenizer encode` as a user runs them: a caption file in, a tokenizer.json out
 * that the library reads; --json output is clean JSON lines (the library's trainer prints progress on stdout, which
 * must not reach ours); bad input exits with the input error code.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import * as hf from 'tokenizers';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const BIN = path.join(ROOT, 'bin', 'run.js');

function dalle(args: string[]) {
  return runCommand(args, { root: ROOT });
}

const CAPTIONS = [
  'A smiling face with heart-eyes',
  'a grinning cat face',
  'A RED HEART',
  '',
  'a cat with tears of joy 😂',
  'the flag of Japan 🇯🇵',
  'a thumbs up sign: medium skin tone 👍🏽',
  '   ',
  'an armchair in the shape of an avocado',
];

describe('commands: tokenizer train / encode', function () {
  this.timeout(60000);
  let dir: string;
  let captions: string;

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dalle-tok-cmd-'));
    captions = path.join(dir, 'captions.txt');
    // many copies so that the merges have counts; \r\n line ends too
    fs.writeFileSync(captions, Array.from({ length: 20 }, () => CAPTIONS.join('\r\n')).join('\n'));
  });

  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  afterEach(() => {
    process.exitCode = undefined;
  });

  it('train writes a tokenizer.json of the asked size that the library reads', async () => {
    const out = path.join(dir, 'tokenizer.json');
    const { error, stdout } = await dalle(['tokenizer', 'train', '--captions', captions, '--vocab', '300', '--out', out]);
    assert.equal(error, undefined, error?.message);
    assert.match(stdout, /trained 300 tokens \(256 bytes \+ \d+ merges\) from 140 captions, lower-cased -> /);
    const library = hf.Tokenizer.fromFile(out);
    assert.equal(library.getVocabSize(), 300);
    const encoding = await library.encode('A GRINNING CAT', null, { addSpecialTokens: false });
    assert.equal(await library.decode(encoding.getIds(), false), 'a grinning cat');
  });

  it('train takes --vocab and --lowercase from the prior config unless given', async () => {
    const config = path.join(dir, 'prior.yaml');
    fs.writeFileSync(config, 'kind: prior\nmodel:\n  text_vocab: 280\ndata:\n  lowercase: false\n');
    const out = path.join(dir, 'from-config.json');
    const { error, stdout } = await dalle(['tokenizer', 'train', '--captions', captions, '--config', config, '--out', out]);
    assert.equal(error, undefined, error?.message);
    assert.match(stdout, /trained 280 tokens .* from 140 captions -> /);
    assert.equal(JSON.parse(fs.readFileSync(out, 'utf8')).normalizer, null);
  });

  it('train --json prints clean JSON lines, run as a user would (bin/run.js)', () => {
    const out = path.join(dir, 'json.json');
    const result = spawnSync(process.execPath, [BIN, 'tokenizer', 'train', '--captions', captions, '--vocab', '290',
      '--out', out, '--json'], { encoding: 'utf8' });
    assert.equal(result.status, 0, result.stderr);
    const lines = result.stdout.split('\n').filter((line) => line !== '');
    for (const line of lines) JSON.parse(line); // throws on any stray output
    const last = JSON.parse(lines[lines.length - 1]);
    assert.deepEqual({ ...last, merges: undefined }, { out, captions: 140, vocabSize: 290, lowercase: true, merges: undefined });
    assert.ok(last.merges >= 290 - 256);
  });

  it('encode shows the tokens; dropout is reproducible from --seed', async () => {
    const file = path.join(dir, 'tokenizer.json');
    const plain = await dalle(['tokenizer', 'encode', '--tokenizer', file, 'A grinning cat 😂', '--json']);
    assert.equal(plain.error, undefined, plain.error?.message);
    const a = JSON.parse(plain.stdout.trim().split('\n').pop()!);
    assert.equal(a.decoded, 'a grinning cat 😂');
    assert.equal(a.ids.length, a.tokens.length);
    const runs = [];
    for (const seed of ['4', '4']) {
      const { error, stdout } = await dalle(['tokenizer', 'encode', '--tokenizer', file, '--dropout', '0.5', '--seed',
        seed, 'A grinning cat 😂', '--json']);
      assert.equal(error, undefined, error?.message);
      runs.push(JSON.parse(stdout.trim().split('\n').pop()!));
    }
    assert.deepEqual(runs[0].ids, runs[1].ids);
    assert.equal(runs[0].decoded, 'a grinning cat 😂');
    assert.ok(runs[0].ids.length >= a.ids.length);
  });

  it('bad input: a missing caption file and a foreign file exit with the input error code and say what to do', async () => {
    const missing = await dalle(['tokenizer', 'train', '--captions', path.join(dir, 'nope.txt'), '--vocab', '300',
      '--out', path.join(dir, 'x.json')]);
    assert.equal(missing.error?.name, 'TokenizerError');
    assert.equal(missing.error?.oclif?.exit, 4);
    assert.match(missing.error!.message, /cannot read caption file .*nope\.txt/);
    assert.ok(!fs.existsSync(path.join(dir, 'x.json')));
    const wordpiece = path.join(dir, 'wordpiece.json');
    fs.writeFileSync(wordpiece, JSON.stringify({ model: { type: 'WordPiece', vocab: { a: 0 } } }));
    const foreign = await dalle(['tokenizer', 'encode', '--tokenizer', wordpiece, 'a']);
    assert.equal(foreign.error?.oclif?.exit, 4);
    assert.match(foreign.error!.message, /not a byte-level BPE/);
    assert.match(foreign.error!.message, /dalle tokenizer train/);
  });
});
