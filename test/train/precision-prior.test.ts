/**
 * The prior trained in fp16 (emulated exactly on the CPU, per-resblock gradient scales) against fp32: the same batches
 * (same seeds), loss curves that agree within a stated tolerance; grad_scales in metrics.jsonl; an exact resume of
 * the scales; and `dalle train-prior --precision fp16` as a user runs it.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import { Prior, plainResidual } from '../../src/core/models/prior';
import { Philox, Tensor, randNormal, roundTo, tidy } from '../../src/core/tensor';
import { HalfPrecision, priorResblocks } from '../../src/core/train/precision';
import { readCheckpointOptimizer } from '../../src/core/checkpoint';
import { PriorTrainer } from '../../src/core/train/prior-trainer';
import { temporaryDir } from '../commands/helpers';
import { makeCaptionedData, makeTinyDvae, readJsonLines, tinyPriorConfig, writeTinyPriorConfig } from './prior-helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const GROWTH = 2 ** (1 / 1000);

interface Line {
  step: number;
  loss?: number;
  grad_scales?: number[];
  skipped?: number;
}

/** Every train line's scales follow the rules: init at the first, then x growth after a clean update (bit-exact). */
function checkScaleLines(lines: Line[], resblocks: number): void {
  const train = lines.filter((l) => l.loss !== undefined);
  assert.ok(train.length > 0);
  assert.deepEqual(train[0].grad_scales, new Array(resblocks).fill(8192));
  for (let i = 1; i < train.length; i++) {
    const prev = train[i - 1];
    const cur = train[i];
    assert.equal(cur.step, prev.step + 1, 'one line per update (log_every 1)');
    if (cur.skipped === prev.skipped) {
      cur.grad_scales!.forEach((s, r) => assert.ok(Object.is(s, Math.min(2 ** 24, prev.grad_scales![r] * GROWTH)), `step ${cur.step} resblock ${r}: ${s}`));
    }
  }
}

describe('precision: the prior in fp16', function () {
  this.timeout(600000);
  let work: string;
  let data: string;
  let dvae: string;

  before(async () => {
    work = temporaryDir('dalle-prior-fp16-');
    data = await makeCaptionedData(path.join(work, 'data'));
    dvae = await makeTinyDvae(work, data);
  });

  it('tracks the fp32 loss curve (same batches) within fp16 unit roundoff (2^-11) per update, and writes grad_scales that grow per clean update', async () => {
    const steps = 40;
    const sets = [`train.steps=${steps}`, 'train.lr=1e-2', 'train.warmup_steps=4', 'train.val_every=1000', 'train.checkpoint_every=1000'];
    const losses: Record<string, Line[]> = {};
    for (const precision of ['fp32', 'fp16', 'bf16']) {
      const out = path.join(work, `curve-${precision}`);
      await new PriorTrainer({ config: tinyPriorConfig(data, dvae, [...sets, `runtime.precision=${precision}`]), out }).run();
      losses[precision] = readJsonLines<Line>(path.join(out, 'metrics.jsonl')).filter((l) => l.loss !== undefined);
    }
    const a = losses.fp32.map((l) => l.loss!);
    const b = losses.fp16.map((l) => l.loss!);
    assert.equal(a.length, steps);
    assert.equal(b.length, steps);
    const rel = a.map((v, i) => Math.abs(b[i] - v) / v);
    const maxRel = Math.max(...rel);
    const drop = (a[0] - a[steps - 1]) / a[0];
    console.log(`      fp32 loss ${a[0].toFixed(4)} -> ${a[steps - 1].toFixed(4)} (drop ${(100 * drop).toFixed(1)}%); fp16 ${b[0].toFixed(4)} -> ${b[steps - 1].toFixed(4)}; ` +
      `|fp16 - fp32| / fp32: first ${rel[0].toExponential(2)}, max ${maxRel.toExponential(2)}, last ${rel[steps - 1].toExponential(2)}`);
    // The tolerance: fp16's unit roundoff, 2^-11 = 4.9e-4 of the loss, at every update: fp16 training may change the
    // loss by no more than one fp16 rounding of the loss itself. Rounding each value the resblocks hold perturbs the
    // residual stream by ~2^-11 of the branch outputs, which are small next to the fp32 embeddings, so the measured
    // difference is far below it (3e-5 to 5e-5 with the bf16 Adam moments). One skipped or wrong update moves this run's loss by ~2% (it falls
    // 57% in 40 updates), 40x the tolerance: a broken fp16 path fails.
    const tol = 2 ** -11;
    assert.ok(maxRel < tol, `fp16 and fp32 losses differ by up to ${maxRel.toExponential(2)} > ${tol.toExponential(2)}`);
    assert.ok(drop > 40 * tol, `the loss falls by ${(100 * drop).toFixed(1)}% over the run`);
    assert.ok(maxRel > 0, 'fp16 really rounds (the curves differ)');
    assert.equal(losses.fp32[0].grad_scales, undefined, 'fp32 writes no scales');
    // bf16 (8 bits of mantissa, no scaling): within its unit roundoff 2^-8 by the same argument.
    const c = losses.bf16.map((l) => l.loss!);
    const maxRelBf16 = Math.max(...a.map((v, i) => Math.abs(c[i] - v) / v));
    console.log(`      bf16: max |bf16 - fp32| / fp32 ${maxRelBf16.toExponential(2)}`);
    assert.ok(maxRelBf16 > 0 && maxRelBf16 < 2 ** -8, `bf16 differs by ${maxRelBf16}`);
    assert.equal(losses.bf16[0].grad_scales, undefined, 'bf16 needs no scales');
    checkScaleLines(losses.fp16, 4);
    assert.equal(losses.fp16[steps - 1].skipped, 0, 'the tiny prior never overflows at these scales');
  });

  it('rounds what the GPU holds in fp16: the linear layers of each resblock give fp16 values; embeddings stay fp32', () => {
    const model = new Prior(tinyPriorConfig(data, dvae).model, new Philox(3));
    const precision = new HalfPrecision('fp16');
    precision.attach(priorResblocks(model));
    model.residual = precision;
    assert.equal(precision.resblocks, 4);
    const isF16 = (v: number) => roundTo('f16', v) === v;
    tidy(() => {
      const x = randNormal(new Philox(4), [2, 5, model.dModel], 0, 1);
      for (const lin of [model.blocks[0].attn.q, model.blocks[1].attn.proj, model.blocks[1].mlp.fc, model.blocks[0].mlp.proj]) {
        assert.ok(lin.forward(x.shape[2] === lin.inFeatures ? x : randNormal(new Philox(5), [2, 5, lin.inFeatures], 0, 1)).toArray().every(isF16));
      }
      assert.ok(!model.imageHead.forward(x).toArray().every(isF16), 'the unembedding is fp32');
      const text = Tensor.from(new Int32Array(2 * model.textLen).fill(1), [2, model.textLen], 'i32');
      const image = Tensor.from(new Int32Array(2 * 3).fill(2), [2, 3], 'i32');
      const withFp16 = model.loss(text, image).loss.item();
      precision.detach();
      model.residual = plainResidual;
      assert.ok(model.blocks[0].attn.q.forward(x).toArray().some((v) => !isF16(v)), 'detach restores fp32');
      assert.notEqual(model.loss(text, image).loss.item(), withFp16);
    });
    model.dispose();
  });

  it('resumes exactly: the scales (and losses) of an interrupted + resumed fp16 run equal an uninterrupted one', async () => {
    const sets = ['runtime.precision=fp16', 'train.val_every=1000'];
    const full = path.join(work, 'resume-full');
    await new PriorTrainer({ config: tinyPriorConfig(data, dvae, [...sets, 'train.steps=6']), out: full }).run();
    const part = path.join(work, 'resume-part');
    await new PriorTrainer({ config: tinyPriorConfig(data, dvae, [...sets, 'train.steps=3']), out: part }).run();
    await new PriorTrainer({ config: tinyPriorConfig(data, dvae, [...sets, 'train.steps=6']), out: part, resume: true }).run();
    const strip = (l: Line & Record<string, unknown>) => ({ step: l.step, loss: l.loss, grad_scales: l.grad_scales, skipped: l.skipped });
    const want = readJsonLines<Line & Record<string, unknown>>(path.join(full, 'metrics.jsonl')).filter((l) => l.loss !== undefined).map(strip);
    const got = readJsonLines<Line & Record<string, unknown>>(path.join(part, 'metrics.jsonl')).filter((l) => l.loss !== undefined).map(strip);
    assert.deepEqual(got, want);
    const state = JSON.parse(fs.readFileSync(path.join(part, 'checkpoints', 'step-6', 'state.json'), 'utf8'));
    assert.equal(state.metrics.precision.kind, 'fp16');
    assert.equal(state.metrics.precision.grad_scaler.scales.length, 4);
    // Adam moments: bf16 values for the resblocks' weight matrices, fp32 for the rest.
    const moments = readCheckpointOptimizer(path.join(part, 'checkpoints', 'step-6'));
    const isBf16 = (a: Float32Array) => a.every((v) => roundTo('bf16', v) === v);
    for (const name of ['blocks.0.attn.q.weight', 'blocks.1.mlp.proj.weight']) {
      assert.ok(isBf16(moments.get(`${name}.m`)!) && isBf16(moments.get(`${name}.v`)!), name);
    }
    for (const name of ['image_head.weight', 'blocks.0.ln_1.weight', 'text_embedding.weight']) assert.ok(!isBf16(moments.get(`${name}.v`)!), name);
    assert.ok(Object.is(state.metrics.precision.grad_scaler.scales[0], want[5].grad_scales![0] * GROWTH), 'state.json has the scales after update 6');
  });

  it('`dalle train-prior ... --precision fp16` trains on the CPU (emulated) and writes grad_scales from 8192, x 2^(1/1000) per clean update', async () => {
    const config = writeTinyPriorConfig(work);
    const run = path.join(work, 'runs', 'fp16');
    const { error, stdout } = await runCommand(['train-prior', '--config', config, '--data', data, '--dvae', dvae, '--out', run, '--precision', 'fp16'], { root: ROOT });
    assert.equal(error, undefined, error?.message);
    assert.match(stdout, /trained 6 updates/);
    assert.match(fs.readFileSync(path.join(run, 'config.yaml'), 'utf8'), /precision: fp16/);
    const lines = readJsonLines<Line>(path.join(run, 'metrics.jsonl'));
    checkScaleLines(lines, 4);
    const train = lines.filter((l) => l.loss !== undefined);
    assert.equal(train.length, 6);
    assert.equal(train[5].skipped, 0);
    let s = 8192;
    for (let k = 0; k < 5; k++) s *= GROWTH; // update 6 ran with the scales after 5 clean updates
    assert.deepEqual(train[5].grad_scales, [s, s, s, s]);
  });
});
