// The data-parallel cost model (src/core/distributed/cost-model.ts) against its formulas written out by hand, and the
// prior's parameter shapes (models/prior/size.ts) against the shapes a Prior builds.
import * as assert from 'node:assert';
import { dataParallelCost, ringAllReduceBytes } from '../../src/core/distributed/cost-model';
import { powerSgdTraffic } from '../../src/core/distributed/powersgd-layout';
import { Prior } from '../../src/core/models/prior';
import { parameterShapes } from '../../src/core/models/prior/size';
import { Philox } from '../../src/core/tensor';
import { ODD, WIDE } from '../harness/prior-memory';

describe('data-parallel cost model', () => {
  const shapes = [[64, 32], [32], [128, 64], [3, 2]]; // two matrices worth compressing at rank 4, a vector, a thin one
  const input = { parameterShapes: shapes, tokensPerExample: 10, globalBatch: 64, bytesPerValue: 2, rank: 4,
    linkGbps: [100, 400], peakFlops: 1e15, mfu: 0.5 };

  it('prices a ring all-reduce at 2 (N - 1) / N of the payload per GPU, nothing on one GPU', () => {
    assert.strictEqual(ringAllReduceBytes(1000, 1), 0);
    assert.strictEqual(ringAllReduceBytes(1000, 2), 1000);
    assert.strictEqual(ringAllReduceBytes(1000, 8), 1750);
  });

  it('counts bytes, seconds and compute from the shapes', () => {
    const params = 64 * 32 + 32 + 128 * 64 + 6;
    const compressed = 4 * (64 + 32) + 32 + 4 * (128 + 64) + 6;
    const cost = dataParallelCost(input, [1, 8, 64]);
    assert.strictEqual(cost.parameters, params);
    assert.strictEqual(cost.compressedMatrices, 2);
    assert.strictEqual(cost.powerSgdFraction, compressed / params);
    const row = cost.rows[1];
    assert.strictEqual(row.examplesPerGpu, 8);
    assert.strictEqual(row.exactBytes, (2 * 7 / 8) * params * 2);
    assert.strictEqual(row.powerSgdBytes, (2 * 7 / 8) * compressed * 2);
    assert.deepStrictEqual(row.exactSeconds, [100, 400].map((g) => (8 * row.exactBytes) / (g * 1e9)));
    assert.ok(Math.abs(row.computeSeconds - (6 * params * 10 * 8) / (1e15 * 0.5)) < 1e-18);
    assert.strictEqual(cost.rows[0].exactBytes, 0, 'one GPU sends nothing');
    assert.ok(cost.rows[2].computeSeconds < row.computeSeconds, 'more GPUs: less compute each');
  });

  it('refuses a batch that does not split over the GPUs, and bad assumptions', () => {
    assert.throws(() => dataParallelCost(input, [3]), /does not split evenly over 3 GPUs/);
    assert.throws(() => dataParallelCost({ ...input, mfu: 1.5 }, [8]), /mfu must be in \(0, 1\]/);
    assert.throws(() => dataParallelCost({ ...input, linkGbps: [0] }, [8]), /link speed/);
  });

  it('lists the shapes a Prior builds, so the model prices the right matrices', () => {
    for (const arch of [ODD, WIDE]) {
      const built = new Prior(arch, new Philox(0)).namedParameters().map(([, t]) => t.shape.join('x')).sort();
      assert.deepStrictEqual(parameterShapes(arch).map((s) => s.join('x')).sort(), built);
      assert.ok(powerSgdTraffic(parameterShapes(arch), 1).compressedMatrices > 0);
    }
  });
});
