// The CUDA ops against their CPU references on random inputs (src/core/cuda/check.ts). Runs only where the CUDA addon
// finds a GPU; skips with the reason elsewhere. DALLE_CUDA_CHECK_BIG=1 adds the prior's full-size masks.
import * as assert from 'node:assert';
import { cudaAddon, cudaStatus } from '../../src/core/cuda';
import { runCudaChecks } from '../../src/core/cuda/check';

describe('CUDA ops vs the CPU reference (needs a GPU)', function () {
  this.timeout(600000);

  before(function () {
    const s = cudaStatus();
    if (!s.available) {
      console.log(`      (skipped: ${s.reason})`);
      this.skip();
    }
  });

  for (const group of ['gemm', 'attention', 'elementwise', 'rows', 'conv']) {
    it(`${group}: every output within tolerance`, function () {
      const cuda = cudaAddon();
      if (group === 'gemm' && cuda.cublasLtStatus() !== null) {
        assert.fail(`cuBLASLt did not load: ${cuda.cublasLtStatus()}`);
      }
      const results = runCudaChecks(cuda, { only: [group], big: process.env.DALLE_CUDA_CHECK_BIG === '1' });
      assert.ok(results.length > 0);
      const bad = results.filter((r) => !r.ok);
      assert.deepStrictEqual(bad.map((r) => `${r.op} ${r.what}: worst ${r.worst.toPrecision(3)} (max abs ${r.maxAbs.toExponential(2)})`), []);
    });
  }
});
