// Activation recomputation (train.recompute, tensor/checkpoint.ts): the prior's loss and every parameter gradient
// equal those without it (fp32, and fp16 with its per-resblock gradient scales inside the recomputed blocks), no
// storage is left behind, the allocator's peak is lower, checkpointed() on its own matches the direct call (input
// gradients too), and `dalle train-prior --set train.recompute=true` trains.
// Key: B = batch, L = text_len, N = image positions, C = d_model.
import * as assert from 'node:assert';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import { Prior, PriorArch, padText } from '../../src/core/models/prior';
import { native } from '../../src/core/native';
import { add, gelu, matmul, scale } from '../../src/core/ops';
import { HalfPrecision, priorResblocks } from '../../src/core/train/precision';
import { Philox, Tensor, backward, checkpointed, liveStorage, noGrad, randNormal, tidy, zeroGrad } from '../../src/core/tensor';
import { temporaryDir } from '../commands/helpers';
import { makeCaptionedData, makeTinyDvae, readJsonLines, writeTinyPriorConfig } from '../train/prior-helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');

/** Odd sizes: 5 layers (row, column, row, row, conv), 3 heads of 5, L 5, G 3, Vt 7, Vi 11, kernel 3. */
const TINY: PriorArch = {
  n_layers: 5, n_heads: 3, head_dim: 5, text_len: 5, text_vocab: 7, image_grid: 3, image_vocab: 11, conv_kernel: 3,
};

function tokens(m: Prior, B: number, seed: number): { text: Tensor; image: Tensor } {
  const rng = new Philox(seed);
  const ids = Array.from({ length: B }, (_, b) => [...rng.randint(b % (m.textLen + 1), m.textVocab)]);
  return {
    text: Tensor.from(padText(ids, m.textLen, m.textVocab), [B, m.textLen], 'i32'),
    image: Tensor.from(rng.randint(B * m.imageLen, m.imageVocab), [B, m.imageLen], 'i32'),
  };
}

/** Loss and every parameter's gradient after one backward, with recomputation on or off. */
function lossAndGrads(m: Prior, recompute: boolean, seed: number, B = 3): { loss: number; grads: Map<string, Float32Array> } {
  m.recompute = recompute;
  zeroGrad(m.parameters());
  const loss = tidy(() => {
    const { text, image } = tokens(m, B, seed);
    const r = m.loss(text, image);
    backward(r.loss);
    return r.loss.item();
  });
  const grads = new Map<string, Float32Array>();
  for (const [name, p] of m.namedParameters()) {
    assert.ok(p.grad, `${name} got no gradient (recompute ${recompute})`);
    grads.set(name, p.grad.toArray() as Float32Array);
  }
  return { loss, grads };
}

function assertSameGrads(a: Map<string, Float32Array>, b: Map<string, Float32Array>, tol: number): void {
  assert.deepStrictEqual([...a.keys()], [...b.keys()]);
  let nonzero = 0;
  for (const [name, ga] of a) {
    const gb = b.get(name)!;
    for (let i = 0; i < ga.length; i++) {
      if (ga[i] !== 0) nonzero++;
      const d = Math.abs(ga[i] - gb[i]);
      assert.ok(d <= tol * (1 + Math.abs(ga[i])), `${name}[${i}]: ${ga[i]} without recompute, ${gb[i]} with (|diff| ${d})`);
    }
  }
  assert.ok(nonzero > 0, 'every gradient is zero: the comparison would be blind');
}

describe('prior activation recomputation (train.recompute)', () => {
  it('fp32: the same loss and parameter gradients as without, and no storage left behind', () => {
    const m = new Prior(TINY, new Philox(1));
    const off = lossAndGrads(m, false, 5);
    const before = liveStorage().count;
    const on = lossAndGrads(m, true, 5);
    const after = liveStorage().count;
    assert.strictEqual(on.loss, off.loss);
    assertSameGrads(off.grads, on.grads, 1e-6);
    assert.strictEqual(after, before, 'recomputation left storages alive');
    // A second backward accumulates, as without recomputation: gradient = 2 x one step's.
    m.recompute = true;
    tidy(() => {
      const { text, image } = tokens(m, 3, 5);
      backward(m.loss(text, image).loss);
    });
    const [name, p] = m.namedParameters()[0];
    const twice = p.grad!.toArray();
    const once = on.grads.get(name)!;
    for (let i = 0; i < once.length; i++) assert.ok(Math.abs(twice[i] - 2 * once[i]) <= 1e-6 * (1 + Math.abs(once[i])));
    m.dispose();
  });

  it('fp16: the per-resblock gradient scales still apply inside recomputed blocks (same gradients, same flags)', () => {
    const m = new Prior(TINY, new Philox(2));
    const precision = new HalfPrecision('fp16');
    precision.attach(priorResblocks(m));
    m.residual = precision;
    const off = lossAndGrads(m, false, 6);
    const on = lossAndGrads(m, true, 6);
    assert.strictEqual(on.loss, off.loss);
    // The gradients come out multiplied by each resblock's scale (2^13): equal before unscaling.
    assertSameGrads(off.grads, on.grads, 1e-6);
    assert.deepStrictEqual(precision.scaler.flagged(), []);
    precision.detach();
    m.dispose();
  });

  it('lowers the allocator peak of a training step on a deeper prior', () => {
    const arch: PriorArch = { ...TINY, n_layers: 8, n_heads: 4, head_dim: 8, text_len: 8, image_grid: 6 };
    const m = new Prior(arch, new Philox(3));
    const peak = (recompute: boolean): number => {
      lossAndGrads(m, recompute, 7, 4); // first: gradient buffers exist before the measured step
      native.resetPeak();
      // the step's own peak: above what is in use when it starts (what earlier tests in this process left allocated,
      // such as kernels' per-thread buffers, would otherwise count towards both peaks and blur their ratio)
      const before = native.allocStats().bytesInUse;
      lossAndGrads(m, recompute, 7, 4);
      return native.allocStats().peakBytesInUse - before;
    };
    const off = peak(false);
    const on = peak(true);
    console.log(`      peak bytes of a step: ${off} without recomputation, ${on} with`);
    assert.ok(on < 0.8 * off, `recomputation peak ${on} is not below 0.8 x ${off}`);
    m.dispose();
  });

  it('checkpointed(fn, inputs) gives fn\'s value and input gradients; under noGrad it records nothing', () => {
    tidy(() => {
      const rng = new Philox(9);
      const w = randNormal(rng, [7, 7], 0, 1);
      w.requiresGrad = true;
      const x0 = randNormal(rng, [3, 7], 0, 1);
      x0.requiresGrad = true;
      const y0 = randNormal(rng, [3, 7], 0, 1);
      y0.requiresGrad = true;
      const fn = (x: Tensor, y: Tensor): Tensor => add(x, scale(gelu(matmul(add(x, y), w)), 0.5)); // (3, 7)
      const direct = fn(x0, y0);
      const gOut = randNormal(rng, [3, 7], 0, 1);
      backward(direct, gOut);
      const want = [x0, y0, w].map((t) => t.grad!.toArray());
      for (const t of [x0, y0, w]) zeroGrad([t]);
      const viaCheckpoint = checkpointed(fn, [x0, y0]);
      assert.deepStrictEqual(viaCheckpoint.toArray(), direct.toArray());
      assert.strictEqual(viaCheckpoint.gradFn?.op, 'checkpoint');
      backward(viaCheckpoint, gOut);
      [x0, y0, w].forEach((t, i) => {
        const got = t.grad!.toArray();
        for (let j = 0; j < got.length; j++) assert.ok(Math.abs(got[j] - want[i][j]) <= 1e-6, `input ${i}[${j}]`);
      });
      const plain = noGrad(() => checkpointed(fn, [x0, y0]));
      assert.strictEqual(plain.gradFn, null);
    });
  });

  it('dalle train-prior --set train.recompute=true trains and records it in the run config', async function () {
    this.timeout(180000);
    const work = temporaryDir('dalle-prior-recompute-');
    const data = await makeCaptionedData(path.join(work, 'data'));
    const dvae = await makeTinyDvae(work, data);
    const config = writeTinyPriorConfig(work);
    const out = path.join(work, 'run');
    const { error, stdout } = await runCommand(
      ['train-prior', '--config', config, '--data', data, '--dvae', dvae, '--out', out, '--set', 'train.recompute=true', '--set', 'train.steps=4'],
      { root: ROOT },
    );
    process.exitCode = undefined;
    assert.strictEqual(error, undefined, error?.message);
    assert.match(stdout, /trained 4 updates/);
    const lines = readJsonLines(path.join(out, 'metrics.jsonl')).filter((l) => 'loss' in l && Number.isFinite(l.loss));
    assert.ok(lines.length >= 4, `metrics.jsonl has ${lines.length} loss lines`);
    const fs = await import('node:fs');
    assert.match(fs.readFileSync(path.join(out, 'config.yaml'), 'utf8'), /recompute: true/);
  });
});
