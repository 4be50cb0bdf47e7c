// The neural-network ops (softmax, logSoftmax, layerNorm, embedding, crossEntropy, attention) beyond what the op
// harness checks: clear errors for bad indices and targets, mask semantics of attention, ignoreIndex, strided
// inputs, and bit-identical results for any thread count.
import * as assert from 'node:assert';
import { native } from '../../src/core/native';
import {
  argmax,
  attention,
  contiguous,
  crossEntropy,
  embedding,
  layerNorm,
  logSoftmax,
  permute,
  softmax,
  transpose,
} from '../../src/core/ops';
import { Tensor, backward, tidy } from '../../src/core/tensor';
import { TEST_SEED, makeRandom } from '../harness/random';

const rand = makeRandom(12345);

function randn(shape: number[], requiresGrad = false): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const t = Tensor.from(Float32Array.from({ length: n }, () => rand.normal()), shape);
  t.requiresGrad = requiresGrad;
  return t;
}

function ints(shape: number[], lo: number, hi: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return Tensor.from(Int32Array.from({ length: n }, () => rand.int(lo, hi)), shape, 'i32');
}

/** The lower triangle aligned to the last query: query i (of the last Tq of Tk positions) sees keys j <= i + Tk - Tq. */
function tril(Tq: number, Tk: number): Tensor {
  const m = new Int32Array(Tq * Tk);
  for (let i = 0; i < Tq; i++) for (let j = 0; j <= i + Tk - Tq && j < Tk; j++) m[i * Tk + j] = 1;
  return Tensor.from(m, [Tq, Tk], 'i32');
}

function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string, tol = 1e-5): void {
  assert.strictEqual(got.length, want.length, `${what}: lengths`);
  for (let i = 0; i < got.length; i++) {
    const err = Math.abs(got[i] - want[i]);
    assert.ok(err <= tol + tol * Math.abs(want[i]), `${what}: element ${i}: ${got[i]} vs ${want[i]}`);
  }
}

function assertSameBits(a: Float32Array | Int32Array, b: Float32Array | Int32Array, what: string): void {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  assert.strictEqual(ua.length, ub.length, `${what}: lengths`);
  for (let i = 0; i < ua.length; i++) assert.strictEqual(ua[i], ub[i], `${what}: element ${i} differs (${a[i]} vs ${b[i]})`);
}

function inUse(): number {
  return native.allocStats().bytesInUse;
}

describe('nn ops', () => {
  describe('embedding', () => {
    it('rejects an out-of-range index, naming it, its position and V, before writing anything', () => {
      tidy(() => {
        const table = randn([10, 4]);
        const idx = Tensor.from([1, 2, 3, 4, 5, 10], [2, 3], 'i32');
        assert.throws(() => embedding(table, idx), (err: Error) => {
          assert.match(err.message, /index 10 at position \(1, 2\)/);
          assert.match(err.message, /V = 10/);
          return true;
        });
        const neg = Tensor.from([0, -1], [2], 'i32');
        assert.throws(() => embedding(table, neg), /index -1 at position \(1\).*V = 10/);
      });
    });

    it('rejects non-i32 indices and a table that is not (V, C)', () => {
      tidy(() => {
        assert.throws(() => embedding(randn([10, 4]), Tensor.from([1], [1], 'f32')), /indices must be i32/);
        assert.throws(() => embedding(randn([10]), Tensor.from([1], [1], 'i32')), /table must be f32 \(V, C\)/);
      });
    });

    it('adds the gradients of repeated indices and leaves unused rows zero', () => {
      tidy(() => {
        const table = randn([4, 3], true);
        const out = embedding(table, Tensor.from([2, 0, 2, 2], [4], 'i32'));
        backward(out, Tensor.from([1, 1, 1, 10, 10, 10, 100, 100, 100, 1000, 1000, 1000], [4, 3]));
        assertClose(table.grad!.toArray(), [10, 10, 10, 0, 0, 0, 1101, 1101, 1101, 0, 0, 0], 'dtable');
      });
    });
  });

  describe('crossEntropy', () => {
    it('rejects an out-of-range target, naming it, its row and V', () => {
      tidy(() => {
        const logits = randn([3, 5]);
        assert.throws(() => crossEntropy(logits, Tensor.from([0, 5, 1], [3], 'i32')), /target 5 at row 1 .*\(3, 5\).*0 to 4/);
        assert.throws(
          () => crossEntropy(logits, Tensor.from([0, -2, 1], [3], 'i32'), null, { ignoreIndex: -1 }),
          /target -2 at row 1 .*ignoreIndex -1/,
        );
        assert.throws(() => crossEntropy(logits, Tensor.from([0, 1], [2], 'i32')), /targets must be i32 \(3\)/);
      });
    });

    it('ignoreIndex rows contribute nothing, to the loss, its denominator or the gradient', () => {
      tidy(() => {
        const logits = randn([4, 6], true);
        const targets = Tensor.from([1, -100, 5, -100], [4], 'i32');
        const loss = crossEntropy(logits, targets, null, { ignoreIndex: -100 });
        // Reference: the mean over rows 0 and 2 only.
        const kept = tidy(() => {
          const sub = Tensor.from([...logits.toArray().slice(0, 6), ...logits.toArray().slice(12, 18)], [2, 6]);
          return crossEntropy(sub, Tensor.from([1, 5], [2], 'i32')).item();
        });
        assertClose([loss.item()], [kept], 'loss');
        backward(loss);
        const g = logits.grad!.toArray();
        for (const row of [1, 3]) for (let v = 0; v < 6; v++) assert.strictEqual(g[row * 6 + v], 0, `row ${row}`);
        // Each counted row's gradient sums to zero (softmax - onehot) and is divided by 2 positions.
        let s = 0;
        for (let v = 0; v < 6; v++) s += g[v];
        assert.ok(Math.abs(s) < 1e-6);
        assert.ok(g[1] < 0 && g[1] > -0.5);
      });
    });

    it('a mean over positions that are all ignored is 0 with zero gradients', () => {
      tidy(() => {
        const logits = randn([2, 3], true);
        const loss = crossEntropy(logits, Tensor.from([-1, -1], [2], 'i32'), null, { ignoreIndex: -1 });
        assert.strictEqual(loss.item(), 0);
        backward(loss);
        assert.deepStrictEqual([...logits.grad!.toArray()], [0, 0, 0, 0, 0, 0]);
      });
    });

    it('weights 1/(8 n_text) and 7/(8 n_image) give 1/8 mean(text) + 7/8 mean(image)', () => {
      tidy(() => {
        const [nText, nImage, V] = [3, 5, 7];
        const logits = randn([nText + nImage, V]);
        const targets = ints([nText + nImage], 0, V);
        const w = Tensor.from([...Array(nText).fill(1 / (8 * nText)), ...Array(nImage).fill(7 / (8 * nImage))], [nText + nImage]);
        const loss = crossEntropy(logits, targets, w, { reduction: 'mean' }).item();
        const lp = logSoftmax(logits).toArray();
        const t = targets.toArray();
        let text = 0;
        let image = 0;
        for (let n = 0; n < nText + nImage; n++) {
          if (n < nText) text -= lp[n * V + t[n]] / nText;
          else image -= lp[n * V + t[n]] / nImage;
        }
        assertClose([loss], [text / 8 + (7 * image) / 8], 'weighted loss');
        const sum = crossEntropy(logits, targets, w, { reduction: 'sum' }).item();
        assertClose([sum], [loss], 'total weight 1: sum = mean');
      });
    });
  });

  describe('attention', () => {
    it('causal equals an explicit lower-triangular mask, forward and backward', () => {
      for (const [Tq, Tk] of [[37, 37], [5, 70], [70, 70]]) {
        tidy(() => {
          const q = randn([2, 2, Tq, 8], true);
          const k = randn([2, 2, Tk, 8], true);
          const v = randn([2, 2, Tk, 5], true);
          const g = randn([2, 2, Tq, 5]);
          const a = attention(q, k, v, null, { causal: true });
          backward(a, g);
          const grads1 = [q, k, v].map((t) => t.grad!.toArray());
          [q, k, v].forEach((t) => { t.grad!.dispose(); t.grad = null; });
          const b = attention(q, k, v, tril(Tq, Tk));
          backward(b, g);
          assertClose(b.toArray(), a.toArray(), `forward ${Tq}x${Tk}`, 1e-6);
          [q, k, v].forEach((t, i) => assertClose(t.grad!.toArray(), grads1[i], `gradient ${i} ${Tq}x${Tk}`, 1e-5));
        });
      }
    });

    it('a row with no allowed key gives zeros and passes no gradient', () => {
      tidy(() => {
        const [Tq, Tk, D] = [4, 6, 3];
        const mask = Tensor.from(Int32Array.from({ length: Tq * Tk }, (_, i) => (Math.floor(i / Tk) === 2 ? 0 : 1)), [Tq, Tk], 'i32');
        const q = randn([1, 2, Tq, D], true);
        const k = randn([1, 2, Tk, D], true);
        const v = randn([1, 2, Tk, D], true);
        const out = attention(q, k, v, mask);
        const o = out.toArray();
        for (let h = 0; h < 2; h++) {
          for (let d = 0; d < D; d++) {
            assert.strictEqual(o[(h * Tq + 2) * D + d], 0);
            assert.notStrictEqual(o[(h * Tq + 1) * D + d], 0);
          }
        }
        assert.ok(o.every((x) => Number.isFinite(x)));
        backward(out, randn([1, 2, Tq, D]));
        const dq = q.grad!.toArray();
        for (let h = 0; h < 2; h++) for (let d = 0; d < D; d++) assert.strictEqual(dq[(h * Tq + 2) * D + d], 0);
        // A fully masked mask: all zeros, no NaN anywhere.
        const none = attention(q, k, v, Tensor.zeros([Tq, Tk], 'i32'));
        assert.ok(none.toArray().every((x) => x === 0));
      });
    });

    it('reads permuted (B, T, H, D) views in place and matches contiguous inputs', () => {
      tidy(() => {
        const [B, T, H, D] = [2, 9, 3, 4];
        const qkv = randn([B, T, H, 3 * D]);
        const views = [0, 1, 2].map((i) => {
          const s = qkv.viewAs([B, T, H, D], qkv.strides, qkv.offset + i * D);
          return permute(s, [0, 2, 1, 3]);
        });
        assert.ok(!views[0].isContiguous());
        const before = views.map((x) => contiguous(x));
        const a = attention(views[0], views[1], views[2], null, { causal: true });
        const b = attention(before[0], before[1], before[2], null, { causal: true });
        assertSameBits(a.toArray(), b.toArray(), 'strided vs contiguous');
      });
    });

    it('rejects masks of the wrong shape or dtype and mismatched shapes', () => {
      tidy(() => {
        const q = randn([1, 1, 4, 2]);
        const k = randn([1, 1, 5, 2]);
        const v = randn([1, 1, 5, 3]);
        assert.throws(() => attention(q, k, v, Tensor.ones([4, 5], 'f32')), /mask must be i32 \(Tq, Tk\) = \(4, 5\)/);
        assert.throws(() => attention(q, k, v, Tensor.ones([5, 4], 'i32')), /mask must be i32/);
        assert.throws(() => attention(q, randn([1, 1, 5, 3]), v), /shapes do not fit/);
      });
    });
  });

  it('softmax and logSoftmax stay accurate over the whole exp range on every ISA', () => {
    const info = native.cpuInfo();
    const isas: Array<'portable' | 'avx2' | 'avx512'> = ['portable', ...(info.avx2 ? ['avx2' as const] : []), ...(info.avx512 ? ['avx512' as const] : [])];
    const C = 1001;
    const xs = Float32Array.from({ length: C }, (_, j) => -90 + (180 * j) / (C - 1) + 0.37 * Math.sin(j));
    // float64 reference
    let m = -Infinity;
    for (const x of xs) m = Math.max(m, x);
    let s = 0;
    for (const x of xs) s += Math.exp(x - m);
    const lse = m + Math.log(s);
    try {
      for (const isa of isas) {
        native.setIsa(isa);
        tidy(() => {
          const x = Tensor.from(xs, [1, C]);
          const lp = logSoftmax(x).toArray();
          const p = softmax(x).toArray();
          for (let j = 0; j < C; j++) {
            const want = xs[j] - lse;
            assert.ok(Math.abs(lp[j] - want) <= 2e-5 * Math.max(1, Math.abs(want)), `${isa} logSoftmax[${j}]: ${lp[j]} vs ${want}`);
            const wp = Math.exp(want);
            // Probabilities below f32's normal range may flush; above it, relative accuracy 1e-5.
            if (wp > 1e-37) assert.ok(Math.abs(p[j] - wp) <= 1e-5 * wp, `${isa} softmax[${j}]: ${p[j]} vs ${wp}`);
            else assert.ok(p[j] <= 2e-37, `${isa} softmax[${j}]: ${p[j]} vs ${wp}`);
          }
        });
      }
    } finally {
      native.setIsa('avx512');
    }
  });

  describe('strided inputs and shapes', () => {
    it('softmax, logSoftmax and layerNorm of a transposed view equal those of its contiguous copy', () => {
      tidy(() => {
        const x = randn([33, 7], true);
        const xt = transpose(x);
        const xc = contiguous(xt);
        assertSameBits(softmax(xt).toArray(), softmax(xc).toArray(), 'softmax');
        assertSameBits(logSoftmax(xt).toArray(), logSoftmax(xc).toArray(), 'logSoftmax');
        const gain = randn([33]);
        const bias = randn([33]);
        assertSameBits(layerNorm(xt, gain, bias).toArray(), layerNorm(xc, gain, bias).toArray(), 'layerNorm');
        const y = layerNorm(xt, gain, bias);
        backward(y, randn([7, 33]));
        assert.deepStrictEqual(x.grad!.shape, [33, 7]);
      });
    });

    it('layerNorm rows have mean 0 and variance 1 before gain and bias', () => {
      tidy(() => {
        const x = Tensor.from(Float32Array.from({ length: 3 * 1000 }, () => 100 + 0.01 * rand.normal()), [3, 1000]);
        const y = layerNorm(x, Tensor.ones([1000]), Tensor.zeros([1000]), { eps: 0 }).toArray();
        for (let r = 0; r < 3; r++) {
          let m = 0;
          let s = 0;
          for (let j = 0; j < 1000; j++) m += y[r * 1000 + j] / 1000;
          for (let j = 0; j < 1000; j++) s += (y[r * 1000 + j] - m) ** 2 / 1000;
          assert.ok(Math.abs(m) < 1e-3 && Math.abs(s - 1) < 2e-3, `row ${r}: mean ${m}, var ${s}`);
        }
      });
    });
  });

  it('gives the same bits for any thread count, forward and backward', function () {
    this.timeout(60000);
    const threads0 = native.numThreads();
    const seed = makeRandom(7);
    const values = (n: number) => Float32Array.from({ length: n }, () => seed.normal());
    const intsOf = (n: number, hi: number) => Int32Array.from({ length: n }, () => seed.int(0, hi));
    const [N, V, C, B, H, T, D] = [300, 517, 96, 2, 3, 150, 16];
    const data = {
      x: values(N * V), gx: values(N * V), ln: values(N * C), gln: values(N * C), gain: values(C), bias: values(C),
      table: values(V * C), idx: intsOf(N, V), gemb: values(N * C), tgt: intsOf(N, V), w: values(N),
      q: values(B * H * T * D), k: values(B * H * T * D), v: values(B * H * T * D), go: values(B * H * T * D),
      q1: values(40 * 64), k1: values(300 * 64), v1: values(300 * 64), go1: values(40 * 64),
      mask: Int32Array.from({ length: T * T }, (_, i) => (i % 7 === 0 || (i * 31) % 5 ? 1 : 0)),
    };
    const run = (): Float32Array[] => tidy(() => {
      const leaf = (a: Float32Array, shape: number[]) => {
        const t = Tensor.from(a, shape);
        t.requiresGrad = true;
        return t;
      };
      const out: Float32Array[] = [];
      for (const fn of [softmax, logSoftmax]) {
        const x = leaf(data.x, [N, V]);
        const y = fn(x);
        backward(y, Tensor.from(data.gx, [N, V]));
        out.push(y.toArray() as Float32Array, x.grad!.toArray() as Float32Array);
      }
      const x = leaf(data.ln, [N, C]);
      const gain = leaf(data.gain, [C]);
      const bias = leaf(data.bias, [C]);
      const y = layerNorm(x, gain, bias);
      backward(y, Tensor.from(data.gln, [N, C]));
      out.push(...[y, x.grad!, gain.grad!, bias.grad!].map((t) => t.toArray() as Float32Array));
      const table = leaf(data.table, [V, C]);
      const e = embedding(table, Tensor.from(data.idx, [N], 'i32'));
      backward(e, Tensor.from(data.gemb, [N, C]));
      out.push(e.toArray() as Float32Array, table.grad!.toArray() as Float32Array);
      const logits = leaf(data.x, [N, V]);
      const w = leaf(data.w, [N]);
      const loss = crossEntropy(logits, Tensor.from(data.tgt, [N], 'i32'), w);
      backward(loss);
      out.push(...[loss, logits.grad!, w.grad!].map((t) => t.toArray() as Float32Array));
      for (const masked of [false, true]) {
        const [q, k, v] = [data.q, data.k, data.v].map((a) => leaf(a, [B, H, T, D]));
        const o = attention(q, k, v, masked ? Tensor.from(data.mask, [T, T], 'i32') : null, { causal: !masked });
        backward(o, Tensor.from(data.go, [B, H, T, D]));
        out.push(...[o, q.grad!, k.grad!, v.grad!].map((t) => t.toArray() as Float32Array));
      }
      // One (b, h) and one query block: the kernel's GEMMs run on every thread themselves.
      const [q1, k1, v1] = [data.q1, data.k1, data.v1].map((a) => leaf(a, [1, 1, a.length / 64, 64]));
      const o1 = attention(q1, k1, v1, null, { causal: true });
      backward(o1, Tensor.from(data.go1, [1, 1, 40, 64]));
      out.push(...[o1, q1.grad!, k1.grad!, v1.grad!].map((t) => t.toArray() as Float32Array));
      return out;
    });
    try {
      native.setThreads(1);
      const one = run();
      for (const n of [2, 3, 5]) {
        native.setThreads(n);
        const many = run();
        one.forEach((a, i) => assertSameBits(many[i], a, `output ${i} with ${n} threads`));
      }
    } finally {
      native.setThreads(threads0);
    }
  });

  it('releases every native byte it allocates (errors included)', () => {
    // Warm-up (kernel workspaces and thread-local buffers settle), then nothing may be left behind.
    const step = () => tidy(() => {
      const q = randn([1, 2, 70, 8], true);
      const o = attention(q, randn([1, 2, 70, 8]), randn([1, 2, 70, 8]), null, { causal: true });
      backward(o, randn([1, 2, 70, 8]));
      assert.throws(() => embedding(randn([3, 2]), Tensor.from([3], [1], 'i32')));
      assert.throws(() => crossEntropy(randn([2, 3]), Tensor.from([0, 3], [2], 'i32')));
      q.grad!.dispose();
    });
    step();
    const before = inUse();
    step();
    assert.strictEqual(inUse(), before);
  });
});

describe('argmax', () => {
  const seed = TEST_SEED;
  const r = makeRandom(seed);
  // Plain reference: the first index of the largest value along `axis`, by index arithmetic on the row-major data.
  function argmaxReference(data: Float32Array, shape: number[], axis: number): number[] {
    const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
    const R = shape[axis];
    const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    const out: number[] = [];
    for (let o = 0; o < outer; o++) {
      for (let c = 0; c < inner; c++) {
        let best = 0;
        for (let k = 1; k < R; k++) if (data[(o * R + k) * inner + c] > data[(o * R + best) * inner + c]) best = k;
        out.push(best);
      }
    }
    return out;
  }

  it(`equals the plain reference on fresh random inputs, odd sizes, every axis, ties to the first (seed ${seed})`, () => {
    for (const shape of [[3, 1031, 5, 7], [2, 17, 33], [1, 9], [4097], [5, 3, 1, 2049]]) {
      for (let axis = 0; axis < shape.length; axis++) {
        tidy(() => {
          const n = shape.reduce((a, b) => a * b, 1);
          // a few distinct values, so ties are common along every axis
          const data = Float32Array.from({ length: n }, () => r.int(-4, 5) * 0.5);
          const got = Array.from(argmax(Tensor.from(data, shape), axis).toArray());
          assert.deepStrictEqual(got, argmaxReference(data, shape, axis), `shape (${shape}) axis ${axis} seed ${seed}`);
        });
      }
    }
  });

  it('reads a strided view, and names an empty axis', () => {
    tidy(() => {
      const x = randn([3, 4, 5]);
      const viewed = permute(x, [2, 0, 1]); // (5, 3, 4)
      const want = argmaxReference(contiguous(viewed).toArray() as Float32Array, [5, 3, 4], 1);
      assert.deepStrictEqual(Array.from(argmax(viewed, 1).toArray()), want);
      assert.throws(() => argmax(Tensor.zeros([2, 0, 3]), 1), /argmax over an empty axis of \(2, 0, 3\)/);
    });
  });
});
