// AdamW against a float64 transcription of the update rule, decay groups, 16-bit master weights, clipping, schedules.
import * as assert from 'node:assert';
import { native } from '../../src/core/native';
import { Tensor, keep, sumSquares } from '../../src/core/tensor';
import { installFakeDevice } from '../harness/fake-device';
import { AdamW } from '../../src/core/train/adamw';
import { clipGradNorm, gradNorm } from '../../src/core/train/clip';
import { cosine, linear, warmupCosine } from '../../src/core/train/schedule';
import { makeRandom } from '../harness/random';

function param(values: number[], dtype: 'f32' | 'bf16' = 'f32'): Tensor {
  const t = keep(Tensor.from(values, [values.length], dtype));
  t.requiresGrad = true;
  return t;
}

function setGrad(p: Tensor, values: number[]): void {
  if (!p.grad) p.grad = keep(Tensor.zeros(p.shape));
  native.copyIn(p.grad.address, Float32Array.from(values));
}

describe('AdamW', () => {
  it('matches the float64 update rule over 20 steps, with and without decay', () => {
    const rand = makeRandom(7);
    const n = 37;
    const init = Array.from({ length: n }, () => rand.normal());
    const decayed = param(init);
    const plain = param(init);
    const opts = { lr: 1e-2, beta1: 0.9, beta2: 0.96, eps: 1e-8, weightDecay: 4.5e-2 };
    const opt = new AdamW([
      { params: [{ name: 'w', tensor: decayed }] },
      { params: [{ name: 'b', tensor: plain }], weightDecay: 0 },
    ], opts);
    const ref = { w: Float64Array.from(init), b: Float64Array.from(init) };
    const m = { w: new Float64Array(n), b: new Float64Array(n) };
    const v = { w: new Float64Array(n), b: new Float64Array(n) };
    for (let t = 1; t <= 20; t++) {
      const g = Array.from({ length: n }, () => rand.normal());
      setGrad(decayed, g);
      setGrad(plain, g);
      opt.update(opts.lr, 0.5);
      for (const key of ['w', 'b'] as const) {
        const wd = key === 'w' ? opts.weightDecay : 0;
        for (let i = 0; i < n; i++) {
          const gi = g[i] * 0.5;
          m[key][i] = opts.beta1 * m[key][i] + (1 - opts.beta1) * gi;
          v[key][i] = opts.beta2 * v[key][i] + (1 - opts.beta2) * gi * gi;
          const mhat = m[key][i] / (1 - opts.beta1 ** t);
          const vhat = v[key][i] / (1 - opts.beta2 ** t);
          ref[key][i] -= opts.lr * (mhat / (Math.sqrt(vhat) + opts.eps) + wd * ref[key][i]);
        }
      }
    }
    const got = { w: decayed.toArray(), b: plain.toArray() };
    for (const key of ['w', 'b'] as const) {
      for (let i = 0; i < n; i++) assert.ok(Math.abs(got[key][i] - ref[key][i]) < 2e-5, `${key}[${i}]: ${got[key][i]} vs ${ref[key][i]}`);
    }
    assert.notDeepStrictEqual([...got.w], [...got.b], 'weight decay must change the decayed group only');
    opt.dispose();
    decayed.dispose();
    plain.dispose();
  });

  it('keeps fp32 master weights for a bf16 parameter, so small updates are not lost', () => {
    const p = param([1, 1, 1, 1], 'bf16');
    const opt = new AdamW([{ params: [{ name: 'p', tensor: p }] }], { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 });
    for (let i = 0; i < 100; i++) {
      setGrad(p, [1, 1, 1, 1]);
      opt.update();
    }
    // Each step moves the weight by ~1e-4, below bf16's resolution at 1 (2^-7): without a master copy nothing moves.
    const master = opt.stateTensors().get('p.master')!.toArray();
    assert.ok(Math.abs(master[0] - (1 - 100 * 1e-4)) < 1e-5, `master ${master[0]}`);
    assert.ok(p.toArray()[0] < 1, 'the bf16 parameter follows the master once the change is representable');
    opt.dispose();
    p.dispose();
  });

  it('clips the global gradient norm', () => {
    const a = param([0, 0]);
    const b = param([0]);
    setGrad(a, [3, 0]);
    setGrad(b, [4]);
    assert.strictEqual(gradNorm([a, b]), 5);
    const { norm, clipped } = clipGradNorm([a, b], 1);
    assert.strictEqual(norm, 5);
    assert.ok(clipped);
    assert.ok(Math.abs(gradNorm([a, b]) - 1) < 1e-5);
    assert.deepStrictEqual(clipGradNorm([a, b], 4).clipped, false);
    a.dispose();
    b.dispose();
  });

  // The norm is one batched kernel call (sumSquaresBatch: one synchronization on a GPU instead of one a parameter);
  // on the CPU it must give today's bits: the per-parameter sums (each in the kernel's 16384-element blocks) added in
  // parameter order.
  it('takes the gradient norm in one batched call that gives the per-parameter loop\'s bits on the CPU', () => {
    const rand = makeRandom(7);
    const sizes = [1, 16384 * 2 + 77, 0, 5, 40001, 3];
    const params = sizes.map((n) => param(Array.from({ length: n }, () => rand.normal() * 3)));
    params.forEach((p, i) => i !== 4 && setGrad(p, Array.from({ length: sizes[i] }, () => rand.normal() * (i + 1))));
    let loop = 0; // what clip.ts computed before: sumSquares per gradient, in order
    for (const p of params) if (p.grad) loop += sumSquares(p.grad);
    assert.ok(Object.is(gradNorm(params), Math.sqrt(loop)), `${gradNorm(params)} vs ${Math.sqrt(loop)}`);
    // Reordered, the float64 sum may differ in its last bits: the order is part of the contract, and kept.
    const device = installFakeDevice();
    try {
      const onDevice = params.map((p) => {
        const q = keep(p.to('cuda:0'));
        if (p.grad) q.grad = keep(p.grad.to('cuda:0'));
        return q;
      });
      device.kernelsUsed.clear();
      const { norm } = clipGradNorm(onDevice, 1e9);
      assert.ok(Object.is(norm, Math.sqrt(loop)));
      assert.deepStrictEqual([...device.kernelsUsed], ['sumSquaresBatch'], 'one batched kernel, not sumSquares a parameter');
      for (const q of onDevice) {
        q.grad?.dispose();
        q.dispose();
      }
    } finally {
      device.remove();
    }
    for (const p of params) {
      p.grad?.dispose();
      p.dispose();
    }
  });
});

describe('schedules', () => {
  it('warm up linearly, then decay by a half cosine to the floor', () => {
    const s = warmupCosine(4.5e-4, 1e-5, 10, 110);
    assert.ok(Math.abs(s(0) - 4.5e-5) < 1e-12);
    assert.ok(Math.abs(s(9) - 4.5e-4) < 1e-12);
    assert.ok(Math.abs(s(10) - 4.5e-4) < 1e-12);
    assert.ok(Math.abs(s(60) - (1e-5 + 0.5 * (4.5e-4 - 1e-5))) < 1e-12);
    assert.strictEqual(s(110), 1e-5);
    assert.strictEqual(s(10_000), 1e-5);
  });

  it('ramps like the dVAE paper: KL weight linear 0 -> 6.6 over 5000, tau cosine 1 -> 1/16 over 150000', () => {
    const beta = linear(0, 6.6, 5000);
    const tau = cosine(1, 1 / 16, 150000);
    assert.strictEqual(beta(0), 0);
    assert.ok(Math.abs(beta(2500) - 3.3) < 1e-12);
    assert.strictEqual(beta(9999), 6.6);
    assert.strictEqual(tau(0), 1);
    assert.ok(Math.abs(tau(75000) - (1 + 1 / 16) / 2) < 1e-12);
    assert.strictEqual(tau(150000), 1 / 16);
  });
});
