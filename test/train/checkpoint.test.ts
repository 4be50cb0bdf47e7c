/**
 * Checkpoints: the format round-trips, damaged checkpoints fail with clear errors, `--dvae` resolution, and the dVAE
 * trainer's exact resume (N straight updates == N/2 + resume N/2, bitwise) and stop().
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { HostArray } from '../../src/core/io/dtype';
import { readSafetensorsSync, writeSafetensorsSync } from '../../src/core/io/safetensors';
import { Tensor, keep } from '../../src/core/tensor';
import {
  CheckpointError,
  listCheckpoints,
  loadCheckpointModel,
  readCheckpointOptimizer,
  resolveCheckpoint,
  writeCheckpoint,
} from '../../src/core/checkpoint';
import { DvaeTrainer } from '../../src/core/train/dvae-trainer';
import { CoreEvent } from '../../src/core/events';
import { makeImages, readMetrics, temporaryDir, tinyConfig } from '../commands/helpers';

function tensor(values: number[], shape: number[]): Tensor {
  return keep(Tensor.from(Float32Array.from(values), shape));
}

function writeSample(runDir: string, step: number, keepCount = 3): string {
  return writeCheckpoint(runDir, {
    model: new Map([
      ['a.w', tensor([1, 2, 3, 4, 5, 6], [2, 3])],
      ['a.b', tensor([0.5, -0.25], [2])],
    ]),
    optimizer: new Map([
      ['a.w.m', tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [2, 3])],
      ['a.w.v', tensor([1, 1, 1, 1, 1, 1], [2, 3])],
    ]),
    state: {
      kind: 'dvae',
      step,
      optimizer_step: step,
      rng: { noise: { seed: '18446744073709551615', offset: '4096' } },
      data: { seed: 0, records: 10, epoch: 1, position: 3 },
      metrics: { interval_loss_sum: 0.1 + 0.2, interval_steps: 2, usage: [[1, 2, 3]] },
    },
    keep: keepCount,
  });
}

function expectCheckpointError(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof CheckpointError, `expected a CheckpointError, got ${String(error)}`);
    for (const p of patterns) assert.match(`${error.message} | ${error.hint ?? ''}`, p);
    return true;
  });
}

describe('train: checkpoints', () => {
  it('round-trips tensors and state, points latest at the newest, and keeps the last K', () => {
    const run = temporaryDir();
    for (const step of [10, 20, 30, 40]) writeSample(run, step, 2);
    assert.deepEqual(listCheckpoints(run), [30, 40]);
    assert.equal(fs.readFileSync(path.join(run, 'latest'), 'utf8'), 'checkpoints/step-40\n');
    assert.deepEqual(fs.readdirSync(path.join(run, 'checkpoints')).sort(), ['step-30', 'step-40'], 'no temporary directories left');

    const found = resolveCheckpoint(run);
    assert.equal(found.dir, path.join(path.resolve(run), 'checkpoints', 'step-40'));
    assert.equal(found.runDir, path.resolve(run));
    assert.equal(found.state.step, 40);
    assert.deepEqual(found.state.rng.noise, { seed: '18446744073709551615', offset: '4096' });
    assert.deepEqual(found.state.data, { seed: 0, records: 10, epoch: 1, position: 3 });
    assert.equal((found.state.metrics as { interval_loss_sum: number }).interval_loss_sum, 0.1 + 0.2, 'doubles exact');

    const w = tensor([0, 0, 0, 0, 0, 0], [2, 3]);
    const b = tensor([0, 0], [2]);
    loadCheckpointModel(found.dir, new Map([['a.w', w], ['a.b', b]]));
    assert.deepEqual([...w.toArray()], [1, 2, 3, 4, 5, 6]);
    assert.deepEqual([...b.toArray()], [0.5, -0.25]);
    const moments = readCheckpointOptimizer(found.dir);
    assert.deepEqual([...(moments.get('a.w.m') ?? [])], [...Float32Array.from([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])]);

    // A checkpoint directory resolves to itself, its run two levels up.
    const direct = resolveCheckpoint(path.join(run, 'checkpoints', 'step-30'));
    assert.equal(direct.state.step, 30);
    assert.equal(direct.runDir, path.resolve(run));
  });

  it('a truncated or corrupt checkpoint is a CheckpointError naming the file and what to do', () => {
    const run = temporaryDir();
    const dir = writeSample(run, 5);
    const model = path.join(dir, 'model.safetensors');
    const bytes = fs.readFileSync(model);
    fs.writeFileSync(model, bytes.subarray(0, bytes.length - 7));
    expectCheckpointError(() => resolveCheckpoint(run), /model\.safetensors has \d+ bytes, state\.json recorded \d+ \(truncated/, /earlier one/);

    // Same size, damaged header: caught when loading.
    const damaged = Buffer.from(bytes);
    damaged.fill(0x41, 8, 40);
    fs.writeFileSync(model, damaged);
    const found = resolveCheckpoint(run);
    expectCheckpointError(() => loadCheckpointModel(found.dir, new Map([['a.w', tensor([0, 0, 0, 0, 0, 0], [2, 3])]])), /cannot load .*model\.safetensors/);

    fs.writeFileSync(path.join(dir, 'state.json'), '{"format": "dalle-checkpoint", "step": ');
    expectCheckpointError(() => resolveCheckpoint(run), /state\.json is not readable JSON/);
  });

  it('a wrong model, a bad state, a bad latest and a missing run each say what is wrong', () => {
    const run = temporaryDir();
    const dir = writeSample(run, 5);
    expectCheckpointError(
      () => loadCheckpointModel(dir, new Map([['a.w', tensor([0, 0, 0, 0], [2, 2])]])),
      /'a\.w' is \(2, 3\) in the file, \(2, 2\) in the model/,
      /another model configuration/,
    );
    const stateFile = path.join(dir, 'state.json');
    const state = JSON.parse(fs.readFileSync(stateFile, 'utf8')) as Record<string, unknown>;
    fs.writeFileSync(stateFile, JSON.stringify({ ...state, step: 6, optimizer_step: -1 }));
    expectCheckpointError(() => resolveCheckpoint(run), /optimizer_step -1 is not an integer >= 0/);
    fs.writeFileSync(stateFile, JSON.stringify({ ...state, step: 6 }));
    expectCheckpointError(() => resolveCheckpoint(run), /says step 6 but its directory is step-5/);

    fs.writeFileSync(path.join(run, 'latest'), 'checkpoints/step-99\n');
    expectCheckpointError(() => resolveCheckpoint(run), /points at checkpoints\/step-99, which has no state\.json/);
    fs.writeFileSync(path.join(run, 'latest'), '../../etc\n');
    expectCheckpointError(() => resolveCheckpoint(run), /should hold 'checkpoints\/step-N'/);
    fs.rmSync(path.join(run, 'latest'));
    expectCheckpointError(() => resolveCheckpoint(run), /no 'latest' file/, /checkpoints\/step-5/);
    expectCheckpointError(() => resolveCheckpoint(path.join(run, 'nope')), /does not exist/, /train-dvae/);
  });
});

describe('train: checkpoint checksums and finite weights', () => {
  const targets = () => new Map([['a.w', tensor([0, 0, 0, 0, 0, 0], [2, 3])], ['a.b', tensor([0, 0], [2])]]);

  /** Rewrites `file` with `change` applied to its tensors, and its line of SHA256SUMS to match (same size). */
  function rewriteWithChecksum(dir: string, name: string, change: (tensors: Map<string, HostArray>) => void): void {
    const file = path.join(dir, name);
    const { tensors, metadata } = readSafetensorsSync(file);
    change(tensors);
    const size = fs.statSync(file).size;
    const digest = writeSafetensorsSync(file, tensors, metadata);
    assert.equal(fs.statSync(file).size, size);
    const sums = path.join(dir, 'SHA256SUMS');
    fs.writeFileSync(sums, fs.readFileSync(sums, 'utf8').replace(new RegExp(`^[0-9a-f]{64}(  ${name.replace('.', '\\.')})$`, 'm'), `${digest}$1`));
  }

  it('records the SHA-256 of each tensor file in SHA256SUMS (sha256sum format), hashed as it was written', () => {
    const dir = writeSample(temporaryDir(), 3);
    const lines = fs.readFileSync(path.join(dir, 'SHA256SUMS'), 'utf8').trim().split('\n');
    const digest = (name: string): string => createHash('sha256').update(fs.readFileSync(path.join(dir, name))).digest('hex');
    assert.deepEqual(lines, [`${digest('model.safetensors')}  model.safetensors`, `${digest('optimizer.safetensors')}  optimizer.safetensors`]);
  });

  it('a flipped byte inside the tensor data is refused on load, naming the file and its checksum', () => {
    const dir = writeSample(temporaryDir(), 3);
    for (const name of ['model.safetensors', 'optimizer.safetensors']) {
      const file = path.join(dir, name);
      const bytes = fs.readFileSync(file);
      const dataStart = 8 + Number(bytes.readBigUInt64LE(0));
      bytes[dataStart + 5] ^= 0x01; // one bit of the first tensor's second value
      fs.writeFileSync(file, bytes);
    }
    const modelFile = path.join(dir, 'model.safetensors');
    expectCheckpointError(
      () => loadCheckpointModel(dir, targets()),
      new RegExp(`cannot load ${modelFile.replace(/[.\\/]/g, '\\$&')}: it does not match its checksum \\(its SHA-256 is [0-9a-f]{64}, SHA256SUMS recorded [0-9a-f]{64}\\)`),
      /damaged \(a flipped bit, a bad copy\)/,
    );
    expectCheckpointError(() => readCheckpointOptimizer(dir), /optimizer\.safetensors: it does not match its checksum/);
  });

  it('NaN or infinity in a weight (checksum recomputed) is refused, naming the file, the tensor and the count', () => {
    const dir = writeSample(temporaryDir(), 3);
    rewriteWithChecksum(dir, 'model.safetensors', (tensors) => {
      const w = tensors.get('a.w')!.data as Float32Array;
      w[1] = NaN;
      w[4] = -Infinity;
    });
    expectCheckpointError(
      () => loadCheckpointModel(dir, targets()),
      /model\.safetensors: tensor 'a\.w' has 2 non-finite values \(NaN or infinite\) of 6/,
      /NaN or infinite values \(the run diverged/,
    );
    rewriteWithChecksum(dir, 'optimizer.safetensors', (tensors) => {
      (tensors.get('a.w.v')!.data as Float32Array)[0] = Infinity;
    });
    expectCheckpointError(() => readCheckpointOptimizer(dir), /optimizer\.safetensors: tensor 'a\.w\.v' has 1 non-finite value \(NaN or infinite\) of 6/);
  });

  it('a checkpoint written before SHA256SUMS still loads; a SHA256SUMS that does not list the file is refused', () => {
    const dir = writeSample(temporaryDir(), 3);
    fs.writeFileSync(path.join(dir, 'SHA256SUMS'), fs.readFileSync(path.join(dir, 'SHA256SUMS'), 'utf8').split('\n')[1] + '\n');
    expectCheckpointError(() => loadCheckpointModel(dir, targets()), /SHA256SUMS does not list model\.safetensors/);
    fs.rmSync(path.join(dir, 'SHA256SUMS'));
    const loaded = targets();
    loadCheckpointModel(dir, loaded);
    assert.deepEqual([...loaded.get('a.w')!.toArray()], [1, 2, 3, 4, 5, 6]);
    assert.equal(readCheckpointOptimizer(dir).size, 2);
  });
});

describe('train: dVAE trainer resume and stop', () => {
  let data: string;
  before(async () => {
    data = await makeImages(path.join(temporaryDir(), 'images'), 10);
  });

  it('N updates straight == N/2, then resume for N/2: identical metrics (bitwise), also after a crash past the checkpoint', async function () {
    this.timeout(30000);
    const straight = temporaryDir();
    await new DvaeTrainer({ config: tinyConfig(data), out: straight }).run();
    const reference = readMetrics(straight);
    assert.equal(reference.length, 8);
    assert.ok(reference.every((line) => Number.isFinite(line.loss)));

    const split = temporaryDir();
    const first = await new DvaeTrainer({ config: tinyConfig(data, ['train.steps=4']), out: split }).run();
    assert.equal(first.step, 4);
    // A line written after the checkpoint by a run that then died must not survive the resume.
    fs.appendFileSync(path.join(split, 'metrics.jsonl'), JSON.stringify({ step: 5, loss: 1 }) + '\n');
    const second = await new DvaeTrainer({ config: tinyConfig(data), out: split, resume: true }).run();
    assert.equal(second.resumedFrom, 4);
    assert.equal(second.step, 8);
    const resumed = readMetrics(split);
    const pick = (lines: typeof reference) => lines.map((l) => [l.step, l.loss, l.recon, l.kl, l.perplexity, l.dead_codes]);
    assert.deepEqual(pick(resumed), pick(reference));
    assert.deepEqual(listCheckpoints(split), [4, 8]);
    assert.ok(fs.existsSync(path.join(split, 'samples', 'step-8.png')));
  });

  it('train.grad_clip bounds the gradient norm (logged as grad_norm before clipping) and changes the updates', async function () {
    this.timeout(30000);
    const free = temporaryDir();
    await new DvaeTrainer({ config: tinyConfig(data, ['train.steps=3']), out: free }).run();
    const clipped = temporaryDir();
    await new DvaeTrainer({ config: tinyConfig(data, ['train.steps=3', 'train.grad_clip=1e-3']), out: clipped }).run();
    const a = readMetrics(free);
    const b = readMetrics(clipped);
    // Same first update (same data, same noise): the norms agree; afterwards the clipped run has moved less.
    assert.ok(a[0].grad_norm > 1e-3 && Number.isFinite(a[0].grad_norm));
    assert.equal(b[0].grad_norm, a[0].grad_norm);
    assert.notEqual(b[b.length - 1].loss, a[a.length - 1].loss);
  });

  it('train.recon_loss gaussian: update 1 logs the Gaussian NLL of the same squared error for any recon_sigma', async function () {
    this.timeout(30000);
    const perDim = async (sets: string[]): Promise<number> => {
      const out = temporaryDir();
      await new DvaeTrainer({ config: tinyConfig(data, ['train.steps=1', ...sets]), out }).run();
      return readMetrics(out)[0].recon_per_dim;
    };
    // Same weights, data and noise at update 1, so the same mean squared error m under both sigmas:
    // recon_per_dim = m / (2 sigma^2) + ln(sigma sqrt(2 pi)).
    const squaredError = (r: number, sigma: number): number => (r - Math.log(sigma * Math.sqrt(2 * Math.PI))) * 2 * sigma * sigma;
    const narrow = squaredError(await perDim(['train.recon_loss=gaussian', 'train.recon_sigma=0.05']), 0.05);
    const wide = squaredError(await perDim(['train.recon_loss=gaussian', 'train.recon_sigma=0.2']), 0.2);
    assert.ok(narrow > 1e-4 && narrow < 1, `mean squared error ${narrow}`);
    assert.ok(Math.abs(narrow - wide) <= 1e-4 * narrow, `${narrow} vs ${wide}`);
    const laplace = await perDim([]);
    assert.ok(Math.abs(squaredError(laplace, 0.05) - narrow) > 1e-2 * narrow, 'the default stays logit-Laplace');
  });

  it('stop() finishes the update, writes a checkpoint and returns; resuming continues exactly', async function () {
    this.timeout(30000);
    const reference = temporaryDir();
    await new DvaeTrainer({ config: tinyConfig(data, ['train.checkpoint_every=100']), out: reference }).run();

    const run = temporaryDir();
    const events: CoreEvent[] = [];
    const trainer = new DvaeTrainer({
      config: tinyConfig(data, ['train.checkpoint_every=100']),
      out: run,
      events: {
        emit: (event) => {
          events.push(event);
          if (event.type === 'metrics' && event.step === 3) trainer.stop(); // as the SIGINT handler does
        },
      },
    });
    const result = await trainer.run();
    assert.equal(result.stopped, true);
    assert.equal(result.step, 3);
    assert.deepEqual(listCheckpoints(run), [3]);
    assert.ok(events.some((e) => e.type === 'artifact' && e.kind === 'checkpoint' && e.path.endsWith('step-3')));
    const progress = events.filter((e) => e.type === 'progress');
    assert.ok(progress.length > 0 && progress.every((e) => e.type === 'progress' && e.total === 8 && e.metrics?.loss !== undefined && e.metrics?.tau !== undefined));

    await new DvaeTrainer({ config: tinyConfig(data, ['train.checkpoint_every=100']), out: run, resume: true }).run();
    assert.deepEqual(readMetrics(run).map((l) => l.loss), readMetrics(reference).map((l) => l.loss));
  });

  it('refuses to start over a run that has checkpoints, and to resume past train.steps', async () => {
    const run = temporaryDir();
    await new DvaeTrainer({ config: tinyConfig(data, ['train.steps=2']), out: run }).run();
    await assert.rejects(new DvaeTrainer({ config: tinyConfig(data), out: run }).run(), /already has checkpoints.*|CheckpointError/);
    await assert.rejects(
      new DvaeTrainer({ config: tinyConfig(data, ['train.steps=1']), out: run, resume: true }).run(),
      (error: unknown) => error instanceof CheckpointError && /past train\.steps = 1/.test(error.message),
    );
  });
});
