import * as assert from 'node:assert';
import { ReconMeter, psnr } from '../../src/core/eval/recon';

describe('reconstruction metrics', () => {
  it('computes PSNR with peak 1', () => {
    assert.strictEqual(psnr([0.5, 0.5], [0.5, 0.5]), Infinity);
    // MSE 0.01 -> 20 dB; MSE 1e-4 -> 40 dB
    assert.ok(Math.abs(psnr([0, 0, 0, 0], [0.1, 0.1, 0.1, 0.1]) - 20) < 1e-9);
    assert.ok(Math.abs(psnr([1, 0], [0.99, 0.01]) - 40) < 1e-9);
    assert.throws(() => psnr([1], [1, 2]), /psnr of 1 and 2/);
  });

  it('averages PSNR per image and measures codebook usage', () => {
    const m = new ReconMeter(4);
    m.add([0, 0, 1, 1], [0.1, 0.1, 0.99, 0.99], 2, [0, 1, 1, 1]);
    const r = m.result();
    assert.strictEqual(r.images, 2);
    assert.ok(Math.abs(r.psnr - (20 + 40) / 2) < 1e-9);
    assert.strictEqual(r.deadCodes, 2);
    const q = [0.25, 0.75];
    assert.ok(Math.abs(r.perplexity - Math.exp(-q.reduce((s, p) => s + p * Math.log(p), 0))) < 1e-12);
  });
});
