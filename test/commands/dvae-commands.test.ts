/**
 * `dalle train-dvae`, `dalle encode` and `dalle decode` as a user runs them: train a tiny dVAE for a few updates,
 * encode images to token grids, decode them back to PNGs; resume and Ctrl-C; bad token files.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import sharp from 'sharp';
import { readNpySync, writeNpySync } from '../../src/core/io/npy';
import { DvaeTrainer } from '../../src/core/train/dvae-trainer';
import { listCheckpoints } from '../../src/core/checkpoint';
import { makeImages, readMetrics, temporaryDir, tinyConfig, writeTinyConfig } from './helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');

function dalle(args: string[]) {
  return runCommand(args, { root: ROOT });
}

describe('commands: train-dvae -> encode -> decode', function () {
  this.timeout(30000);
  let work: string;
  let images: string;
  let config: string;
  let run: string;

  before(async () => {
    work = temporaryDir('dalle-cmd-');
    images = await makeImages(path.join(work, 'images'), 10);
    config = writeTinyConfig(work);
    run = path.join(work, 'runs', 'tiny');
    const { error, stdout } = await dalle(['train-dvae', '--config', config, '--data', images, '--out', run]);
    assert.equal(error, undefined, error?.message);
    assert.match(stdout, /trained 8 updates; checkpoint .*step-8/);
  });

  afterEach(() => {
    process.exitCode = undefined;
  });

  it('evaluate recon measures PSNR and codebook usage of the trained run', async () => {
    const { error, stdout } = await dalle(['evaluate', 'recon', '--dvae', run, '--data', images, '--limit', '7', '--json']);
    assert.equal(error, undefined, error?.message);
    const result = JSON.parse(stdout.trim().split('\n').pop()!);
    assert.equal(result.images, 7);
    assert.equal(result.step, 8);
    assert.ok(Number.isFinite(result.psnr) && result.psnr > 0, `psnr ${result.psnr}`);
    assert.ok(result.perplexity >= 1 && result.perplexity <= 16);
    assert.equal(result.vocabSize, 16);
    assert.ok(result.deadCodes >= 0 && result.deadCodes < 16);
  });

  it('train-dvae writes config.yaml, metrics.jsonl, samples and checkpoints with latest', () => {
    assert.match(fs.readFileSync(path.join(run, 'config.yaml'), 'utf8'), /n_hid: 8/);
    const metrics = readMetrics(run);
    assert.deepEqual(metrics.map((m) => m.step), [1, 2, 3, 4, 5, 6, 7, 8]);
    for (const m of metrics) {
      assert.ok(Number.isFinite(m.loss) && m.perplexity >= 1 && m.perplexity <= 16 && m.dead_codes >= 0 && m.dead_codes < 16);
    }
    assert.deepEqual(listCheckpoints(run), [4, 8]);
    assert.equal(fs.readFileSync(path.join(run, 'latest'), 'utf8').trim(), 'checkpoints/step-8');
    assert.deepEqual(fs.readdirSync(path.join(run, 'samples')).sort(), ['step-4.png', 'step-8.png']);
  });

  it('encode writes int32 (N, 8, 8) tokens in input order, lists the inputs, and reports skipped files', async () => {
    const bad = path.join(work, 'bad');
    fs.mkdirSync(bad, { recursive: true });
    fs.writeFileSync(path.join(bad, 'broken.png'), 'not a png');
    const single = path.join(images, '003.png');
    const out = path.join(work, 'tokens.npy');
    const { error, stderr, result } = await dalle(['encode', '--dvae', run, images, single, bad, '--out', out, '--batch-size', '4']);
    assert.equal(error, undefined, error?.message);
    const tokens = readNpySync(out);
    assert.equal(tokens.dtype, 'i32');
    assert.deepEqual(tokens.shape, [11, 8, 8]);
    for (const v of tokens.data as Int32Array) assert.ok(v >= 0 && v < 16);
    const inputs = fs.readFileSync(path.join(work, 'tokens.inputs.txt'), 'utf8').trim().split('\n');
    assert.equal(inputs.length, 11);
    assert.equal(inputs[0], path.join(images, '000.png'));
    assert.equal(inputs[10], single);
    // The same image gives the same grid, whatever batch it was in.
    const grid = (n: number) => [...(tokens.data as Int32Array).subarray(n * 64, (n + 1) * 64)];
    assert.deepEqual(grid(10), grid(3));
    assert.match(stderr, /skipped 1: .*broken\.png \(not-an-image\)/);
    assert.equal((result as { skipped: { total: number } }).skipped.total, 1);

    // Nothing encodable at all is a DataError (exit code 4), and no file is written.
    const none = await dalle(['encode', '--dvae', run, bad, '--out', path.join(work, 'none.npy')]);
    assert.equal(none.error?.name, 'DataError');
    assert.equal(none.error?.oclif?.exit, 4);
    assert.match(none.error?.message ?? '', /no image could be encoded .*broken\.png not-an-image/);
    assert.ok(!fs.existsSync(path.join(work, 'none.npy')));

    // A checkpoint directory works as --dvae too (here the same weights as the run's latest).
    const again = path.join(work, 'again.npy');
    const byDir = await dalle(['encode', '--dvae', path.join(run, 'checkpoints', 'step-8'), images, single, '--out', again]);
    assert.equal(byDir.error, undefined, byDir.error?.message);
    assert.deepEqual([...(readNpySync(again).data as Int32Array)], [...(tokens.data as Int32Array)]);
  });

  it('decode writes one 16x16 PNG per grid, named by index, and a contact sheet', async () => {
    const tokensFile = path.join(work, 'dec-tokens.npy');
    const codes = new Int32Array(3 * 8 * 8).map((_, i) => i % 16);
    writeNpySync(tokensFile, { dtype: 'i32', shape: [3, 8, 8], data: codes });
    const out = path.join(work, 'decoded');
    const { error, stdout } = await dalle(['decode', '--dvae', run, tokensFile, '--out', out, '--grid']);
    assert.equal(error, undefined, error?.message);
    assert.match(stdout, /3 images in .*decoded \(contact sheet/);
    assert.deepEqual(fs.readdirSync(out).sort(), ['000000.png', '000001.png', '000002.png', 'decode.json', 'grid.png']);
    const manifest = JSON.parse(fs.readFileSync(path.join(out, 'decode.json'), 'utf8'));
    assert.deepEqual([manifest.tokens, manifest.images, manifest.grid], [path.resolve(tokensFile), 3, true]);
    const meta = await sharp(path.join(out, '000002.png')).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['png', 16, 16]);
    const sheet = await sharp(path.join(out, 'grid.png')).metadata();
    assert.deepEqual([sheet.width, sheet.height], [2 * 16 + 3 * 2, 2 * 16 + 3 * 2]); // 2x2 tiles, 2 px padding
  });

  it('decode writes only into a new, empty or own folder; a rerun into its own folder leaves no image of the earlier one', async () => {
    const tokensFile = path.join(work, 'dec-tokens-4.npy');
    writeNpySync(tokensFile, { dtype: 'i32', shape: [4, 8, 8], data: new Int32Array(4 * 64).map((_, i) => (i * 3) % 16) });
    const foreign = path.join(work, 'holiday-photos');
    fs.mkdirSync(foreign);
    fs.writeFileSync(path.join(foreign, '000000.png'), 'my photo');
    fs.writeFileSync(path.join(foreign, 'notes.txt'), 'keep\n');
    const r = await dalle(['decode', '--dvae', run, tokensFile, '--out', foreign]);
    assert.equal(r.error?.name, 'OutputPathError');
    assert.equal(r.error?.oclif?.exit, 4);
    assert.match(r.error?.message ?? '', /--out .*holiday-photos is not empty and was not written by dalle decode \(it has no decode\.json\): it holds 000000\.png, notes\.txt/);
    assert.equal(fs.readFileSync(path.join(foreign, '000000.png'), 'utf8'), 'my photo');
    assert.deepEqual(fs.readdirSync(foreign).sort(), ['000000.png', 'notes.txt']);

    const own = path.join(work, 'decoded-twice');
    const first = await dalle(['decode', '--dvae', run, tokensFile, '--out', own, '--grid']);
    assert.equal(first.error, undefined, first.error?.message);
    const fewer = path.join(work, 'dec-tokens-2.npy');
    writeNpySync(fewer, { dtype: 'i32', shape: [2, 8, 8], data: new Int32Array(2 * 64).map((_, i) => (i * 7) % 16) });
    const second = await dalle(['decode', '--dvae', run, fewer, '--out', own]);
    assert.equal(second.error, undefined, second.error?.message);
    assert.deepEqual(fs.readdirSync(own).sort(), ['000000.png', '000001.png', 'decode.json']);
    assert.equal(JSON.parse(fs.readFileSync(path.join(own, 'decode.json'), 'utf8')).tokens, path.resolve(fewer));
  });

  it('decode names the position of a token outside the vocabulary, and rejects a grid of the wrong shape', async () => {
    const outside = path.join(work, 'outside.npy');
    const codes = new Int32Array(2 * 8 * 8);
    codes[64 + 3 * 8 + 5] = 16;
    writeNpySync(outside, { dtype: 'i32', shape: [2, 8, 8], data: codes });
    let r = await dalle(['decode', '--dvae', run, outside, '--out', path.join(work, 'x')]);
    assert.equal(r.error?.name, 'TokenFileError');
    assert.equal(r.error?.oclif?.exit, 4);
    assert.match(r.error?.message ?? '', /token 16 at grid 1, row 3, column 5 .* outside the vocabulary \[0, 16\)/);

    const wrong = path.join(work, 'wrong.npy');
    writeNpySync(wrong, { dtype: 'i32', shape: [2, 4, 4], data: new Int32Array(32) });
    r = await dalle(['decode', '--dvae', run, wrong, '--out', path.join(work, 'x')]);
    assert.equal(r.error?.name, 'TokenFileError');
    assert.match(r.error?.message ?? '', /has shape \(2, 4, 4\); this dVAE decodes grids of 8x8/);

    const floats = path.join(work, 'floats.npy');
    writeNpySync(floats, { dtype: 'f32', shape: [1, 8, 8], data: new Float32Array(64) });
    r = await dalle(['decode', '--dvae', run, floats, '--out', path.join(work, 'x')]);
    assert.match(r.error?.message ?? '', /holds f32 values; token grids are integers/);

    r = await dalle(['decode', '--dvae', path.join(work, 'no-such-run'), outside, '--out', path.join(work, 'x')]);
    assert.equal(r.error?.name, 'CheckpointError');
    assert.equal(r.error?.oclif?.exit, 4);
    assert.ok(!fs.existsSync(path.join(work, 'x')), 'nothing written on error');
  });

  it('--resume with a larger train.steps extends the run from its latest checkpoint', async () => {
    const { error } = await dalle(['train-dvae', '--out', run, '--resume', '--set', 'train.steps=10']);
    assert.equal(error, undefined, error?.message);
    assert.deepEqual(readMetrics(run).map((m) => m.step), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.equal(fs.readFileSync(path.join(run, 'latest'), 'utf8').trim(), 'checkpoints/step-10');
    assert.match(fs.readFileSync(path.join(run, 'config.yaml'), 'utf8'), /steps: 10/);
    const again = await dalle(['train-dvae', '--config', config, '--data', images, '--out', run]);
    assert.equal(again.error?.name, 'CheckpointError');
    assert.match(again.error?.message ?? '', /already has checkpoints/);
  });

  it('Ctrl-C (SIGINT) in a real process checkpoints, exits 130 saying how to resume, and the resume is exact', async () => {
    const out = path.join(work, 'runs', 'interrupted');
    const child = spawn(
      process.execPath,
      [path.join(ROOT, 'bin', 'run.js'), 'train-dvae', '--config', config, '--data', images, '--out', out, '--set', 'train.steps=100000', '--set', 'train.checkpoint_every=100000'],
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.stdout.resume();
    const killer = setTimeout(() => child.kill('SIGKILL'), 20000);
    const metricsFile = path.join(out, 'metrics.jsonl');
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    while (!(fs.existsSync(metricsFile) && fs.readFileSync(metricsFile, 'utf8').split('\n').length > 3)) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    child.kill('SIGINT');
    const code = await exited;
    clearTimeout(killer);
    assert.equal(code, 130, stderr);
    assert.match(stderr.replace(/\s+/g, ' '), /stopped at update (\d+) of 100000; checkpoint .* resume with: dalle train-dvae --out .*interrupted --resume/);
    const stoppedAt = Number(/stopped at update (\d+)/.exec(stderr)?.[1]);
    assert.deepEqual(listCheckpoints(out), [stoppedAt]);

    const { error } = await dalle(['train-dvae', '--out', out, '--resume', '--set', `train.steps=${stoppedAt + 2}`]);
    assert.equal(error, undefined, error?.message);
    const straight = temporaryDir();
    await new DvaeTrainer({ config: tinyConfig(images, [`train.steps=${stoppedAt + 2}`, 'train.checkpoint_every=100000']), out: straight }).run();
    assert.deepEqual(readMetrics(out).map((m) => m.loss), readMetrics(straight).map((m) => m.loss));
  });

  it('the codebook aids (k-means init, decoder warm-up, straight-through) train, log the init, and resume exactly', async () => {
    const aids = ['train.codebook_init=kmeans', 'train.codebook_init_images=6', 'train.decoder_warmup_steps=3', 'train.straight_through=true', 'train.usage_weight=1'];
    const set = (list: string[]) => list.flatMap((a) => ['--set', a]);
    const out = path.join(work, 'runs', 'aids');
    const first = await dalle(['train-dvae', '--config', config, '--data', images, '--out', out, ...set([...aids, 'train.steps=2', 'train.checkpoint_every=2']), '--json']);
    assert.equal(first.error, undefined, first.error?.message);
    assert.match(first.stdout, /codebook init: k-means of \d+ feature vectors, perplexity [\d.]+ of 16/);
    const resumed = await dalle(['train-dvae', '--out', out, '--resume', '--set', 'train.steps=6']);
    assert.equal(resumed.error, undefined, resumed.error?.message);
    const straight = temporaryDir();
    await new DvaeTrainer({ config: tinyConfig(images, [...aids, 'train.steps=6', 'train.checkpoint_every=100000']), out: straight }).run();
    const a = readMetrics(out);
    assert.deepEqual(a.map((m) => m.step), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(a.map((m) => m.loss), readMetrics(straight).map((m) => m.loss));
  });
});
