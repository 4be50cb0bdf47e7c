/** Per-resblock gradient scales across data-parallel ranks: agreed flags, init x M, and resume with another M. */
import assert from 'node:assert/strict';
import { GradScaler, PAPER_GRAD_SCALE } from '../../src/core/train/precision/grad-scaler';

describe('train: gradient scales across ranks', () => {
  it('start at 2^13 x M, and every rank skips and backs off where any rank overflowed', () => {
    const ranks = [new GradScaler(3, PAPER_GRAD_SCALE, 4), new GradScaler(3, PAPER_GRAD_SCALE, 4)];
    for (const r of ranks) assert.deepEqual(r.scales, [2 ** 15, 2 ** 15, 2 ** 15]);
    ranks[1].flag(2, 5); // only rank 1 saw an overflow, in resblock 2
    // The ranks' counts, reduced by max as the collective would.
    const counts = ranks.map(() => new Float64Array(3));
    ranks.forEach((r, i) => r.agree((c) => counts[i].set(c)));
    const max = counts.reduce((a, b) => a.map((v, j) => Math.max(v, b[j])));
    ranks.forEach((r) => r.agree((c) => c.set(max)));
    for (const r of ranks) {
      assert.deepEqual(r.flagged(), [2]);
      assert.equal(r.endStep(), false);
      assert.deepEqual(r.scales, [2 ** 15, 2 ** 15, 2 ** 15 / Math.SQRT2]);
    }
  });

  it('a run resumed with another number of workers keeps each scale relative to its workers', () => {
    const four = new GradScaler(2, PAPER_GRAD_SCALE, 4);
    four.flag(0);
    four.endStep();
    const saved = JSON.parse(JSON.stringify(four.state()));
    const two = new GradScaler(2, PAPER_GRAD_SCALE, 2);
    two.load(saved);
    assert.deepEqual(two.scales, four.scales.map((s) => s / 2));
    const old = new GradScaler(2, PAPER_GRAD_SCALE, 1);
    old.load({ scales: [2 ** 13, 2 ** 12], skipped: 1, updates: 0 }); // saved before data parallelism: workers 1
    assert.deepEqual(old.scales, [2 ** 13, 2 ** 12]);
  });
});
