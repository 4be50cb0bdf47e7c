/**
 * A damaged token cache is checked when it is opened: each kind of damage is a DataError (exit code 4) naming the
 * cache file and saying to delete the cache, never a raw error (ENOENT, SyntaxError, NpyError, or a native error when a
 * token outside the vocabulary reaches the prior); deleting it as the hint says rebuilds the same cache.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { DataError } from '../../src/core/data/errors';
import { findTokenCache, loadOrBuildTokenCache, TokenCache } from '../../src/core/data/token-cache';
import { loadDvae, TrainedDvae } from '../../src/core/models/dvae/load';
import { encodeNpy } from '../../src/core/io/npy';
import { temporaryDir } from '../commands/helpers';
import { makeCaptionedData, makeTinyDvae, writeTinyPriorConfig } from '../train/prior-helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');

describe('data: a damaged token cache is named, with what to do', function () {
  this.timeout(120000);
  let work: string;
  let data: string;
  let dvaeRun: string;
  let dvae: TrainedDvae;
  let built: TokenCache;
  let pristine: string;

  before(async () => {
    work = temporaryDir('dalle-token-cache-');
    data = await makeCaptionedData(path.join(work, 'data'));
    dvaeRun = await makeTinyDvae(work, data);
    dvae = loadDvae(dvaeRun);
    built = await loadOrBuildTokenCache({ data, dvae });
    pristine = path.join(work, 'pristine');
    fs.cpSync(built.dir, pristine, { recursive: true });
  });

  after(() => dvae?.model.dispose());

  /** Restores the cache, damages one file, and returns the error of opening it. */
  async function openDamaged(file: string, damage: (bytes: Buffer) => Buffer | undefined): Promise<DataError> {
    fs.rmSync(built.dir, { recursive: true, force: true });
    fs.cpSync(pristine, built.dir, { recursive: true });
    const target = path.join(built.dir, file);
    const damaged = damage(fs.readFileSync(target));
    if (damaged === undefined) fs.rmSync(target);
    else fs.writeFileSync(target, damaged);
    try {
      await findTokenCache({ data, dvae });
    } catch (error) {
      assert.ok(error instanceof DataError, `${file}: ${String((error as Error).stack)}`);
      assert.ok(error.message.startsWith(`the token cache ${built.dir} is damaged: ${target}: `), error.message);
      assert.match(error.hint ?? '', /^delete .*: the next run encodes the images again and rebuilds it$/);
      return error;
    }
    assert.fail(`${file}: the damaged cache was opened`);
  }

  const int32At = (bytes: Buffer, fromEnd: number, value: number): Buffer => {
    const copy = Buffer.from(bytes);
    copy.writeInt32LE(value, copy.length - 4 * fromEnd);
    return copy;
  };

  it('the .npy: cut short, a broken header, a token outside the vocabulary, another dtype, missing', async () => {
    assert.match((await openDamaged('train.npy', (b) => b.subarray(0, b.length - 10))).message, /truncated/);
    assert.match((await openDamaged('train.npy', (b) => Buffer.concat([Buffer.from('X'), b.subarray(1)]))).message, /magic/);
    assert.match(
      (await openDamaged('train.npy', (b) => int32At(b, 1, 9999))).message,
      /grid 11, row 7, column 7 holds token 9999, outside the dVAE's vocabulary 0\.\.15$/,
    );
    assert.match((await openDamaged('val.npy', (b) => int32At(b, 64, -3))).message, /grid 3, row 0, column 0 holds token -3/);
    const floats = Buffer.concat(encodeNpy({ dtype: 'f32', shape: built.train.shape, data: new Float32Array(built.train.tokens.length) }));
    assert.match((await openDamaged('train.npy', () => floats)).message, /it holds f32 \(12, 8, 8\), not int32 \(N, 8, 8\)/);
    assert.match((await openDamaged('val.npy', () => undefined)).message, /ENOENT/);
  });

  it('the captions: a line that is not JSON, not an array of strings, or missing', async () => {
    const lines = (b: Buffer) => b.toString('utf8').split('\n');
    assert.match((await openDamaged('train.captions.jsonl', (b) => Buffer.from(lines(b).map((l, i) => (i === 2 ? l.slice(0, 5) : l)).join('\n')))).message, /line 3: /);
    assert.match((await openDamaged('train.captions.jsonl', (b) => Buffer.from(lines(b).map((l, i) => (i === 0 ? '[1]' : l)).join('\n')))).message, /line 1 is not a JSON array of captions/);
    assert.match((await openDamaged('train.captions.jsonl', (b) => Buffer.from(lines(b).slice(1).join('\n')))).message, /11 caption lines for the 12 grids/);
  });

  it('meta.json: not JSON, another key, another image count', async () => {
    assert.match((await openDamaged('meta.json', (b) => b.subarray(0, 20))).message, /meta\.json: /);
    assert.match((await openDamaged('meta.json', (b) => Buffer.from(b.toString().replace(built.key, '0000000000000000')))).message, /its key is "0000000000000000", not the folder's/);
    assert.match((await openDamaged('meta.json', (b) => Buffer.from(b.toString().replace('"images": 12', '"images": 13')))).message, /records 13 images for train, but train\.npy holds 12 grids/);
  });

  it('train-prior on a damaged cache exits 4 naming the cache file; deleting it as told rebuilds the same cache', async () => {
    fs.rmSync(built.dir, { recursive: true, force: true });
    fs.cpSync(pristine, built.dir, { recursive: true });
    const npy = path.join(built.dir, 'train.npy');
    const bytes = fs.readFileSync(npy);
    bytes.writeInt32LE(9999, bytes.length - 4);
    fs.writeFileSync(npy, bytes);
    const child = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'run.js'), 'train-prior', '--config', writeTinyPriorConfig(work), '--data', data, '--dvae', dvaeRun, '--out', path.join(work, 'prior')], { encoding: 'utf8' });
    assert.equal(child.status, 4, child.stderr);
    const stderr = child.stderr.replace(/\s+/g, ' ');
    assert.ok(stderr.includes(`DataError: the token cache ${built.dir} is damaged: ${npy}: grid 11, row 7, column 7 holds token 9999`), child.stderr);
    assert.match(stderr, /Try this: delete .*rebuilds it/);

    fs.rmSync(built.dir, { recursive: true });
    const rebuilt = await loadOrBuildTokenCache({ data, dvae });
    assert.equal(rebuilt.built, true);
    assert.equal(rebuilt.dir, built.dir);
    assert.deepEqual(rebuilt.train.tokens, built.train.tokens);
    assert.deepEqual(rebuilt.val?.captions, built.val?.captions);
  });
});
