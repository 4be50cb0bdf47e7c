// codebookStats (the dVAE's fused KL and code-usage statistics) and relaxedCodes (its gumbel-softmax sample) on every
// ISA: the same values and gradients as the composites they stand for (over codebook-last copies of the logits), the
// same noise words drawn, at odd sizes, whatever the threads.
import * as assert from 'node:assert';
import { native } from '../../src/core/native';
import { codebookStats, codebookStatsComposite, mul, relaxedCodes, relaxedCodesComposite, sum } from '../../src/core/ops';
import { Philox, Tensor, backward, tidy } from '../../src/core/tensor';
import { makeRandom } from '../harness/random';

const rand = makeRandom(4242);

function randn(shape: number[], scale = 1): Tensor {
  const n = shape.reduce((p, d) => p * d, 1);
  return Tensor.from(Float32Array.from({ length: n }, () => scale * rand.normal()), shape);
}

function isas(): Array<'portable' | 'avx2' | 'avx512'> {
  const info = native.cpuInfo();
  return ['portable', ...(info.avx2 ? ['avx2' as const] : []), ...(info.avx512 ? ['avx512' as const] : [])];
}

function close(got: ArrayLike<number>, want: ArrayLike<number>, rtol: number, atol: number, what: string): void {
  assert.strictEqual(got.length, want.length, `${what}: length`);
  for (let i = 0; i < got.length; i++) {
    assert.ok(Math.abs(got[i] - want[i]) <= atol + rtol * Math.abs(want[i]), `${what}[${i}]: got ${got[i]}, want ${want[i]}`);
  }
}

/** Values of f(logits) and the gradient of sum(f(logits) * weights). */
function run(f: (x: Tensor) => Tensor, logits: Float32Array, shape: number[], weights: Tensor): { y: Float32Array; dx: Float32Array } {
  return tidy(() => {
    const x = Tensor.from(logits, shape);
    x.requiresGrad = true;
    const y = f(x);
    backward(sum(mul(y, weights)));
    return { y: y.toArray() as Float32Array, dx: x.grad!.toArray() as Float32Array };
  });
}

type Result = { y: Float32Array; dx: Float32Array };

/**
 * For every ISA: `want(isa)` (the composite), then the fused op on 1 and 2 threads (`got`), each close to want, and
 * the two thread counts bitwise equal. ISA and threads are restored; `weights` is disposed.
 */
function onEveryIsaAndThreads(weights: Tensor, want: (isa: string) => Result, got: (isa: string) => Result,
  valueTol: [number, number]): void {
  const before = native.numThreads();
  const isaBefore = native.cpuInfo().isa;
  try {
    for (const isa of isas()) {
      native.setIsa(isa);
      const w = want(isa);
      const outs = [1, 2].map((threads) => {
        native.setThreads(threads);
        const g = got(isa);
        close(g.y, w.y, valueTol[0], valueTol[1], `values ${isa} ${threads} thread(s)`);
        close(g.dx, w.dx, 1e-4, 1e-5, `gradient ${isa} ${threads} thread(s)`);
        return g;
      });
      assert.deepStrictEqual(outs[0], outs[1], `${isa}: 1 and 2 threads bitwise`);
    }
  } finally {
    native.setIsa(isaBefore);
    native.setThreads(before);
    weights.dispose();
  }
}

describe('codebookStats', () => {
  // (B, V, h, w): one cell; a partial last vector of cells; more cells than a vector; the dVAE's 1024 codes
  const shapes = [[1, 1, 1, 1], [2, 7, 3, 5], [3, 33, 1, 17], [2, 1024, 4, 5]];
  for (const shape of shapes) {
    it(`matches the composite on every ISA and thread count, values and gradient: (${shape.join(', ')})`, () => {
      const logits = randn(shape, 3).toArray() as Float32Array;
      const weights = randn([shape[1] + 1]);
      const want = run(codebookStatsComposite, logits, shape, weights); // on the ISA active now
      onEveryIsaAndThreads(weights, () => want, () => run(codebookStats, logits, shape, weights),
        [1e-5, 1e-5 * shape[0] * shape[2] * shape[3]]);
    });
  }

  for (const shape of shapes) {
    it(`relaxedCodes draws the composite's noise and matches it on every ISA and thread count: (${shape.join(', ')})`, () => {
      const logits = randn(shape, 2).toArray() as Float32Array;
      const weights = randn(shape);
      const ref = new Philox(77n, 5n); // an offset inside a block of four words
      onEveryIsaAndThreads(weights,
        () => run((x) => relaxedCodesComposite(x, 0.6, ref.clone()), logits, shape, weights),
        (isa) => {
          const rng = new Philox(77n, 5n);
          const got = run((x) => relaxedCodes(x, 0.6, rng), logits, shape, weights);
          assert.strictEqual(rng.offset, ref.offset + BigInt(logits.length), `${isa}: the words of one draw used`);
          return got;
        },
        [1e-5, 1e-6]);
    });
  }

  it('refuses logits that are not (B, V, h, w) f32', () => {
    tidy(() => {
      assert.throws(() => codebookStats(randn([2, 3])), /codebookStats needs logits \(B, V, h, w\), got \(2, 3\)/);
    });
  });
});
