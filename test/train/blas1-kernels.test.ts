// The training loop's vector kernels (native/cpu/blas1.cc: adamw, axpy, scale, sumSquares) against a plain reference that rounds
// to float32 after every operation as the C++ does (Math.fround over float64 is exact for +, -, *, / and sqrt of
// float32 values), so the vectorized loops must give the reference's bits. Odd sizes over several thread chunks, 1 and
// 2 threads; axpy of a vector onto itself (autograd adds a gradient to itself) and a partial overlap (refused).
import * as assert from 'node:assert';
import { native } from '../../src/core/native';
import { Philox } from '../../src/core/tensor';

const f = Math.fround;
type Kernel = (...args: number[]) => unknown;
const kernel = (name: string): Kernel => native[name as keyof typeof native] as unknown as Kernel;

function randomF32(rng: Philox, n: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => f((2 * rng.uniform() - 1) * scale));
}

/** Runs fn with device copies of the arrays (in order) and copies them back. */
function onDevice(arrays: Float32Array[], fn: (addresses: number[]) => void): void {
  const addresses = arrays.map((a) => native.alloc(4 * a.length));
  try {
    arrays.forEach((a, i) => native.copyIn(addresses[i], a));
    fn(addresses);
    arrays.forEach((a, i) => native.copyOut(addresses[i], a));
  } finally {
    arrays.forEach((a, i) => native.free(addresses[i], 4 * a.length));
  }
}

function assertSameBits(got: Float32Array, want: Float32Array, what: string): void {
  const g = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const w = new Uint32Array(want.buffer, want.byteOffset, want.length);
  const bad = g.findIndex((v, i) => v !== w[i]);
  if (bad >= 0) assert.fail(`${what}: element ${bad} of ${got.length} is ${got[bad]}, want ${want[bad]}`);
}

describe('training vector kernels (blas1)', () => {
  const before = native.numThreads();
  after(() => native.setThreads(before));
  const sizes = [1, 7, 33, 100_003];

  it('adamw gives the float32 reference update bit for bit (decay, gradient scale, bias correction)', () => {
    const rng = new Philox(0xada);
    for (const threads of [1, 2]) {
      native.setThreads(threads);
      for (const n of sizes) {
        const p = randomF32(rng, n);
        const g = randomF32(rng, n, 3);
        const m = randomF32(rng, n, 0.1);
        const v = Float32Array.from(randomF32(rng, n, 0.01), Math.abs);
        const [lr, b1, b2, eps, wd, gs, step] = [3e-4, 0.9, 0.96, 1e-8, 4.5e-2, 0.37, 5];
        const bc1 = f(1 / (1 - Math.pow(b1, step)));
        const bc2 = f(1 / (1 - Math.pow(b2, step)));
        const [fb1, fb2, flr, feps, fwd, fgs] = [f(b1), f(b2), f(lr), f(eps), f(wd), f(gs)];
        const want = { p: p.slice(), m: m.slice(), v: v.slice() };
        for (let i = 0; i < n; i++) {
          const gi = f(g[i] * fgs);
          const mi = f(f(fb1 * m[i]) + f(f(1 - fb1) * gi));
          const vi = f(f(fb2 * v[i]) + f(f(f(1 - fb2) * gi) * gi));
          want.m[i] = mi;
          want.v[i] = vi;
          const update = f(f(mi * bc1) / f(f(Math.sqrt(f(vi * bc2))) + feps));
          want.p[i] = f(p[i] - f(flr * f(update + f(fwd * p[i]))));
        }
        onDevice([p, g, m, v], ([pa, ga, ma, va]) => kernel('adamw')(n, pa, ga, ma, va, lr, b1, b2, eps, wd, gs, step));
        assertSameBits(p, want.p, `adamw p, n ${n}, ${threads} threads`);
        assertSameBits(m, want.m, `adamw m, n ${n}, ${threads} threads`);
        assertSameBits(v, want.v, `adamw v, n ${n}, ${threads} threads`);
      }
    }
  });

  it('axpy and scale give the float32 reference bit for bit, also for y += alpha * y', () => {
    const rng = new Philox(0xa7);
    for (const threads of [1, 2]) {
      native.setThreads(threads);
      for (const n of sizes) {
        const alpha = f(-0.61);
        const x = randomF32(rng, n);
        const y = randomF32(rng, n);
        const wantAxpy = Float32Array.from(y, (yi, i) => f(yi + f(alpha * x[i])));
        onDevice([x, y], ([xa, ya]) => kernel('axpy')(n, alpha, xa, ya));
        assertSameBits(y, wantAxpy, `axpy, n ${n}, ${threads} threads`);
        const wantSelf = Float32Array.from(y, (yi) => f(yi + f(alpha * yi)));
        onDevice([y], ([ya]) => kernel('axpy')(n, alpha, ya, ya));
        assertSameBits(y, wantSelf, `axpy onto itself, n ${n}, ${threads} threads`);
        const wantScale = Float32Array.from(x, (xi) => f(xi * alpha));
        onDevice([x], ([xa]) => kernel('scale')(n, alpha, xa));
        assertSameBits(x, wantScale, `scale, n ${n}, ${threads} threads`);
      }
    }
  });

  it('sumSquares adds in its fixed order (blocks of 16384, 8 interleaved float64 sums each): same bits on 1 and 2 threads', () => {
    const rng = new Philox(0x55);
    for (const n of [...sizes, 3 * 16384 + 5]) {
      const x = randomF32(rng, n, 5);
      let want = 0;
      for (let lo = 0; lo < n; lo += 16384) {
        const acc = [0, 0, 0, 0, 0, 0, 0, 0];
        const hi = Math.min(lo + 16384, n);
        let i = lo;
        for (; i + 8 <= hi; i += 8) for (let k = 0; k < 8; k++) acc[k] += x[i + k] * x[i + k];
        for (let k = 0; i < hi; i++, k++) acc[k] += x[i] * x[i];
        want += ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
      }
      for (const threads of [1, 2]) {
        native.setThreads(threads);
        let got = NaN;
        onDevice([x], ([xa]) => {
          got = kernel('sumSquares')(n, xa) as number;
        });
        assert.strictEqual(got, want, `sumSquares, n ${n}, ${threads} threads`);
      }
    }
  });

  it('axpy refuses vectors that overlap without being the same', () => {
    const a = native.alloc(4 * 64);
    try {
      assert.throws(() => kernel('axpy')(32, 1, a, a + 4 * 8), /overlap/);
    } finally {
      native.free(a, 4 * 64);
    }
  });
});
