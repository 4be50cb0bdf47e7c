// The CUDA addon's caching allocator of device memory. Its logic (native/cuda/device_allocator.h, the header addon.cc
// compiles with cudaMalloc / cudaFree as the raw functions) runs here on the CPU over a fake driver that counts calls
// (native/cuda/emu/allocator_test.cc): size classes, reuse, a warmed-up repeated pattern making no new raw allocation,
// statistics, trim, the trim-and-retry on a refusal and the out-of-memory message, refused double frees. Then the
// addon's own entry points, where it is built: present, and without a GPU allocStats() answers and alloc() fails
// with the reason instead of crashing.
import * as assert from 'node:assert';
import { execFileSync } from 'node:child_process';
import { cudaAddonIfLoaded } from '../../src/core/cuda';
import { buildEmuProgram } from './gxx';

describe('CUDA caching allocator', function () {
  this.timeout(120000);

  it('reuses freed blocks, counts driver calls, trims, and retries once before a clear out-of-memory error', function () {
    const built = buildEmuProgram('allocator_test.cc', 'c++17');
    if ('reason' in built) {
      console.log(`      (skipped: ${built.reason})`);
      this.skip();
    }
    let out: string;
    try {
      out = execFileSync(built.exe, { encoding: 'utf8' });
    } catch (err) {
      assert.fail(`allocator checks failed:\n${(err as { stdout?: string }).stdout ?? (err as Error).message}`);
    }
    const m = /checks (\d+) failed (\d+)/.exec(out);
    assert.ok(m, `unexpected output: ${out}`);
    assert.strictEqual(Number(m[2]), 0, out);
    assert.ok(Number(m[1]) >= 40, `only ${m[1]} checks ran`);
  });

  it('is exposed by the CUDA addon with the main allocator\'s names', function () {
    const addon = cudaAddonIfLoaded();
    if (!addon) this.skip();
    for (const name of ['alloc', 'free', 'allocStats', 'trim', 'resetPeak', 'malloc'] as const) {
      assert.strictEqual(typeof addon[name], 'function', `${name} is missing`);
    }
    const s = addon.allocStats();
    for (const key of ['bytesInUse', 'bytesCached', 'peakBytesInUse', 'allocs', 'cacheHits', 'driverAllocs', 'driverFrees']) {
      assert.strictEqual(typeof (s as unknown as Record<string, unknown>)[key], 'number', `allocStats().${key}`);
    }
    if (addon.info().deviceCount > 0) return; // with a GPU, test/cuda/gpu.test.ts allocates for real
    assert.throws(() => addon.alloc(1024), /dalle cuda: alloc: /);
    assert.strictEqual(addon.allocStats().bytesInUse, s.bytesInUse);
  });
});
