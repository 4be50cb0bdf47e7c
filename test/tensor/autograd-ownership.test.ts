// Autograd's gradient entries (tensor/autograd.ts backward): the incoming gradient g of a node becomes an input's entry
// instead of being copied when nothing else holds its memory, and a gradient accumulated into an existing entry is only
// read. These tests check the sums stay right (float64 recomputation on random inputs of odd sizes), that no entry
// aliases another or the caller's gradient, that nothing leaks, and that a chain of residual adds copies g once per
// add (it copied it twice: once per input).
import * as assert from 'node:assert';
import { backendFor } from '../../src/core/backend/registry';
import { add, mul, reshape, sum } from '../../src/core/ops';
import { Philox, Tensor, backward, liveStorage, tidy } from '../../src/core/tensor';

function leaf(values: Float32Array, shape: number[]): Tensor {
  const t = Tensor.from(values, shape, 'f32');
  t.requiresGrad = true;
  return t;
}

function randomValues(rng: Philox, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => 2 * rng.uniform() - 1);
}

function assertClose(got: Float32Array, want: ArrayLike<number>, what: string): void {
  assert.strictEqual(got.length, want.length, `${what}: length`);
  for (let i = 0; i < got.length; i++) {
    const tol = 1e-5 * (1 + Math.abs(want[i]));
    assert.ok(Math.abs(got[i] - want[i]) <= tol, `${what}[${i}]: ${got[i]} vs ${want[i]}`);
  }
}

describe('autograd gradient entries', () => {
  const seed = 0x5eed17;

  it('residual chains h <- h + h * w_i: the gradients of h0 and every w_i equal the float64 recomputation', () => {
    const rng = new Philox(seed);
    const shape = [3, 7, 5];
    const n = 3 * 7 * 5;
    const layers = 4;
    tidy(() => {
      const h0v = randomValues(rng, n);
      const wv = Array.from({ length: layers }, () => randomValues(rng, n));
      const cv = randomValues(rng, n);
      const h0 = leaf(h0v, shape);
      const ws = wv.map((v) => leaf(v, shape));
      let h = h0;
      for (const w of ws) h = add(h, mul(h, w));
      backward(sum(mul(h, Tensor.from(cv, shape, 'f32'))));
      // Forward in float64, then dL/dh_i backwards: dh_i = dh_{i+1} * (1 + w_i), dw_i = dh_{i+1} * h_i.
      const hs: Float64Array[] = [Float64Array.from(h0v)];
      for (let l = 0; l < layers; l++) hs.push(hs[l].map((x, j) => x + x * wv[l][j]));
      let dh = Float64Array.from(cv);
      const dw: Float64Array[] = [];
      for (let l = layers - 1; l >= 0; l--) {
        dw[l] = dh.map((d, j) => d * hs[l][j]);
        dh = dh.map((d, j) => d * (1 + wv[l][j]));
      }
      assertClose(h0.grad!.toArray() as Float32Array, dh, 'dh0');
      ws.forEach((w, l) => assertClose(w.grad!.toArray() as Float32Array, dw[l], `dw${l}`));
    });
  });

  it('an input used twice by one add, and a reshape view of g beside g itself, get separate entries', () => {
    const rng = new Philox(seed + 1);
    tidy(() => {
      const av = randomValues(rng, 15);
      const bv = randomValues(rng, 15);
      const cv = randomValues(rng, 15);
      const a = leaf(av, [3, 5]);
      const b = leaf(bv, [15]);
      // y = a + a + reshape(b): add's backward returns its g for both inputs; reshape's backward a view of its g.
      const y = add(add(a, a), reshape(b, [3, 5]));
      // b also reaches the loss on its own, so its first entry is accumulated into afterwards.
      const loss = add(sum(mul(y, Tensor.from(cv, [3, 5], 'f32'))), sum(mul(b, b)));
      backward(loss);
      assertClose(a.grad!.toArray() as Float32Array, Array.from(cv, (c) => 2 * c), 'da');
      assertClose(b.grad!.toArray() as Float32Array, Array.from(cv, (c, i) => c + 2 * bv[i]), 'db');
    });
  });

  it("never writes into the caller's gradient, and leaves no storage behind", () => {
    const rng = new Philox(seed + 2);
    const before = liveStorage();
    tidy(() => {
      const xv = randomValues(rng, 33);
      const gv = randomValues(rng, 33);
      const x = leaf(xv, [3, 11]);
      const y = add(x, mul(x, x)); // dy/dx = 1 + 2x; the add hands the caller's gradient to both inputs
      const gradient = Tensor.from(gv, [3, 11], 'f32');
      backward(y, gradient);
      assert.deepStrictEqual([...gradient.toArray()], [...gv], 'the gradient passed to backward() changed');
      assertClose(x.grad!.toArray() as Float32Array, Array.from(gv, (g, i) => g * (1 + 2 * xv[i])), 'dx');
      x.grad!.dispose();
    });
    assert.deepStrictEqual(liveStorage(), before);
  });

  it('copies the gradient of a residual add once, not once per input', () => {
    const rng = new Philox(seed + 3);
    const layers = 5;
    tidy(() => {
      const shape = [4, 9];
      let h = leaf(randomValues(rng, 36), shape);
      const ws = Array.from({ length: layers }, () => leaf(randomValues(rng, 36), shape));
      for (const w of ws) h = add(h, mul(h, w));
      const loss = sum(h);
      const backend = backendFor('cpu');
      const stridedCopy = backend.stridedCopy;
      let copies = 0;
      backend.stridedCopy = (...args: Parameters<typeof stridedCopy>) => {
        copies++;
        stridedCopy.apply(backend, args);
      };
      try {
        backward(loss);
      } finally {
        backend.stridedCopy = stridedCopy;
      }
      // One copy per add for its second input (both inputs' entries are later written into); two before.
      assert.ok(copies <= layers, `${copies} copies for ${layers} residual adds`);
    });
  });
});
