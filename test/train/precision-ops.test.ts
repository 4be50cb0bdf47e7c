// The mixed-precision ops (src/core/ops/precision.ts): the native scale-and-filter kernel against its TypeScript
// reference on fresh random inputs with injected Inf/NaN and overflows (odd sizes, several blocks), fp16/bf16
// rounding at the edges of the formats and its rounded straight-through gradient, and the resblock gradient
// boundaries (scale in, unscale + filter out, the count reported).
import * as assert from 'node:assert';
import { native } from '../../src/core/native';
import { gradScaleEnter, gradScaleLeave, matmul, roundBF16, roundF16, scaleFilter, scaleFilterInPlace, scaleFilterReference, sum, mul, gelu } from '../../src/core/ops';
import { Tensor, backward, keep, roundTo, tidy } from '../../src/core/tensor';
import { makeRandom } from '../harness/random';
import { TEST_SEED } from '../harness/random';

function leaf(values: ArrayLike<number>, shape: number[]): Tensor {
  const t = keep(Tensor.from(values, shape));
  t.requiresGrad = true;
  return t;
}

function sameBits(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  assert.strictEqual(got.length, want.length, `${what}: length`);
  for (let i = 0; i < got.length; i++) {
    if (!Object.is(got[i], want[i]) && !(Number.isNaN(got[i]) && Number.isNaN(want[i]))) {
      assert.fail(`${what}: element ${i}: got ${got[i]}, want ${want[i]}`);
    }
  }
}

describe('precision ops', () => {
  it('scaleFilter (native) equals its reference, with Inf/NaN/overflow injected, on odd sizes and several blocks', () => {
    const rand = makeRandom(TEST_SEED + 11);
    for (const n of [0, 1, 7, 33, 129, 16384 + 17, 3 * 16384 + 5]) {
      for (const alpha of [1 / 8192, 1 / (8192 * 2 ** (7 / 1000)), 3.7, 1e30]) {
        const x = new Float32Array(n);
        for (let i = 0; i < n; i++) {
          const u = rand.uniform();
          x[i] = u < 0.01 ? Infinity : u < 0.02 ? -Infinity : u < 0.03 ? NaN : u < 0.04 ? 3e38 * (rand.uniform() - 0.5) : rand.normal() * 10 ** rand.int(-30, 30);
        }
        const want = scaleFilterReference(x, alpha);
        tidy(() => {
          const t = Tensor.from(x, [n]);
          const { out, nonFinite } = scaleFilter(t, alpha);
          sameBits(out.toArray(), want.values, `scaleFilter n=${n} alpha=${alpha}`);
          assert.strictEqual(nonFinite, want.nonFinite, `count n=${n} alpha=${alpha}`);
          assert.strictEqual(scaleFilterInPlace(t, alpha), want.nonFinite);
          sameBits(t.toArray(), want.values, `in place n=${n}`);
        });
        if (n > 1000 && alpha === 1e30) assert.ok(want.nonFinite > 0.1 * n, 'the case has overflowing products');
      }
    }
  });

  it('roundF16 rounds to nearest even, overflows to Inf, flushes below half the smallest subnormal; roundBF16 likewise', () => {
    const edge = [0, -0, 1, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 65504, 65519.99, 65520, -65520, 1e6, 2 ** -24, 2 ** -25, 2 ** -25 * 1.01, 1e-9, 6.1e-5, NaN, Infinity, -Infinity, 3.14159];
    tidy(() => {
      const x = Tensor.from(edge, [edge.length]);
      sameBits(roundF16(x).toArray(), edge.map((v) => roundTo('f16', Math.fround(v))), 'roundF16');
      sameBits(roundBF16(x).toArray(), edge.map((v) => roundTo('bf16', Math.fround(v))), 'roundBF16');
      const r = roundF16(x).toArray();
      assert.strictEqual(r[edge.indexOf(65520)], Infinity);
      assert.strictEqual(r[edge.indexOf(65519.99)], 65504);
      assert.strictEqual(r[edge.indexOf(2 ** -25)], 0); // ties to even: zero
      assert.strictEqual(r[edge.indexOf(2 ** -25 * 1.01)], 2 ** -24);
      assert.strictEqual(r[edge.indexOf(1 + 2 ** -11)], 1); // tie, to even
      assert.strictEqual(r[edge.indexOf(1 + 3 * 2 ** -11)], 1 + 2 ** -9);
    });
  });

  it("roundF16's gradient is the incoming gradient rounded to fp16 (Inf where it overflows)", () => {
    const x = leaf([0.1, 0.2, 0.3, 0.4], [4]);
    const g = [1e5, 1.0001, 3e-8, -70000];
    tidy(() => backward(roundF16(x), Tensor.from(g, [4])));
    sameBits(x.grad!.toArray(), [Infinity, roundTo('f16', Math.fround(1.0001)), roundTo('f16', Math.fround(3e-8)), -Infinity], 'gradient');
    x.dispose();
  });

  it('gradScaleEnter scales the gradient; gradScaleLeave unscales it, zeroes Inf/NaN and reports their count', () => {
    const x = leaf([1, 2, 3, 4, 5], [5]);
    const s = 8192 * 2 ** (3 / 1000);
    const g = [1, -2, Infinity, NaN, 1e-3];
    tidy(() => backward(gradScaleEnter(x, s), Tensor.from(g, [5])));
    sameBits(x.grad!.toArray(), g.map((v) => Math.fround(v * Math.fround(s))), 'enter');
    x.grad!.dispose();
    x.grad = null;
    const counts: number[] = [];
    tidy(() => backward(gradScaleLeave(x, s, (c) => counts.push(c)), Tensor.from(g, [5])));
    sameBits(x.grad!.toArray(), scaleFilterReference(g, 1 / s).values, 'leave');
    assert.deepStrictEqual(counts, [2]);
    // Forward: both are identities and share the input's storage.
    tidy(() => {
      const e = gradScaleEnter(x, s);
      assert.notStrictEqual(e, x);
      sameBits(e.toArray(), [1, 2, 3, 4, 5], 'forward');
      assert.strictEqual(e.address, x.address);
    });
    x.dispose();
  });

  it('enter(f(leave(x))) has the gradient of f when nothing overflows (scale a power of two: exactly)', () => {
    const rand = makeRandom(TEST_SEED + 12);
    const vals = Array.from({ length: 7 * 5 }, () => rand.normal());
    const wv = Array.from({ length: 5 * 3 }, () => rand.normal());
    const run = (wrap: boolean): Float32Array => {
      const x = leaf(vals, [7, 5]);
      const w = keep(Tensor.from(wv, [5, 3]));
      const f = (t: Tensor): Tensor => gelu(matmul(t, w));
      tidy(() => {
        const y = wrap ? gradScaleEnter(f(gradScaleLeave(x, 2 ** 13)), 2 ** 13) : f(x);
        backward(sum(mul(y, y)));
      });
      const out = x.grad!.toArray() as Float32Array;
      x.dispose();
      w.dispose();
      return out;
    };
    sameBits(run(true), run(false), 'gradient');
  });

  it('native scaleFilter is there (the addon was rebuilt)', () => {
    assert.strictEqual(typeof native.scaleFilter, 'function');
  });
});
