// Sparse attention (native/cpu/sparse_attention.cc, src/core/ops/sparse-attention.ts) beyond the op harness (which
// checks it against the float64 dense masked reference with gradchecks on odd grids): the kernel's tile plan covers
// exactly the mask (forward segments and the runs the backward accumulates dk and dv over, each allowed pair once,
// nothing else) on many shapes; forward and gradients equal dense `attention` with denseMask at the paper's sequence
// (256 text + 32x32 image), at prior-emoji's (32 text + 16x16) and at mid sizes; strided (permuted) inputs are read in
// place; 1 and 2 threads give the same bits, with the AVX-512, AVX2 and portable tile kernels; clear errors.
// Key: B batch, H heads, T = Tt + W * W positions (Tt text, W grid side), D head width.
import * as assert from 'node:assert';
import { native, setThreads } from '../../src/core/native';
import { MaskKind, MaskSpec, allowedPairs, denseMask, seqLen } from '../../src/core/models/prior/masks';
import { MASK_KIND_CODE, attention, contiguous, permute, sparseAttention } from '../../src/core/ops';
import { Tensor, backward, tidy } from '../../src/core/tensor';
import { TEST_SEED, makeRandom } from '../harness/random';

type PlanFn = (kind: number, Tt: number, W: number, k: number, fwd: number, bwd: number) =>
  { blocks: number; runs: number; computedPairs: number };
const plan = (native as unknown as { sparseAttentionPlan: PlanFn }).sparseAttentionPlan;

const rand = makeRandom(TEST_SEED + 4242);

function randn(shape: number[], requiresGrad = false): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const t = Tensor.from(Float32Array.from({ length: n }, () => rand.normal()), shape);
  t.requiresGrad = requiresGrad;
  return t;
}

function spec(kind: MaskKind, textLen: number, gridSide: number, convKernel = 3): MaskSpec {
  return { kind, textLen, gridSide, convKernel };
}

function assertSameBits(a: Float32Array | Int32Array, b: Float32Array | Int32Array, what: string): void {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  assert.strictEqual(ua.length, ub.length, `${what}: lengths`);
  for (let i = 0; i < ua.length; i++) assert.strictEqual(ua[i], ub[i], `${what}: element ${i} differs (${a[i]} vs ${b[i]})`);
}

/** got[i * T + j] (how often the plan covers pair (i, j)) equals the mask (0 / 1) everywhere. */
function assertSameCounts(got: Float32Array | Int32Array, want: Float32Array | Int32Array, T: number, what: string): void {
  assert.strictEqual(got.length, want.length, `${what}: lengths`);
  for (let x = 0; x < got.length; x++) {
    if (got[x] !== want[x]) {
      assert.fail(`${what}: query ${Math.floor(x / T)}, key ${x % T}: covered ${got[x]} times, mask says ${want[x]}`);
    }
  }
}

/** Max of |got - want| / (atol + rtol |want|); <= 1 passes. */
function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string, rtol = 1e-4, atol = 1e-5): void {
  assert.strictEqual(got.length, want.length, `${what}: lengths`);
  for (let i = 0; i < got.length; i++) {
    const err = Math.abs(got[i] - want[i]);
    assert.ok(err <= atol + rtol * Math.abs(want[i]), `${what}: element ${i}: ${got[i]} vs ${want[i]} (seed ${TEST_SEED})`);
  }
}

/** Forward and the three gradients of sparse and of dense masked attention on the same inputs. */
function bothWays(s: MaskSpec, B: number, H: number, D: number, Dv: number): { sparse: Float32Array[]; dense: Float32Array[] } {
  return tidy(() => {
    const T = seqLen(s);
    const q = randn([B, H, T, D], true);
    const k = randn([B, H, T, D], true);
    const v = randn([B, H, T, Dv], true);
    const g = randn([B, H, T, Dv]);
    const run = (f: () => Tensor): Float32Array[] => {
      for (const t of [q, k, v]) {
        t.grad?.dispose();
        t.grad = null;
      }
      const out = f();
      backward(out, g);
      return [out, q.grad!, k.grad!, v.grad!].map((t) => t.toArray() as Float32Array);
    };
    const sparse = run(() => sparseAttention(q, k, v, s));
    const mask = denseMask(s);
    const dense = run(() => attention(q, k, v, mask));
    return { sparse, dense };
  });
}

describe('sparse attention', () => {
  it('the tile plan covers exactly the mask, forward and backward, on many shapes', () => {
    const specs: MaskSpec[] = [];
    for (const kind of ['row', 'column', 'conv'] as MaskKind[]) {
      for (const Tt of [0, 1, 6, 64, 70]) {
        for (const W of [1, 2, 3, 4, 5, 9, 17, 33]) {
          const ks = kind === 'conv' ? [1, 3, 5, 11, 2 * W + 1] : [1];
          for (const k of ks) if (Tt + W * W <= 1200) specs.push(spec(kind, Tt, W, k));
        }
      }
    }
    specs.push(spec('row', 256, 32), spec('column', 256, 32), spec('conv', 256, 32, 11));
    for (const s of specs) {
      const T = seqLen(s);
      tidy(() => {
        const fwd = Tensor.empty([T, T], 'i32');
        const bwd = Tensor.empty([T, T], 'i32');
        const info = plan(MASK_KIND_CODE[s.kind], s.textLen, s.gridSide, s.convKernel, fwd.address, bwd.address);
        const want = denseMask(s).toArray();
        const what = `${s.kind} Tt=${s.textLen} W=${s.gridSide} k=${s.convKernel}`;
        assertSameCounts(fwd.toArray(), want, T, `${what}: forward tiles`);
        assertSameCounts(bwd.toArray(), want, T, `${what}: backward runs`);
        assert.ok(info.computedPairs >= allowedPairs(s), what);
      });
    }
  });

  it('computes far fewer pairs than the causal triangle at 256 text + 32x32 image', () => {
    // The work the plan does (pairs inside its tiles) against the allowed pairs and the causal triangle (819840).
    const causal = (1280 * 1281) / 2;
    for (const s of [spec('row', 256, 32), spec('column', 256, 32), spec('conv', 256, 32, 11)]) {
      const T = seqLen(s);
      tidy(() => {
        const fwd = Tensor.empty([T, T], 'i32');
        const bwd = Tensor.empty([T, T], 'i32');
        const info = plan(MASK_KIND_CODE[s.kind], s.textLen, s.gridSide, s.convKernel, fwd.address, bwd.address);
        const allowed = allowedPairs(s);
        assert.ok(info.computedPairs < 1.5 * allowed, `${s.kind}: ${info.computedPairs} computed vs ${allowed} allowed`);
        assert.ok(info.computedPairs < 0.6 * causal, `${s.kind}: ${info.computedPairs} computed vs ${causal} causal`);
      });
    }
  });

  it('equals dense masked attention, forward and gradients, at mid sizes and at 256 text + 32x32 image', function () {
    this.timeout(120000);
    const cases: Array<[MaskSpec, number[]]> = [
      [spec('row', 40, 12), [2, 2, 16, 12]],
      [spec('column', 40, 12), [2, 2, 16, 12]],
      [spec('conv', 40, 12, 5), [2, 2, 16, 12]],
      [spec('conv', 3, 35, 11), [1, 1, 8, 8]],
      [spec('column', 5, 34), [1, 1, 8, 8]],
      [spec('row', 256, 32), [1, 1, 64, 64]],
      [spec('column', 256, 32), [1, 1, 64, 64]],
      [spec('conv', 256, 32, 11), [1, 1, 64, 64]],
      // configs/prior-emoji.yaml: 32 text + 16x16, heads of 32, conv k5.
      [spec('row', 32, 16), [2, 2, 32, 32]],
      [spec('column', 32, 16), [2, 2, 32, 32]],
      [spec('conv', 32, 16, 5), [2, 2, 32, 32]],
    ];
    for (const [s, [B, H, D, Dv]] of cases) {
      const { sparse, dense } = bothWays(s, B, H, D, Dv);
      const what = `${s.kind} Tt=${s.textLen} W=${s.gridSide} k=${s.convKernel}`;
      ['out', 'dq', 'dk', 'dv'].forEach((name, i) => assertClose(sparse[i], dense[i], `${what} ${name}`, 1e-4, 2e-5));
    }
  });

  it('gives the same bits with 1 and 2 threads, with each ISA\'s tile kernels', () => {
    const prev = native.numThreads();
    const info = native.cpuInfo();
    const isas = (['avx512', 'avx2', 'portable'] as const).filter((isa) => isa === 'portable' || info[isa]);
    try {
      for (const isa of isas) {
        native.setIsa(isa);
        const specs = [spec('row', 70, 9), spec('column', 70, 9), spec('conv', 70, 9, 5), spec('conv', 32, 16, 5)];
        for (const s of specs) {
          setThreads(1);
          const rand1 = makeRandom(7);
          const one = tidy(() => runOnce(s, rand1));
          setThreads(2);
          const rand2 = makeRandom(7);
          const two = tidy(() => runOnce(s, rand2));
          one.forEach((a, i) => assertSameBits(a, two[i], `${isa} ${s.kind} Tt=${s.textLen} output ${i}`));
        }
      }
    } finally {
      native.setIsa('avx512');  // the cap back at its maximum: the best ISA the CPU has
      setThreads(prev);
    }
  });

  it('reads permuted (B, T, H, D) views in place and matches contiguous inputs', () => {
    tidy(() => {
      const s = spec('column', 7, 5);
      const [B, T, H, D] = [2, seqLen(s), 3, 4];
      const qkv = randn([B, T, H, 3 * D]);
      const views = [0, 1, 2].map((i) => permute(qkv.viewAs([B, T, H, D], qkv.strides, qkv.offset + i * D), [0, 2, 1, 3]));
      assert.ok(!views[0].isContiguous());
      const before = views.map((x) => contiguous(x));
      const a = sparseAttention(views[0], views[1], views[2], s);
      const b = sparseAttention(before[0], before[1], before[2], s);
      assertSameBits(a.toArray(), b.toArray(), 'strided vs contiguous');
    });
  });

  it('rejects a sequence of the wrong length, bad specs and mismatched shapes', () => {
    tidy(() => {
      const q = randn([1, 1, 10, 4]);
      assert.throws(() => sparseAttention(q, q, q, spec('row', 2, 3)), /11 positions|for 11 \(2 text \+ 3x3 image\)/);
      const q11 = randn([1, 1, 11, 4]);
      assert.throws(() => sparseAttention(q11, q11, q11, spec('conv', 2, 3, 2)), /convKernel must be an odd integer/);
      assert.throws(() => sparseAttention(q11, randn([1, 1, 11, 3]), q11, spec('row', 2, 3)), /shapes do not fit/);
    });
  });
});

function runOnce(s: MaskSpec, r: ReturnType<typeof makeRandom>): Float32Array[] {
  const T = seqLen(s);
  const mk = (shape: number[], grad: boolean): Tensor => {
    const n = shape.reduce((a, b) => a * b, 1);
    const t = Tensor.from(Float32Array.from({ length: n }, () => r.normal()), shape);
    t.requiresGrad = grad;
    return t;
  };
  const q = mk([2, 3, T, 16], true);
  const k = mk([2, 3, T, 16], true);
  const v = mk([2, 3, T, 8], true);
  const out = sparseAttention(q, k, v, s);
  backward(out, mk([2, 3, T, 8], false));
  return [out, q.grad!, k.grad!, v.grad!].map((t) => t.toArray() as Float32Array);
}
