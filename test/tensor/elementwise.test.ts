// Elementwise, reduction and concat ops: what the op harness (test/ops.test.ts) does not cover. Three-way broadcasts,
// error messages, strided and 16-bit inputs, number operands, extreme values on every ISA, thread-count independence,
// max's tie rule, empty tensors, and native memory.
import * as assert from 'node:assert';
import { kernel, native, setThreads } from '../../src/core/native';
import {
  add, addScalar, concat, div, exp, gelu, log, max, mean, mul, neg, onesLike, permute, relu, scale, sigmoid, slice,
  sqrt, square, sub, sum, sumToShape, tanh, transpose, zerosLike,
} from '../../src/core/ops';
import { Tensor, backward, tidy } from '../../src/core/tensor';
import { makeRandom } from '../harness/random';

const rand = makeRandom(12345);

function randn(shape: number[]): Tensor {
  const n = shape.reduce((p, d) => p * d, 1);
  return Tensor.from(Float32Array.from({ length: n }, () => rand.normal()), shape);
}

function param(shape: number[]): Tensor {
  const t = randn(shape);
  t.requiresGrad = true;
  return t;
}

function close(got: ArrayLike<number>, want: ArrayLike<number>, rtol = 1e-5, atol = 1e-6, what = ''): void {
  assert.strictEqual(got.length, want.length, `${what}: length`);
  for (let i = 0; i < got.length; i++) {
    const g = got[i];
    const w = want[i];
    if (Number.isNaN(w)) {
      assert.ok(Number.isNaN(g), `${what}[${i}]: got ${g}, want NaN`);
      continue;
    }
    if (g === w) continue;
    assert.ok(Math.abs(g - w) <= atol + rtol * Math.abs(w), `${what}[${i}]: got ${g}, want ${w}`);
  }
}

function total(v: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i];
  return s;
}

function isas(): Array<'portable' | 'avx2' | 'avx512'> {
  const info = native.cpuInfo();
  return ['portable', ...(info.avx2 ? ['avx2' as const] : []), ...(info.avx512 ? ['avx512' as const] : [])];
}

function onEveryIsa(fn: (isa: string) => void): void {
  try {
    for (const isa of isas()) {
      native.setIsa(isa);
      fn(isa);
    }
  } finally {
    native.setIsa('avx512');
  }
}

function noLeak(fn: () => void): void {
  const before = native.allocStats().bytesInUse;
  tidy(fn);
  assert.strictEqual(native.allocStats().bytesInUse, before, 'native memory not released');
}

describe('elementwise ops', () => {
  it('broadcasts three ways and sums each gradient back to its input shape', () => {
    noLeak(() => {
      const a = param([3, 1, 1]);
      const b = param([1, 4, 1]);
      const c = param([5]);
      const y = mul(add(a, b), c); // (3, 4, 5)
      assert.deepStrictEqual(y.shape, [3, 4, 5]);
      const av = a.toArray();
      const bv = b.toArray();
      const cv = c.toArray();
      const yv = y.toArray();
      for (let i = 0; i < 3; i++) {
        for (let j = 0; j < 4; j++) {
          for (let k = 0; k < 5; k++) {
            assert.ok(Math.abs(yv[i * 20 + j * 5 + k] - (av[i] + bv[j]) * cv[k]) < 1e-5);
          }
        }
      }
      backward(sum(y));
      assert.deepStrictEqual(a.grad!.shape, [3, 1, 1]);
      assert.deepStrictEqual(b.grad!.shape, [1, 4, 1]);
      assert.deepStrictEqual(c.grad!.shape, [5]);
      const cs = total(cv);
      const bs = total(bv);
      const as = total(av);
      close(a.grad!.toArray(), Array.from({ length: 3 }, () => 4 * cs), 1e-5, 1e-5, 'da');
      close(b.grad!.toArray(), Array.from({ length: 4 }, () => 3 * cs), 1e-5, 1e-5, 'db');
      close(c.grad!.toArray(), Array.from({ length: 5 }, () => 4 * as + 3 * bs), 1e-5, 1e-5, 'dc');
      for (const t of [a, b, c]) t.dispose();
    });
  });

  it('names the op and both shapes when shapes do not broadcast', () => {
    noLeak(() => {
      const a = randn([2, 3]);
      const b = randn([4]);
      assert.throws(() => add(a, b), /add: shapes \(2, 3\) and \(4\) do not broadcast/);
      assert.throws(() => div(a, randn([3, 2])), /div: shapes \(2, 3\) and \(3, 2\) do not broadcast/);
      assert.throws(() => sumToShape(randn([2, 3]), [2]), /sumToShape: \(2, 3\) does not broadcast from \(2\)/);
      assert.throws(() => add(1 as unknown as Tensor, 2), /at least one Tensor/);
      assert.throws(() => exp(Tensor.from([1, 2], [2], 'i32')), /exp takes float tensors, got i32 \(2\); cast/);
      assert.throws(() => sum(randn([2, 3]), [2]), /sum: axis 2 is out of range for a rank-2 tensor/);
      assert.throws(() => mean(randn([2, 3]), [1, -1]), /mean: repeated axis/);
    });
  });

  it('reads strided views directly (transposed, sliced, broadcast-strided) on every ISA', () => {
    onEveryIsa((isa) => noLeak(() => {
      const x = randn([33, 17]);
      const xt = transpose(x); // (17, 33), strides (1, 17)
      const xc = xt.copyContiguousRaw();
      const y = randn([17, 33]);
      close(add(xt, y).toArray(), add(xc, y).toArray(), 0, 0, `${isa} add strided`);
      close(gelu(xt).toArray(), gelu(xc).toArray(), 0, 0, `${isa} gelu strided`);
      const s = slice(x, [[3, 30], [1, 16]]);
      const sc = s.copyContiguousRaw();
      close(exp(s).toArray(), exp(sc).toArray(), 0, 0, `${isa} exp sliced`);
      close(sum(s, 0).toArray(), sum(sc, 0).toArray(), 0, 0, `${isa} sum sliced`);
      close(max(xt, [1]).toArray(), max(xc, [1]).toArray(), 0, 0, `${isa} max strided`);
      // views large enough to be copied dense before the kernel (a strided last dimension of >= 2^14 elements)
      const big = permute(randn([2, 67, 131]), [0, 2, 1]); // (2, 131, 67), last stride 131
      const bigc = big.copyContiguousRaw();
      const row = randn([67]);
      close(add(big, row).toArray(), add(bigc, row).toArray(), 0, 0, `${isa} add permuted + broadcast row`);
      const col = randn([131, 1]);
      close(mul(col, big).toArray(), mul(col, bigc).toArray(), 0, 0, `${isa} mul column * permuted`);
      close(exp(big).toArray(), exp(bigc).toArray(), 0, 0, `${isa} exp permuted`);
      const p = permute(randn([3, 4, 5]), [2, 0, 1]);
      close(concat([p, p], 1).toArray(), concat([p.copyContiguousRaw(), p.copyContiguousRaw()], 1).toArray(), 0, 0, 'concat');
    }));
  });

  it('takes numbers on either side', () => {
    noLeak(() => {
      const x = Tensor.from([1, -2, 4], [3]);
      assert.deepStrictEqual([...add(x, 2).toArray()], [3, 0, 6]);
      assert.deepStrictEqual([...add(2, x).toArray()], [3, 0, 6]);
      assert.deepStrictEqual([...sub(x, 1).toArray()], [0, -3, 3]);
      assert.deepStrictEqual([...sub(1, x).toArray()], [0, 3, -3]);
      assert.deepStrictEqual([...mul(x, -3).toArray()], [-3, 6, -12]);
      assert.deepStrictEqual([...div(x, 2).toArray()], [0.5, -1, 2]);
      assert.deepStrictEqual([...div(4, x).toArray()], [4, -2, 1]);
      assert.deepStrictEqual([...scale(x, 0.5).toArray()], [0.5, -1, 2]);
      assert.deepStrictEqual([...addScalar(x, 0.5).toArray()], [1.5, -1.5, 4.5]);
      assert.deepStrictEqual([...neg(x).toArray()], [-1, 2, -4]);
      assert.deepStrictEqual([...square(x).toArray()], [1, 4, 16]);
      assert.deepStrictEqual([...sqrt(Tensor.from([4, 9], [2])).toArray()], [2, 3]);
      assert.deepStrictEqual([...zerosLike(x).toArray()], [0, 0, 0]);
      assert.deepStrictEqual([...onesLike(x, 'i32').toArray()], [1, 1, 1]);
      // gradients through number operands
      const p = param([3]);
      backward(sum(div(1, p)));
      close(p.grad!.toArray(), Array.from(p.toArray(), (v) => -1 / (v * v)), 1e-5, 1e-6, 'd(1/p)');
      p.dispose();
    });
  });

  it('widens f16 / bf16 inputs to f32 and gives f32 gradients of the input shape', () => {
    noLeak(() => {
      const h = Tensor.from([0.5, -1.5, 2], [3], 'f16');
      const b = Tensor.from([1, 2, 3], [3], 'bf16');
      h.requiresGrad = true;
      const y = mul(h, b);
      assert.strictEqual(y.dtype, 'f32');
      assert.deepStrictEqual([...y.toArray()], [0.5, -3, 6]);
      backward(sum(y));
      assert.strictEqual(h.grad!.dtype, 'f32');
      assert.deepStrictEqual([...h.grad!.toArray()], [1, 2, 3]);
      assert.deepStrictEqual([...sum(b).toArray()], [6]);
      h.dispose();
    });
  });

  it('matches float64 at extreme inputs on every ISA (overflow, underflow, subnormals, NaN)', () => {
    const xs = [
      0, -0, 1e-30, -1e-30, 1e-7, -1e-7, 0.5, -0.5, 0.62, 0.63, -0.63, 1, -1, 3, -3, 9, -9, 10, -10, 20, -20, 44, -44,
      80, -80, 87.5, -87.5, 88.5, -88.5, 88.8, -88.8, 89, -89, 100, -100, 103, -103, 104, -104, 120, -120, 1e10, -1e10,
      Infinity, -Infinity, NaN,
    ];
    const f32 = Float32Array.from(xs);
    const positives = Float32Array.from([1e-45, 1e-40, 1.2e-38, 1e-30, 1e-7, 0.3, 0.7071, 0.7072, 1, 1.5, 2, 1e5, 3e38, Infinity, 0, -1, NaN]);
    const fns: Array<[string, (t: Tensor) => Tensor, (v: number) => number, Float32Array]> = [
      ['exp', exp, Math.exp, f32],
      ['sigmoid', sigmoid, (v) => 1 / (1 + Math.exp(-v)), f32],
      ['tanh', tanh, Math.tanh, f32],
      ['relu', relu, (v) => (v < 0 ? 0 : v), f32],
      // 0.5 v (1 + tanh(u)) written as v / (1 + exp(-2u)): the same function, without float64's cancellation at v << 0.
      ['gelu', gelu, (v) => v / (1 + Math.exp(-2 * Math.sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v))), f32],
      ['log', log, Math.log, positives],
      ['sqrt', sqrt, Math.sqrt, positives],
    ];
    onEveryIsa((isa) => noLeak(() => {
      for (const [name, f, ref, input] of fns) {
        // Every lane position: the values start at each offset of a 16-wide vector.
        for (let shift = 0; shift < 17; shift++) {
          const vals = Float32Array.from({ length: input.length + shift }, (_, i) => (i < shift ? 1 : input[i - shift]));
          const got = f(Tensor.from(vals, [vals.length])).toArray();
          const want = Array.from(vals, (v) => {
            const r = ref(v);
            // Beyond the f32 range the f32 answer is +-Inf or 0.
            return Math.abs(r) > 3.4028234663852886e38 ? Math.sign(r) * Infinity : r;
          });
          // rtol: a few ulp, plus the conditioning of exp(-2u) in gelu's far negative tail (u itself is rounded).
          close(got, want, name === 'gelu' ? 2e-5 : 2e-6, 1e-37, `${isa} ${name} shift ${shift}`);
        }
      }
    }));
  });

  it('gives the same bits for any thread count', () => {
    noLeak(() => {
      const x = randn([3, 70001]);
      const cols = randn([40001, 3]);
      const y = randn([70001]);
      const run = (): Float32Array[] => [
        sum(x, 1).toArray() as Float32Array,
        mean(x).toArray() as Float32Array,
        max(x, 1).toArray() as Float32Array,
        sum(cols, 0).toArray() as Float32Array,
        gelu(x).toArray() as Float32Array,
        add(x, y).toArray() as Float32Array,
        tanh(transpose(cols)).toArray() as Float32Array,
      ];
      const before = native.numThreads();
      try {
        setThreads(1);
        const one = run();
        for (const n of [2, 3, 5]) {
          setThreads(n);
          const many = run();
          one.forEach((a, i) => assert.deepStrictEqual(many[i], a, `result ${i} differs with ${n} threads`));
        }
      } finally {
        setThreads(before);
      }
    });
  });
});

describe('elementwise and reduction kernels', () => {
  it('turn bad calls into errors naming the kernel, never a crash', () => {
    noLeak(() => {
      const t = Tensor.zeros([4]);
      const idx = Tensor.from([0, 7], [2], 'i32');
      const call = (name: string, ...args: unknown[]) => () => kernel<(...a: unknown[]) => void>(name)(...args);
      assert.throws(call('ewUnary', 99, t.address, t.address, [4], [1], 1, 0), /ewUnary: unknown unary op code 99/);
      assert.throws(call('ewBinary', 0, t.address, t.address, [1], t.address, [1, 1], [4]), /ewBinary: b has 2 strides for shape \(4\)/);
      assert.throws(call('ewBinaryFlat', 0, -1, t.address, t.address, t.address), /ewBinaryFlat: negative count/);
      assert.throws(call('ewUnary', 0, t.address, t.address, [1, 1, 1, 1, 1, 1, 1, 1, 4], Array(9).fill(0), 1, 0), /rank 9 is over/);
      assert.throws(call('reduce', 1, t.address, 2, 0, 2, t.address, null, 1), /reduce: max over an empty dimension/);
      assert.throws(call('reduceMaxBackward', t.address, t.address, idx.address, 1, 2, 2), /index 7 at 1 is out of range \[0, 2\)/);
    });
  });
});

describe('reductions', () => {
  it('sends max gradients to the first maximal element (row-major over the reduced axes)', () => {
    noLeak(() => {
      const x = Tensor.from([1, 3, 3, 2, 5, 5, 5, 0], [2, 4]);
      x.requiresGrad = true;
      const m = max(x, 1);
      assert.deepStrictEqual([...m.toArray()], [3, 5]);
      backward(m, Tensor.from([10, 20], [2]));
      assert.deepStrictEqual([...x.grad!.toArray()], [0, 10, 0, 0, 20, 0, 0, 0]);
      x.dispose();
      // Two separated axes of (2, 2, 2): the maximum 9 sits at (0, *, 1) and (1, *, 0); first in (axis 0, axis 2) order.
      const y = Tensor.from([9, 1, 2, 9, 9, 9, 4, 9], [2, 2, 2]);
      y.requiresGrad = true;
      const my = max(y, [0, 2], true);
      assert.deepStrictEqual(my.shape, [1, 2, 1]);
      assert.deepStrictEqual([...my.toArray()], [9, 9]);
      backward(sum(my));
      assert.deepStrictEqual([...y.grad!.toArray()], [1, 0, 0, 1, 0, 0, 0, 0]);
      y.dispose();
    });
  });

  it('routes a long row\'s max gradient to its argmax (split path) and handles all-axes max', () => {
    noLeak(() => {
      const n = 70001;
      const v = new Float32Array(n).map(() => rand.uniform());
      v[54321] = 2;
      v[60000] = 2; // a later tie: not chosen
      const x = Tensor.from(v, [n]);
      x.requiresGrad = true;
      const m = max(x);
      assert.strictEqual(m.item(), 2);
      backward(m);
      const g = x.grad!.toArray();
      assert.strictEqual(g[54321], 1);
      assert.strictEqual(total(g), 1);
      x.dispose();
    });
  });

  it('handles empty tensors and empty reductions', () => {
    noLeak(() => {
      const e = Tensor.zeros([3, 0]);
      assert.deepStrictEqual([...sum(e, 1).toArray()], [0, 0, 0]);
      assert.ok(mean(e, 1).toArray().every((v) => Number.isNaN(v)));
      assert.deepStrictEqual(sum(e, 0).shape, [0]);
      assert.throws(() => max(e, 1), /max over an empty axis of \(3, 0\)/);
      assert.deepStrictEqual(add(e, Tensor.zeros([1, 0])).shape, [3, 0]);
      assert.deepStrictEqual(exp(e).shape, [3, 0]);
      assert.deepStrictEqual(concat([e, Tensor.zeros([3, 2])], 1).shape, [3, 2]);
    });
  });

  it('sums large column blocks accurately (float64 accumulation)', () => {
    noLeak(() => {
      // 1 + many tiny values: float32 sequential accumulation would lose them all.
      const n = 100001;
      const v = new Float32Array(n).fill(1e-8);
      v[0] = 1;
      const s = sum(Tensor.from(v, [n])).item();
      assert.ok(Math.abs(s - (1 + 1e-8 * (n - 1))) < 1e-7, `sum ${s}`);
      const two = new Float32Array(2 * n).map((_, i) => v[i >> 1]);
      for (const c of sum(Tensor.from(two, [n, 2]), 0).toArray()) {
        assert.ok(Math.abs(c - (1 + 1e-8 * (n - 1))) < 1e-7, `column sum ${c}`);
      }
    });
  });

  it('sumToShape reduces leading and size-1 dimensions and returns g itself when shapes match', () => {
    noLeak(() => {
      const g = randn([2, 3, 4]);
      assert.strictEqual(sumToShape(g, [2, 3, 4]), g);
      const r = sumToShape(g, [3, 1]);
      assert.deepStrictEqual(r.shape, [3, 1]);
      const gv = g.toArray();
      for (let j = 0; j < 3; j++) {
        let want = 0;
        for (let i = 0; i < 2; i++) for (let k = 0; k < 4; k++) want += gv[i * 12 + j * 4 + k];
        assert.ok(Math.abs(r.toArray()[j] - want) < 1e-5);
      }
      assert.deepStrictEqual(sumToShape(g, []).shape, []);
    });
  });
});

describe('concat', () => {
  it('names every shape when they do not fit, and refuses mixed dtypes', () => {
    noLeak(() => {
      assert.throws(() => concat([randn([2, 3]), randn([3, 3])], 1), /concat along axis 1: shapes \(2, 3\), \(3, 3\) differ/);
      assert.throws(() => concat([randn([2, 3]), randn([2])], 0), /shapes \(2, 3\), \(2\) differ/);
      assert.throws(() => concat([randn([2]), Tensor.zeros([2], 'i32')], 0), /dtypes differ \(f32, i32\)/);
      assert.throws(() => concat([], 0), /at least one tensor/);
      assert.throws(() => concat([randn([2])], 1), /axis 1 is out of range/);
    });
  });

  it('gives each input its slice of the gradient', () => {
    noLeak(() => {
      const a = param([2, 3]);
      const b = param([2, 1]);
      const y = concat([a, b], -1);
      const g = Tensor.from([1, 2, 3, 4, 5, 6, 7, 8], [2, 4]);
      backward(y, g);
      assert.deepStrictEqual([...a.grad!.toArray()], [1, 2, 3, 5, 6, 7]);
      assert.deepStrictEqual([...b.grad!.toArray()], [4, 8]);
      a.dispose();
      b.dispose();
    });
  });
});
