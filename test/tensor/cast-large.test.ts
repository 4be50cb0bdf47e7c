/**
 * The native cast on arrays longer than one thread's chunk (1 << 15), with the values rounding gets wrong first:
 * NaN, infinities, subnormals of each 16-bit format, halfway ties, overflow past the 16-bit range, and i32 saturation,
 * every pair of dtypes against the float64 reference (tensor/dtype.ts roundTo) value by value.
 */
import assert from 'node:assert/strict';
import { cast } from '../../src/core/ops';
import { DType, Tensor, roundTo } from '../../src/core/tensor';
import { makeRandom } from '../harness/random';

const SPECIAL = [NaN, Infinity, -Infinity, 0, -0, 1, -1, 65504, 65520, -65520, 1e5, 2 ** -14, 2 ** -24, 2 ** -25, 3 * 2 ** -26,
  1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.4e38, 1e-40, -1e-45, 2147483648, -2147483649, 123.5, -7.5];

function same(a: number, b: number): boolean {
  return (Number.isNaN(a) && Number.isNaN(b)) || Object.is(a, b) || a === b;
}

describe('tensor: cast on long arrays (every thread chunk), special values included', () => {
  const n = 100_003;
  const rand = makeRandom(11);
  const values = Float32Array.from({ length: n }, (_, i) => (i % 97 < SPECIAL.length ? SPECIAL[i % 97] : (rand.uniform() - 0.5) * 10 ** (8 * rand.uniform() - 4)));
  const f32 = Tensor.from(values, [n]);
  const sources: Record<string, Tensor> = { f32, f16: cast(f32, 'f16'), bf16: cast(f32, 'bf16') };

  for (const from of ['f32', 'f16', 'bf16'] as const) {
    for (const to of ['f32', 'f16', 'bf16', 'i32'] as DType[]) {
      it(`${from} -> ${to}`, () => {
        const src = sources[from];
        const input = Float64Array.from(cast(src, 'f32').toArray() as Float32Array);
        const out = cast(src, to);
        const got = to === 'f32' || to === 'i32' ? (out.toArray() as ArrayLike<number>) : (cast(out, 'f32').toArray() as Float32Array);
        for (let i = 0; i < n; i++) {
          const x = input[i];
          const want = to === 'i32' ? (Number.isNaN(x) ? 0 : Math.max(-2147483648, Math.min(2147483647, Math.trunc(x)))) : roundTo(to, x);
          if (!same(got[i], want)) assert.fail(`${from} -> ${to} at ${i}: ${x} gave ${got[i]}, expected ${want}`);
        }
      });
    }
  }

  it('i32 -> f32 and a same-dtype cast (a copy) over long arrays', () => {
    const ints = Tensor.from(Int32Array.from({ length: n }, (_, i) => (i * 7919) % 2000003 - 1000000), [n], 'i32');
    const back = cast(ints, 'f32').toArray() as Float32Array;
    const src = ints.toArray() as Int32Array;
    for (let i = 0; i < n; i++) assert.equal(back[i], Math.fround(src[i]));
    assert.deepEqual(cast(sources.bf16, 'bf16').toArray(), sources.bf16.toArray());
  });
});
