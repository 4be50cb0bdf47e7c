/**
 * Checkpoints as commands load them: a flipped byte (caught by SHA256SUMS) and a NaN weight (caught by the finite check,
 * its checksum recomputed) stop the command with exit code 4 naming the file or the tensor, instead of decoding black
 * images with exit code 0; a checkpoint from before SHA256SUMS still loads; the bundled models carry and pass theirs.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import { loadDvae } from '../../src/core/models/dvae/load';
import { readSafetensorsSync, writeSafetensorsSync } from '../../src/core/io/safetensors';
import { CheckpointError } from '../../src/core/checkpoint';
import { loadPrior } from '../../src/core/models/prior/load';
import { trainTinyDvaeRun } from '../harness/tiny-dvae-run';
import { temporaryDir } from './helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const BUNDLED = path.join(ROOT, 'models', 'default');

function dalle(args: string[]) {
  return runCommand(args, { root: ROOT });
}

/** A copy of a run directory, to damage. */
function copyRun(run: string): string {
  const copy = path.join(temporaryDir('dalle-integrity-'), 'run');
  fs.cpSync(run, copy, { recursive: true });
  return copy;
}

describe('commands: checkpoint integrity', function () {
  this.timeout(60000);
  let work: string;
  let images: string;
  let run: string;

  before(async () => {
    ({ work, images, run } = await trainTinyDvaeRun('dalle-integrity-', 4));
  });

  afterEach(() => {
    process.exitCode = undefined;
  });

  it('encode works on the run as trained, whose checkpoint lists its files in SHA256SUMS', async () => {
    const sums = fs.readFileSync(path.join(run, 'checkpoints', 'step-8', 'SHA256SUMS'), 'utf8');
    assert.match(sums, /^[0-9a-f]{64} {2}model\.safetensors\n[0-9a-f]{64} {2}optimizer\.safetensors\n$/);
    const { error } = await dalle(['encode', '--dvae', run, images, '--out', path.join(work, 'ok.npy')]);
    assert.equal(error, undefined, error?.message);
  });

  it('a flipped byte in the weights: exit 4 naming the file and its checksum, nothing written', async () => {
    const damaged = copyRun(run);
    const file = path.join(damaged, 'checkpoints', 'step-8', 'model.safetensors');
    const bytes = fs.readFileSync(file);
    const dataStart = 8 + Number(bytes.readBigUInt64LE(0));
    bytes[dataStart + Math.floor((bytes.length - dataStart) / 2)] ^= 0x10;
    fs.writeFileSync(file, bytes);
    const out = path.join(work, 'flipped.npy');
    const { error } = await dalle(['encode', '--dvae', damaged, images, '--out', out]);
    assert.equal(error?.oclif?.exit, 4, error?.message);
    assert.match(error!.message, /cannot load .*step-8\/model\.safetensors: it does not match its checksum/);
    assert.equal(fs.existsSync(out), false);
  });

  it('a NaN weight whose checksum was recomputed: exit 4 naming the tensor and the count', async () => {
    const damaged = copyRun(run);
    const dir = path.join(damaged, 'checkpoints', 'step-8');
    const file = path.join(dir, 'model.safetensors');
    const { tensors, metadata } = readSafetensorsSync(file);
    const [name, weight] = [...tensors.entries()].find(([, t]) => t.dtype === 'f32' && t.data.length > 3)!;
    (weight.data as Float32Array).fill(NaN, 0, 3);
    const digest = writeSafetensorsSync(file, tensors, metadata);
    const sums = path.join(dir, 'SHA256SUMS');
    fs.writeFileSync(sums, fs.readFileSync(sums, 'utf8').replace(/^[0-9a-f]{64}(?= {2}model\.safetensors$)/m, digest));
    const { error } = await dalle(['encode', '--dvae', damaged, images, '--out', path.join(work, 'nan.npy')]);
    assert.equal(error?.oclif?.exit, 4, error?.message);
    assert.match(error!.message, new RegExp(`model\\.safetensors: tensor '${name.replace(/\./g, '\\.')}' has 3 non-finite values \\(NaN or infinite\\)`));
  });

  it('a checkpoint written before SHA256SUMS (none in its folder) still loads', async () => {
    const old = copyRun(run);
    fs.rmSync(path.join(old, 'checkpoints', 'step-8', 'SHA256SUMS'));
    const { error } = await dalle(['encode', '--dvae', old, images, '--out', path.join(work, 'old.npy')]);
    assert.equal(error, undefined, error?.message);
  });

  it('the bundled models carry SHA256SUMS, load with them checked, and a damaged copy is refused', () => {
    // The newest checkpoint of each bundled run (what `latest` names: the packed step, whichever it is).
    const newest = (run: string): string => path.join(run, fs.readFileSync(path.join(run, 'latest'), 'utf8').trim());
    for (const kind of ['dvae', 'prior']) {
      assert.match(fs.readFileSync(path.join(newest(path.join(BUNDLED, kind)), 'SHA256SUMS'), 'utf8'), /^[0-9a-f]{64} {2}model\.safetensors\n$/);
    }
    const dvae = loadDvae(path.join(BUNDLED, 'dvae'));
    dvae.model.dispose();
    const prior = loadPrior(path.join(BUNDLED, 'prior'));
    prior.model.dispose();

    const copy = path.join(temporaryDir('dalle-integrity-'), 'dvae');
    fs.cpSync(path.join(BUNDLED, 'dvae'), copy, { recursive: true });
    const file = path.join(newest(copy), 'model.safetensors');
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 1] ^= 0x01;
    fs.writeFileSync(file, bytes);
    assert.throws(() => loadDvae(copy), (error: unknown) => error instanceof CheckpointError && /does not match its checksum/.test(error.message));
  });
});
