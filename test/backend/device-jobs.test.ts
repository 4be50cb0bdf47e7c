// The jobs on a device, without a GPU: the core job functions (not the CLI: the stand-in device exists only in this
// process) run once on the CPU and once on the stand-in 'cuda:0' of test/harness/fake-device.ts (host memory, the
// CPU's kernels, every host <-> device copy counted). These tests prove PLACEMENT and TRANSFER BOUNDARIES: every model,
// batch and optimizer state is on the device (an op with an input left on the host is a DeviceMismatchError), the
// results and files are those of the CPU bit for bit, and the copies per step are a constant. They do not prove the
// CUDA kernels: those are checked on a GPU by bench/cuda-check.sh, the op harness (test/ops.test.ts) and test/cuda/.
import * as assert from 'node:assert';
import fs from 'node:fs';
import path from 'node:path';
import { DeviceUnavailableError, applyRuntime, jobKernels } from '../../src/core/runtime';
import { ComputeJob } from '../../src/core/job-ops';
import { decodeTokenGrids, encodeImages } from '../../src/core/image/dvae-codec';
import { loadDvae } from '../../src/core/models/dvae/load';
import { loadPrior } from '../../src/core/models/prior/load';
import { runGeneration } from '../../src/core/sample/generate';
import { DvaeTrainer } from '../../src/core/train/dvae-trainer';
import { PriorTrainer } from '../../src/core/train/prior-trainer';
import { liveStorage } from '../../src/core/tensor';
import { FakeDevice, installFakeDevice } from '../harness/fake-device';
import { makeImages, readMetrics, temporaryDir, tinyConfig } from '../commands/helpers';
import { makeCaptionedData, readJsonLines, tinyPriorConfig } from '../train/prior-helpers';

type Device = 'cpu' | 'cuda:0';

/** Runs fn with the stand-in registered as cuda:0 (and its counters), then removes it. */
async function onFakeDevice<T>(fn: (fake: FakeDevice) => Promise<T>): Promise<T> {
  const fake = installFakeDevice();
  try {
    return await fn(fake);
  } finally {
    fake.remove();
  }
}

/** Every kernel a job looked up on the device is one its op list (job-ops.ts) lets applyRuntime check for. */
function assertKernelsListed(used: ReadonlySet<string>, ...jobs: ComputeJob[]): void {
  const listed = new Set(jobs.flatMap((job) => [...jobKernels(job)]));
  const unlisted = [...used].filter((k) => !listed.has(k));
  assert.deepStrictEqual(unlisted, [], `${jobs.join('/')} called kernels none of its listed ops declares: add the ops to JOB_OPS`);
}

/** The files of the newest checkpoint of a run, by name -> bytes. */
function checkpointFiles(runDir: string): Record<string, Buffer> {
  const latest = fs.readFileSync(path.join(runDir, 'latest'), 'utf8').trim();
  const dir = path.join(runDir, latest);
  return Object.fromEntries(['model.safetensors', 'optimizer.safetensors'].map((f) => [f, fs.readFileSync(path.join(dir, f))]));
}

/** Metrics lines without the wall-clock fields (throughput differs from run to run on any device). */
function withoutTimings(lines: Array<Record<string, unknown>>): Array<Record<string, unknown>> {
  const timing = new Set(['images_per_s', 'examples_per_s', 'ms_per_update']);
  return lines.map((l) => Object.fromEntries(Object.entries(l).filter(([k]) => !timing.has(k))));
}

describe('jobs on a device (stand-in cuda:0: placement and transfer boundaries, not CUDA kernels)', function () {
  this.timeout(120000);
  let images: string;
  let captioned: string;
  let dvaeRun: string;
  let priorRun: string;

  before(async () => {
    images = await makeImages(temporaryDir('dalle-dev-img-'), 8);
    captioned = await makeCaptionedData(temporaryDir('dalle-dev-cap-'));
  });

  it('train-dvae on cuda:0: the same losses and byte-identical checkpoint files as on the CPU; its ops all declared', async () => {
    const train = async (device: Device, extra: string[] = []): Promise<string> => {
      const out = temporaryDir('dalle-dev-dvae-');
      await new DvaeTrainer({ config: tinyConfig(images, ['train.steps=3', 'train.log_every=1', `runtime.device=${device}`, ...extra]), out }).run();
      return out;
    };
    const cpu = await train('cpu');
    const { device, kernels, undeclared } = await onFakeDevice(async (fake) => ({ device: await train('cuda:0'), kernels: fake.kernelsUsed, undeclared: fake.undeclared }));
    assert.deepStrictEqual(withoutTimings(readMetrics(device) as never), withoutTimings(readMetrics(cpu) as never));
    assert.deepStrictEqual(checkpointFiles(device), checkpointFiles(cpu));
    assert.deepStrictEqual(undeclared, []);
    assert.ok(kernels.has('conv2dForward') && kernels.has('adamw'), 'the model and its optimizer ran on the device');
    assertKernelsListed(kernels, 'train-dvae');
    dvaeRun = cpu;
  });

  it('train-dvae on cuda:0: each update copies the batch in and one readout out (+ the codes at a log step), whatever the model size', async () => {
    // Copies of a run of n updates, minus those of a run of 2n: what the n extra updates cost (the model's upload and
    // the final checkpoint's download are in both and cancel).
    const perUpdate = async (sets: string[]): Promise<{ in: number; out: number }> =>
      onFakeDevice(async (fake) => {
        const count = async (steps: number) => {
          fake.copies.in = 0;
          fake.copies.out = 0;
          const out = temporaryDir('dalle-dev-count-');
          await new DvaeTrainer({
            config: tinyConfig(images, [`train.steps=${steps}`, 'train.log_every=1', 'train.sample_every=1000', 'train.checkpoint_every=1000', 'runtime.device=cuda:0', ...sets]),
            out,
          }).run();
          return { ...fake.copies };
        };
        const two = await count(2);
        const four = await count(4);
        return { in: (four.in - two.in) / 2, out: (four.out - two.out) / 2 };
      });
    const expected = { in: 1, out: 2 }; // the batch; the step's scalars (one copy) and the log step's codes
    assert.deepStrictEqual(await perUpdate([]), expected);
    assert.deepStrictEqual(await perUpdate(['model.n_hid=16', 'model.n_blk_per_group=2']), expected, 'the same with a bigger model');
  });

  it('train-prior on cuda:0: the same losses and byte-identical checkpoint files; two tokens tensors in, one readout out per update', async () => {
    const data = path.join(captioned, 'train');
    const dvae = path.join(temporaryDir('dalle-dev-pd-'), 'dvae');
    await new DvaeTrainer({ config: tinyConfig(data, ['train.steps=2']), out: dvae }).run();
    const train = async (device: Device, steps = 4, sets: string[] = []): Promise<string> => {
      const out = temporaryDir('dalle-dev-prior-');
      await new PriorTrainer({ config: tinyPriorConfig(captioned, dvae, [`train.steps=${steps}`, `runtime.device=${device}`, ...sets]), out }).run();
      return out;
    };
    const cpu = await train('cpu'); // also builds the token cache, so the device runs below read it
    const { device, kernels } = await onFakeDevice(async (fake) => ({ device: await train('cuda:0'), kernels: fake.kernelsUsed }));
    assert.deepStrictEqual(withoutTimings(readJsonLines(path.join(device, 'metrics.jsonl'))), withoutTimings(readJsonLines(path.join(cpu, 'metrics.jsonl'))));
    assert.deepStrictEqual(checkpointFiles(device), checkpointFiles(cpu));
    assert.ok(kernels.has('sparseAttentionForward') || kernels.has('attentionForward'), 'the prior ran on the device');
    assertKernelsListed(kernels, 'train-prior');

    const quiet = ['train.val_every=1000', 'train.checkpoint_every=1000', 'train.log_every=1'];
    const perUpdate = await onFakeDevice(async (fake) => {
      const count = async (steps: number) => {
        fake.copies.in = 0;
        fake.copies.out = 0;
        await train('cuda:0', steps, quiet);
        return { ...fake.copies };
      };
      const two = await count(2);
      const four = await count(4);
      return { in: (four.in - two.in) / 2, out: (four.out - two.out) / 2 };
    });
    assert.deepStrictEqual(perUpdate, { in: 2, out: 1 });
    priorRun = cpu;
    dvaeRun = dvae;
  });

  it('generate on cuda:0: the same tokens, log-likelihoods and PNGs as on the CPU; its ops all declared', async () => {
    assert.ok(priorRun && dvaeRun, 'needs the runs of the train-prior test');
    const generate = async (device: Device): Promise<{ out: string; records: Array<Record<string, unknown>> }> => {
      const prior = loadPrior(priorRun, device);
      const dvae = loadDvae(dvaeRun, device);
      const out = path.join(temporaryDir('dalle-dev-gen-'), 'out');
      try {
        await runGeneration({
          prior: prior.model,
          encodeText: (caption) => prior.tokenizer.encode(caption),
          dvae,
          captions: ['red box', 'small blue square'],
          samples: 2,
          batch: 3,
          sampling: { temperature: 1, topK: 0, topP: 0.9 },
          condScale: 2,
          seed: 5,
          out,
          priorId: 'prior',
          dvaeId: 'dvae',
        });
      } finally {
        prior.model.dispose();
        dvae.model.dispose();
      }
      return { out, records: readJsonLines(path.join(out, 'results.jsonl')) };
    };
    const cpu = await generate('cpu');
    const { device, kernels } = await onFakeDevice(async (fake) => ({ device: await generate('cuda:0'), kernels: fake.kernelsUsed }));
    assert.deepStrictEqual(device.records, cpu.records);
    for (const r of cpu.records) {
      const file = String(r.file);
      assert.ok(fs.readFileSync(path.join(device.out, file)).equals(fs.readFileSync(path.join(cpu.out, file))), file);
    }
    assertKernelsListed(kernels, 'generate');
  });

  it('encode and decode on cuda:0: the same codes and pixels as on the CPU', async () => {
    assert.ok(dvaeRun, 'needs the dVAE of the train-dvae test');
    const roundTrip = async (device: Device) => {
      const dvae = loadDvae(dvaeRun, device);
      try {
        const encoded = await encodeImages(dvae, [images], { batchSize: 3 });
        const pixels: Float32Array[] = [];
        await decodeTokenGrids(dvae, { tokens: encoded.tokens, shape: encoded.shape }, (_start, batch) => {
          pixels.push(Float32Array.from(batch));
        }, { batchSize: 3 });
        return { tokens: encoded.tokens, pixels };
      } finally {
        dvae.model.dispose();
      }
    };
    const cpu = await roundTrip('cpu');
    const { device, kernels } = await onFakeDevice(async (fake) => ({ device: await roundTrip('cuda:0'), kernels: fake.kernelsUsed }));
    assert.deepStrictEqual(device.tokens, cpu.tokens);
    assert.deepStrictEqual(device.pixels, cpu.pixels);
    assertKernelsListed(kernels, 'encode', 'decode');
  });

  it('applyRuntime runs a job on a device that has every kernel it needs, and refuses one that lacks some, listing them', () => {
    const before = liveStorage().count;
    // A device without the block-sparse attention kernels: train-dvae and encode run, train-prior is refused naming it.
    const attentionKernels = ['sparseAttentionForward', 'sparseAttentionBackward'];
    const full = installFakeDevice();
    const allKernels = Object.keys(full.backend.kernels).filter((k) => typeof (full.backend.kernels as Record<string, unknown>)[k] === 'function');
    full.remove();
    const fake = installFakeDevice(allKernels.filter((k) => !attentionKernels.includes(k)));
    try {
      assert.strictEqual(applyRuntime({ threads: 1, device: 'cuda' }, 'train-dvae').device, 'cuda:0');
      assert.strictEqual(applyRuntime({ threads: 1, device: 'cuda:0' }, 'encode').device, 'cuda:0');
      assert.throws(() => applyRuntime({ threads: 1, device: 'cuda:0' }, 'train-prior'), (e: Error) =>
        e instanceof DeviceUnavailableError && /runtime\.device is cuda:0/.test(e.message) &&
        /sparseAttention \(sparseAttentionForward, sparseAttentionBackward\)/.test(e.message) && !/conv2d/.test(e.message) && /--device cpu/.test(e.message));
    } finally {
      fake.remove();
    }
    // No such GPU here (the stand-in is cuda:0 only): refused with the reason.
    assert.throws(() => applyRuntime({ threads: 1, device: 'cuda:7' }, 'encode'), (e: Error) => e instanceof DeviceUnavailableError && /cuda:7/.test(e.message) && /--device cpu/.test(e.message));
    assert.strictEqual(applyRuntime({ threads: 1, device: 'cpu' }, 'train-dvae').device, 'cpu');
    assert.strictEqual(liveStorage().count, before);
  });
});
