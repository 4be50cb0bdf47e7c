// Every registered op against its float64 reference and its gradient against finite differences, on fresh random
// inputs, on every backend here: the CPU on every kernel ISA it has, and the first GPU where the CUDA addon finds one
// (inputs moved there with .to(), results copied back; an op without a CUDA kernel yet is a visible skip naming the
// missing kernels). Without a GPU, the CUDA column is one visible skip saying why. Also: the registry covers every
// op the engine promises.
import * as assert from 'node:assert';
import { backendFor } from '../src/core/backend';
import { cudaStatus } from '../src/core/cuda';
import { native } from '../src/core/native';
import '../src/core/ops';
import { opMissingKernels, registeredOps } from '../src/core/tensor';
import { runCase } from './harness/op-harness';
import { TEST_SEED } from './harness/random';

/** The ops the foundation promises (issue: foundation, item 6). A missing one fails the suite. */
const REQUIRED_OPS = [
  'matmul', 'add', 'sub', 'mul', 'div', 'exp', 'log', 'sigmoid', 'tanh', 'relu', 'gelu',
  'sum', 'mean', 'max', 'softmax', 'logSoftmax', 'layerNorm', 'embedding', 'conv2d', 'maxPool2x2', 'upsample2x',
  'concat', 'slice', 'permute', 'reshape', 'contiguous', 'crossEntropy', 'cast', 'attention', 'sparseAttention',
  'roundFloat', 'gradScaleEnter', 'gradScaleLeave',
];

function availableIsas(): Array<'portable' | 'avx2' | 'avx512'> {
  const info = native.cpuInfo();
  return ['portable', ...(info.avx2 ? ['avx2' as const] : []), ...(info.avx512 ? ['avx512' as const] : [])];
}

describe(`op harness (seed ${TEST_SEED}; DALLE_TEST_SEED replays it)`, () => {
  it('registers every required op, each with a reference, cases and a gradient check', () => {
    const names = new Set(registeredOps().map((op) => op.name));
    const missing = REQUIRED_OPS.filter((n) => !names.has(n));
    assert.deepStrictEqual(missing, [], `ops without a registration: ${missing.join(', ')}`);
    for (const op of registeredOps()) {
      const cases = op.cases();
      assert.ok(cases.length > 0, `${op.name} has no harness cases`);
      if (op.backward) {
        assert.ok(
          cases.some((c) => (c.gradcheck ?? 'directional') !== 'none'),
          `${op.name} has a backward but no case checks it`,
        );
      }
    }
  });

  for (const op of registeredOps()) {
    describe(op.name, () => {
      op.cases().forEach((c, index) => {
        it(c.name ?? `case ${index}`, function () {
          this.timeout(120000);
          const isas = availableIsas();
          try {
            for (const isa of isas) {
              native.setIsa(isa);
              // Gradients are ISA-independent in what they check; check them once, on the best ISA.
              const seed = TEST_SEED + index * 7919;
              runCase(op, isa === isas[isas.length - 1] ? c : { ...c, gradcheck: 'none' }, seed);
            }
          } finally {
            native.setIsa('avx512');
          }
        });
      });
    });
  }

  describe('on cuda:0', () => {
    const status = cudaStatus();
    if (!status.available) {
      it(`every op on the GPU (skipped: ${status.reason})`, function () {
        this.skip();
      });
      return;
    }
    for (const op of registeredOps()) {
      describe(op.name, () => {
        op.cases().forEach((c, index) => {
          it(c.name ?? `case ${index}`, function () {
            this.timeout(120000);
            const missing = opMissingKernels(op, backendFor('cuda:0'));
            if (missing.length > 0) {
              console.log(`      (skipped: no CUDA kernel ${missing.join(', ')})`);
              this.skip();
            }
            runCase(op, c, TEST_SEED + index * 7919, 'cuda:0');
          });
        });
      });
    }
  });
});
