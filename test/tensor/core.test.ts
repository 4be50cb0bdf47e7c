// Tensors, views, scopes and native memory: the mechanics every op and model rests on.
import * as assert from 'node:assert';
import { cast, contiguous, matmul, permute, reshape, slice, transpose } from '../../src/core/ops';
import {
  Tensor,
  backward,
  f16BitsToF32,
  f32ToF16Bits,
  keep,
  liveStorage,
  noGrad,
  tidy,
  zeroGrad,
} from '../../src/core/tensor';

function inUse(): number {
  return liveStorage().bytes;
}

describe('tensor core', () => {
  it('round-trips host data for every dtype', () => {
    tidy(() => {
      assert.deepStrictEqual([...Tensor.from([1.5, -2, 3], [3], 'f32').toArray()], [1.5, -2, 3]);
      assert.deepStrictEqual([...Tensor.from([7, -8, 2 ** 30], [3], 'i32').toArray()], [7, -8, 2 ** 30]);
      // 1/3 is not representable in 16 bits: both must round to nearest even, the same way as the native cast.
      assert.deepStrictEqual([...Tensor.from([1 / 3, 65504, 1e-7], [3], 'f16').toArray()], [
        f16BitsToF32(f32ToF16Bits(1 / 3)), 65504, f16BitsToF32(f32ToF16Bits(1e-7)),
      ]);
      const bf = Tensor.from([1 / 3, 1e30], [2], 'bf16').toArray();
      assert.ok(Math.abs(bf[0] - 1 / 3) < 2e-3 && Math.abs(bf[1] / 1e30 - 1) < 4e-3);
    });
  });

  it('casts agree with the scalar conversions on every 16-bit pattern', () => {
    tidy(() => {
      const bits = new Uint16Array(65536).map((_, i) => i);
      const f16 = Tensor.from(bits, [65536], 'f16');
      const wide = cast(f16, 'f32').toArray();
      for (let i = 0; i < 65536; i++) {
        const want = f16BitsToF32(i);
        assert.ok(Object.is(wide[i], want) || (Number.isNaN(want) && Number.isNaN(wide[i])), `f16 bits ${i}`);
      }
      const back = cast(cast(f16, 'f32'), 'f16').toHost() as Uint16Array;
      for (let i = 0; i < 65536; i++) {
        if (Number.isNaN(f16BitsToF32(i))) continue;
        assert.strictEqual(back[i], i, `f16 -> f32 -> f16 round trip of bits ${i}`);
      }
    });
  });

  it('views share storage and become contiguous on demand', () => {
    tidy(() => {
      const x = Tensor.from(Array.from({ length: 24 }, (_, i) => i), [2, 3, 4]);
      const p = permute(x, [2, 0, 1]);
      assert.deepStrictEqual(p.shape, [4, 2, 3]);
      assert.ok(!p.isContiguous());
      assert.strictEqual(p.storage, x.storage);
      assert.deepStrictEqual([...contiguous(p).toArray()].slice(0, 6), [0, 4, 8, 12, 16, 20]);
      const s = slice(x, [[1, 2], [1, 3], [2, 4]]);
      assert.deepStrictEqual([...s.toArray()], [18, 19, 22, 23]);
      assert.deepStrictEqual([...reshape(transpose(x, 1, 2), [2, 12]).toArray()].slice(0, 4), [0, 4, 8, 1]);
    });
  });

  it('tidy releases everything it made except what it returns and what was kept', () => {
    const before = inUse();
    let kept: Tensor | undefined;
    const out = tidy(() => {
      const a = Tensor.ones([64, 64]);
      const b = matmul(a, a);
      kept = keep(Tensor.zeros([10]));
      return { result: matmul(b, a), list: [Tensor.ones([3])] };
    });
    assert.strictEqual(out.result.disposed, false);
    assert.strictEqual(out.list[0].disposed, false);
    assert.strictEqual(out.result.toArray()[0], 64 * 64);
    out.result.dispose();
    out.list[0].dispose();
    kept!.dispose();
    assert.strictEqual(inUse(), before);
  });

  it('tidy disposes on a throw, and a disposed tensor gives a clear error', () => {
    const before = inUse();
    let leaked: Tensor | undefined;
    assert.throws(() =>
      tidy(() => {
        leaked = Tensor.ones([100]);
        throw new Error('boom');
      }), /boom/);
    assert.strictEqual(inUse(), before);
    assert.throws(() => leaked!.toArray(), /disposed tensor \(100\).*tidy\(\) scope/);
    assert.throws(() => matmul(leaked!.viewAs([10, 10], [10, 1], 0), leaked!), /disposed/);
  });

  it('views keep storage alive until the last one is disposed', () => {
    const before = inUse();
    const x = Tensor.ones([1000]);
    const v = reshape(x, [10, 100]);
    x.dispose();
    assert.strictEqual(v.toArray()[999], 1);
    v.dispose();
    assert.strictEqual(inUse(), before);
  });
});

describe('autograd', () => {
  it('accumulates gradients over backward calls until zeroGrad', () => {
    const w = keep(Tensor.from([1, 2, 3, 4], [2, 2]));
    w.requiresGrad = true;
    const x = keep(Tensor.from([1, 0, 0, 1], [2, 2]));
    for (let i = 0; i < 2; i++) {
      tidy(() => backward(matmul(x, w), Tensor.ones([2, 2])));
    }
    // d/dw sum(x @ w) with x = I is all ones; twice accumulated.
    assert.deepStrictEqual([...w.grad!.toArray()], [2, 2, 2, 2]);
    zeroGrad([w]);
    assert.deepStrictEqual([...w.grad!.toArray()], [0, 0, 0, 0]);
    w.dispose();
    x.dispose();
  });

  it('sums the gradients of a tensor used twice', () => {
    tidy(() => {
      const a = Tensor.from([1, 2, 3, 4], [2, 2]);
      a.requiresGrad = true;
      backward(matmul(a, a), Tensor.ones([2, 2]));
      // d sum(A A) / dA = 1 Aᵀ + Aᵀ 1 (1 = all-ones): [[3+4, 7+6], ...] computed by hand below.
      const A = [[1, 2], [3, 4]];
      const want = [0, 1].flatMap((i) => [0, 1].map((j) => A[j][0] + A[j][1] + A[0][i] + A[1][i]));
      assert.deepStrictEqual([...a.grad!.toArray()], want);
      a.grad!.dispose();
      a.grad = null;
    });
  });

  it('records nothing under noGrad', () => {
    tidy(() => {
      const a = Tensor.ones([2, 2]);
      a.requiresGrad = true;
      const y = noGrad(() => matmul(a, a));
      assert.strictEqual(y.requiresGrad, false);
      assert.throws(() => backward(y, Tensor.ones([2, 2])), /does not require gradients/);
    });
  });

  it('passes gradients straight through a 16-bit cast', () => {
    tidy(() => {
      const a = Tensor.from([0.1, 0.2, 0.3, 0.4], [2, 2]);
      a.requiresGrad = true;
      const h = cast(a, 'bf16');
      backward(cast(h, 'f32'), Tensor.from([1, 2, 3, 4], [2, 2]));
      assert.deepStrictEqual([...a.grad!.toArray()], [1, 2, 3, 4]);
      a.grad!.dispose();
      a.grad = null;
    });
  });

  it('releases all intermediate memory of a forward and backward', () => {
    const w = keep(Tensor.ones([33, 17]));
    w.requiresGrad = true;
    tidy(() => backward(matmul(matmul(Tensor.ones([5, 33]), w), Tensor.ones([17, 3])), Tensor.ones([5, 3])));
    const before = inUse();
    for (let i = 0; i < 5; i++) {
      tidy(() => backward(matmul(matmul(Tensor.ones([5, 33]), w), Tensor.ones([17, 3])), Tensor.ones([5, 3])));
    }
    assert.strictEqual(inUse(), before);
    w.dispose();
  });
});

describe('strided copies', () => {
  it('make every permutation of odd-sized tensors contiguous exactly (tiled and row paths, 1 and 2 threads)', () => {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const { native } = require('../../src/core/native') as typeof import('../../src/core/native');
    const before = native.numThreads();
    const shape = [3, 37, 41, 9];
    const n = shape.reduce((a, b) => a * b, 1);
    const values = Float32Array.from({ length: n }, (_, i) => i);
    const perms = [[0, 1, 3, 2], [0, 2, 3, 1], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 1, 3], [0, 3, 1, 2]];
    try {
      for (const threads of [1, 2]) {
        native.setThreads(threads);
        tidy(() => {
          const x = Tensor.from(values, shape);
          for (const perm of perms) {
            const got = contiguous(permute(x, perm)).toArray();
            const outShape = perm.map((d) => shape[d]);
            const srcStrides = [41 * 9 * 37, 41 * 9, 9, 1].map((_, d) => shape.slice(d + 1).reduce((a, b) => a * b, 1));
            let k = 0;
            const idx = [0, 0, 0, 0];
            for (idx[0] = 0; idx[0] < outShape[0]; idx[0]++)
              for (idx[1] = 0; idx[1] < outShape[1]; idx[1]++)
                for (idx[2] = 0; idx[2] < outShape[2]; idx[2]++)
                  for (idx[3] = 0; idx[3] < outShape[3]; idx[3]++, k++) {
                    let off = 0;
                    for (let d = 0; d < 4; d++) off += idx[d] * srcStrides[perm[d]];
                    if (got[k] !== off) assert.fail(`perm [${perm}] threads ${threads}: element ${k} is ${got[k]}, want ${off}`);
                  }
          }
        });
      }
    } finally {
      native.setThreads(before);
    }
  });
});
