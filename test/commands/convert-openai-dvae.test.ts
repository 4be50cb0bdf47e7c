/**
 * `dalle convert openai-dvae` as a user runs it, on tiny files shaped like OpenAI's released encoder.pkl / decoder.pkl
 * (test/fixtures/openai-dvae, written by PyTorch 1.13 from look-alike dall_e modules by
 * scripts/fixtures/openai_dvae_fixtures.py, with what those modules compute on two images): the converted run gives
 * PyTorch's token grids exactly through `dalle encode`, its pixels within 1e-5 (and `dalle decode`'s PNGs), and is
 * taken unchanged by evaluate recon, export and train-prior; a pickle that would run code is refused.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import sharp from 'sharp';
import { readNpySync } from '../../src/core/io/npy';
import { loadDvae } from '../../src/core/models/dvae/load';
import { readSafetensorsSync } from '../../src/core/io/safetensors';
import { Tensor, noGrad } from '../../src/core/tensor';
import { readCheckpointOptimizer, readCheckpointState, writeCheckpoint } from '../../src/core/checkpoint';
import { makeCaptionedData, writeTinyPriorConfig } from '../train/prior-helpers';
import { hashTree, temporaryDir } from './helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'openai-dvae');
const fixture = (name: string): string => path.join(FIXTURES, name);
const IMAGES = [fixture('image-0.png'), fixture('image-1.png')];

function dalle(args: string[]) {
  return runCommand(args, { root: ROOT });
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

describe('commands: convert openai-dvae', function () {
  this.timeout(120000);
  let work: string;
  let run: string;

  before(async () => {
    work = temporaryDir('dalle-convert-');
    run = path.join(work, 'runs', 'openai');
    const { error, stdout } = await dalle(['convert', 'openai-dvae', '--encoder', fixture('encoder.zip.pkl'), '--decoder', fixture('decoder.legacy.pkl'), '--out', run, '--resolution', '32']);
    assert.equal(error, undefined, error?.message);
    assert.match(stdout, /encoder\.zip\.pkl \(zip format, f32\) and .*decoder\.legacy\.pkl \(legacy format, f16\/f32\)/);
    assert.match(stdout, /32 codes, n_hid 4, 4 groups of 1 blocks; 32 px images <-> 4x4 token grids/);
  });

  afterEach(() => {
    process.exitCode = undefined;
  });

  it('writes a dVAE run: config.yaml, checkpoints/step-0 with SHA256SUMS, latest, openai-dvae.json', () => {
    const config = fs.readFileSync(path.join(run, 'config.yaml'), 'utf8');
    for (const line of ['kind: dvae', 'n_hid: 4', 'n_groups: 4', 'n_blk_per_group: 1', 'vocab_size: 32', 'n_init: 8', 'resolution: 32']) assert.ok(config.includes(line), line);
    assert.equal(fs.readFileSync(path.join(run, 'latest'), 'utf8').trim(), 'checkpoints/step-0');
    assert.deepEqual(fs.readdirSync(path.join(run, 'checkpoints', 'step-0')).sort(), ['SHA256SUMS', 'model.safetensors', 'optimizer.safetensors', 'state.json']);
    const mark = JSON.parse(fs.readFileSync(path.join(run, 'openai-dvae.json'), 'utf8'));
    assert.equal(mark.encoder.format, 'zip');
    assert.equal(mark.decoder.format, 'legacy');
    assert.deepEqual(mark.decoder.dtypes, ['f16', 'f32']);
    assert.match(mark.encoder.sha256, /^[0-9a-f]{64}$/);
  });

  it('dalle encode gives PyTorch\'s token grids exactly, and the encoder its logits within 1e-4', async () => {
    const out = path.join(work, 'tokens.npy');
    const { error } = await dalle(['encode', '--dvae', run, ...IMAGES, '--out', out]);
    assert.equal(error, undefined, error?.message);
    const ours = readNpySync(out);
    const theirs = readNpySync(fixture('tokens.npy'));
    assert.deepEqual(ours.shape, [2, 4, 4]);
    assert.deepEqual(Array.from(ours.data as Int32Array), Array.from(theirs.data as Int32Array));
    assert.equal(new Set(theirs.data as Int32Array).size, 32); // every code occurs: a wrong weight would move some

    const dvae = loadDvae(run);
    try {
      const pixels = new Float32Array(2 * 3 * 32 * 32);
      for (const [i, file] of IMAGES.entries()) {
        const { data } = await sharp(file).raw().toBuffer({ resolveWithObject: true });
        for (let p = 0; p < 32 * 32; p++) for (let c = 0; c < 3; c++) pixels[i * 3072 + c * 1024 + p] = data[3 * p + c] / 255;
      }
      const logits = noGrad(() => {
        const x = Tensor.from(pixels, [2, 3, 32, 32]);
        const l = dvae.model.logits(x);
        const values = l.toArray() as Float32Array;
        x.dispose();
        l.dispose();
        return values;
      });
      const diff = maxAbsDiff(logits, readNpySync(fixture('logits.npy')).data as Float32Array);
      assert.ok(diff < 1e-4, `max |logits - PyTorch| = ${diff}`);
    } finally {
      dvae.model.dispose();
    }
  });

  it('decodes PyTorch\'s tokens to its pixels within 1e-5, and dalle decode writes them as PNGs', async () => {
    const tokens = readNpySync(fixture('tokens.npy'));
    const expected = readNpySync(fixture('pixels.npy')).data as Float32Array;
    const dvae = loadDvae(run);
    let pixels: Float32Array;
    try {
      pixels = noGrad(() => {
        const codes = Tensor.from(tokens.data as Int32Array, [2, 4, 4], 'i32');
        const images = dvae.model.decode(codes);
        const values = images.toArray() as Float32Array;
        codes.dispose();
        images.dispose();
        return values;
      });
    } finally {
      dvae.model.dispose();
    }
    const diff = maxAbsDiff(pixels, expected);
    assert.ok(diff < 1e-5, `max |pixels - PyTorch| = ${diff}`);

    const out = path.join(work, 'decoded');
    const { error } = await dalle(['decode', '--dvae', run, fixture('tokens.npy'), '--out', out]);
    assert.equal(error, undefined, error?.message);
    for (let i = 0; i < 2; i++) {
      const { data } = await sharp(path.join(out, `00000${i}.png`)).raw().toBuffer({ resolveWithObject: true });
      let off = 0;
      for (let p = 0; p < 32 * 32; p++) {
        for (let c = 0; c < 3; c++) off = Math.max(off, Math.abs(data[3 * p + c] - 255 * expected[i * 3072 + c * 1024 + p]));
      }
      assert.ok(off <= 0.5 + 1e-3, `image ${i}: a PNG value is ${off} levels from PyTorch's pixel`);
    }
  });

  it('the legacy encoder with the zip decoder converts to the same weights', async () => {
    const other = path.join(work, 'runs', 'other-formats');
    const { error } = await dalle(['convert', 'openai-dvae', '--encoder', fixture('encoder.legacy.pkl'), '--decoder', fixture('decoder.zip.pkl'), '--out', other, '--resolution', '32']);
    assert.equal(error, undefined, error?.message);
    const weights = (dir: string): Buffer => fs.readFileSync(path.join(dir, 'checkpoints', 'step-0', 'model.safetensors'));
    assert.ok(weights(other).equals(weights(run)));
  });

  it('evaluate recon, export and train-prior take the converted run as --dvae', async () => {
    const recon = await dalle(['evaluate', 'recon', '--dvae', run, '--data', FIXTURES, '--json']);
    assert.equal(recon.error, undefined, recon.error?.message);
    const result = JSON.parse(recon.stdout.trim().split('\n').pop()!);
    assert.equal(result.images, 2);
    assert.equal(result.vocabSize, 32);

    const exported = await dalle(['export', '--dvae', run, '--out', path.join(work, 'onnx')]);
    assert.equal(exported.error, undefined, exported.error?.message);
    assert.ok(fs.existsSync(path.join(work, 'onnx', 'dvae-encoder.onnx')));

    const data = await makeCaptionedData(path.join(work, 'captioned'));
    const prior = await dalle(['train-prior', '--config', writeTinyPriorConfig(work), '--data', data, '--dvae', run, '--out', path.join(work, 'runs', 'prior'),
      '--set', 'model.image_grid=4', '--set', 'model.image_vocab=32', '--set', 'train.steps=2']);
    assert.equal(prior.error, undefined, prior.error?.message);
    assert.match(prior.stdout, /trained 2 updates/);
  });

  it('train-dvae --resume fine-tunes the converted run: AdamW starts fresh, saying so, and writes a normal checkpoint', async () => {
    const tuned = path.join(work, 'runs', 'tuned');
    fs.cpSync(run, tuned, { recursive: true });
    const sets = ['train.steps=2', 'train.batch_size=2', 'train.log_every=1', 'train.sample_every=100', 'train.checkpoint_every=100'].flatMap((set) => ['--set', set]);
    const { error, stderr } = await dalle(['train-dvae', '--out', tuned, '--resume', '--data', FIXTURES, ...sets]);
    assert.equal(error, undefined, error?.message);
    assert.match(stderr, /step-0 holds weights but no optimizer state: AdamW starts fresh \(zero moments, step 0\)/);
    assert.equal(fs.readFileSync(path.join(tuned, 'latest'), 'utf8').trim(), 'checkpoints/step-2');
    const step2 = path.join(tuned, 'checkpoints', 'step-2');
    const state = readCheckpointState(step2);
    assert.deepEqual([state.step, state.optimizer_step], [2, 2]);
    assert.ok(state.rng.noise, 'the noise stream is recorded');
    const moments = readCheckpointOptimizer(step2);
    assert.ok(moments.has('encoder.blocks.input.w.m') && moments.has('encoder.blocks.input.w.v'));
    assert.ok([...moments.values()].some((m) => m.some((x) => x !== 0)), 'the moments were updated');
    assert.ok(!fs.readFileSync(path.join(step2, 'model.safetensors')).equals(fs.readFileSync(path.join(run, 'checkpoints', 'step-0', 'model.safetensors'))), 'the weights changed');

    // An optimizer state with one tensor missing is not a weights-only checkpoint: resuming it stays an error.
    const weights = readSafetensorsSync(path.join(step2, 'model.safetensors')).tensors;
    const model = new Map([...weights].map(([name, t]) => [name, Tensor.from(t.data as Float32Array, [...t.shape])]));
    const partial = new Map([...moments].filter(([name]) => name !== 'encoder.blocks.input.w.m').map(([name, m]) => [name, Tensor.from(m, [m.length])]));
    writeCheckpoint(tuned, { model, optimizer: partial, state, keep: 0 });
    for (const t of [...model.values(), ...partial.values()]) t.dispose();
    const refused = await dalle(['train-dvae', '--out', tuned, '--resume', '--data', FIXTURES, ...sets, '--set', 'train.steps=4']);
    assert.equal(refused.error?.oclif?.exit, 4);
    assert.match(refused.error!.message, /optimizer state has no 'encoder\.blocks\.input\.w\.m'/);
  });

  it('converting again into its own run replaces it; another folder is refused before reading', async () => {
    const again = await dalle(['convert', 'openai-dvae', '--encoder', fixture('encoder.zip.pkl'), '--decoder', fixture('decoder.legacy.pkl'), '--out', run, '--resolution', '32']);
    assert.equal(again.error, undefined, again.error?.message);
    const foreign = path.join(work, 'foreign');
    fs.mkdirSync(foreign);
    fs.writeFileSync(path.join(foreign, 'notes.txt'), 'mine');
    const refused = await dalle(['convert', 'openai-dvae', '--encoder', fixture('encoder.zip.pkl'), '--decoder', fixture('decoder.zip.pkl'), '--out', foreign]);
    assert.equal(refused.error?.oclif?.exit, 4);
    assert.match(refused.error!.message, /not empty and was not written by dalle convert openai-dvae/);
    assert.deepEqual(fs.readdirSync(foreign), ['notes.txt']);
  });

  it('refuses the pickle that would run code, writing nothing (exit 4)', async () => {
    const out = path.join(work, 'runs', 'evil');
    const { error } = await dalle(['convert', 'openai-dvae', '--encoder', fixture('evil.pkl'), '--decoder', fixture('decoder.zip.pkl'), '--out', out]);
    assert.equal(error?.name, 'PickleRefusedError');
    assert.equal(error?.oclif?.exit, 4);
    assert.match(error!.message, /refusing .*evil\.pkl: its pickle imports posix\.system, which this file type never holds \(byte 2\); dalle never runs code from a pickle/);
    assert.equal(fs.existsSync(out), false);
  });

  it('names swapped files and a resolution the token grid cannot divide, writing nothing', async () => {
    const before = hashTree(work);
    const swapped = await dalle(['convert', 'openai-dvae', '--encoder', fixture('decoder.zip.pkl'), '--decoder', fixture('encoder.zip.pkl'), '--out', path.join(work, 'runs', 'swapped')]);
    assert.equal(swapped.error?.oclif?.exit, 4);
    assert.match(swapped.error!.message, /--encoder .*decoder\.zip\.pkl holds a dall_e\.decoder\.Decoder, not a dall_e\.encoder\.Encoder/);
    assert.match(swapped.stderr + JSON.stringify(swapped.error), /the files are swapped/);

    const odd = await dalle(['convert', 'openai-dvae', '--encoder', fixture('encoder.zip.pkl'), '--decoder', fixture('decoder.zip.pkl'), '--out', path.join(work, 'runs', 'odd'), '--resolution', '36']);
    assert.equal(odd.error?.oclif?.exit, 4);
    assert.match(odd.error!.message, /--resolution 36 is not a multiple of 8/);
    assert.deepEqual(hashTree(work), before);
  });
});
