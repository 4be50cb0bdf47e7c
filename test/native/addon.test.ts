// The addon's contract with JavaScript: errors instead of crashes, threads, ISA selection, the caching allocator.
import * as assert from 'node:assert';
import { native } from '../../src/core/native';

describe('native addon', () => {
  it('turns a failed native check into an Error naming the op, the shapes and the source line', () => {
    assert.throws(
      () => (native.selfTestError as (n: number) => void)(5),
      (err: Error & { code?: string; op?: string }) =>
        err.code === 'DALLE_NATIVE' && err.op === 'selfTestError' && /shape \(5, 3\)/.test(err.message) &&
        /\[native\/src\/addon\.cc:\d+\]/.test(err.message),
    );
  });

  it('carries an error thrown inside a pool thread back to JavaScript, and the pool keeps working', () => {
    const before = native.numThreads();
    try {
      native.setThreads(2);
      const fail = native.selfTestParallelError as (n: number) => void;
      for (let i = 0; i < 20; i++) assert.throws(() => fail(64), /chunk \[\d+, 64\) failed on purpose/);
      assert.ok(native.sumSquares !== undefined);
      const p = native.alloc(4 * 100_000);
      native.fill(p, 100_000, 2, 'f32');
      assert.strictEqual((native.sumSquares as (n: number, x: number) => number)(100_000, p), 400_000);
      native.free(p, 4 * 100_000);
    } finally {
      native.setThreads(before);
    }
  });

  it('rejects bad arguments with an error, never a crash', () => {
    assert.throws(() => native.alloc(-1), /cannot allocate/);
    assert.throws(() => native.alloc(2 ** 45), /out of memory: a tensor of 32768\.0 GiB is larger than this machine/);
    assert.throws(() => native.stridedCopy(0, 0, 3, [2], [1], [1]), /item size 3/);
    assert.throws(() => native.stridedCopy(0, 0, 4, [2, 2], [1], [1]), /needs 2 strides/);
    assert.throws(() => native.cast(0, 'f64', 0, 'f32', 1), /unsupported cast/);
    assert.throws(() => (native.fill as unknown as (...a: unknown[]) => void)('x', 1, 0, 'f32'), /must be a data address/);
  });

  it('sizes the thread pool and reports CPU features', () => {
    const before = native.numThreads();
    assert.strictEqual(native.setThreads(1), 1);
    assert.strictEqual(native.setThreads(2), 2);
    native.setThreads(before);
    const info = native.cpuInfo();
    assert.ok(['portable', 'avx2', 'avx512'].includes(info.isa));
    assert.strictEqual(native.setIsa('portable'), 'portable');
    native.setIsa('avx512');
  });

  it('reuses freed blocks instead of asking the OS again', () => {
    const p = native.alloc(1 << 20);
    native.free(p, 1 << 20);
    const before = native.allocStats();
    for (let i = 0; i < 100; i++) native.free(native.alloc(1 << 20), 1 << 20);
    const after = native.allocStats();
    assert.strictEqual(after.osAllocs, before.osAllocs);
    assert.strictEqual(after.cacheHits - before.cacheHits, 100);
    assert.ok(native.sizeClass(5000) >= 5000 && native.sizeClass(5000) <= 5000 * 1.125 + 64);
  });
});
