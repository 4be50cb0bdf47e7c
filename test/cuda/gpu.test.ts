// The CUDA kernels that are not ops, against the CPU backend's kernel of the same name on the same fresh random inputs
// (the ops themselves run on cuda:0 in the op harness, test/ops.test.ts): GEMMs with transposes, padded leading
// dimensions, batch strides and a broadcast operand; AdamW; scale-and-filter with its count; the block-sparse
// attention forward and backward through the backend's adapters (strided q, an unwanted gradient), at the prior's
// full size (256 text + 32 x 32 image, the three masks) with DALLE_CUDA_CHECK_BIG=1. Needs a GPU; skips with the
// reason elsewhere.
import * as assert from 'node:assert';
import { backendFor, cpuBackend } from '../../src/core/backend';
import { cudaStatus } from '../../src/core/cuda';
import { MaskKind, seqLen } from '../../src/core/models/prior/masks';
import { MASK_KIND_CODE } from '../../src/core/ops/sparse-attention';
import { makeRandom, TEST_SEED } from '../harness/random';
import { assertClose, Twin } from './twin';

describe(`CUDA kernels outside ops vs the CPU backend (needs a GPU; seed ${TEST_SEED})`, function () {
  this.timeout(600000);
  const rand = makeRandom(TEST_SEED);
  const normal = (n: number, scale = 1): Float32Array => Float32Array.from({ length: n }, () => scale * rand.normal());
  let twin: Twin;

  before(function () {
    const s = cudaStatus();
    if (!s.available) {
      console.log(`      (skipped: ${s.reason})`);
      this.skip();
    }
    twin = new Twin(cpuBackend, backendFor('cuda:0'));
  });
  afterEach(() => twin?.free());

  // [transA, transB, M, N, K, batch, padding of the leading dimensions, B broadcast over the batch]
  const gemms: Array<[boolean, boolean, number, number, number, number, number, boolean]> = [
    [false, false, 67, 45, 33, 1, 0, false], [true, false, 31, 64, 17, 3, 3, false], [false, true, 8, 129, 96, 2, 1, true],
    [true, true, 64, 64, 64, 1, 5, false],
  ];
  for (const [tA, tB, M, N, K, batch, pad, shareB] of gemms) {
    it(`sgemmBatched ${tA ? 'T' : 'N'}${tB ? 'T' : 'N'} ${batch} x (${M}, ${N}, ${K}), lead +${pad}${shareB ? ', B broadcast' : ''}`, () => {
      const [lda, ldb, ldc] = [(tA ? M : K) + pad, (tB ? K : N) + pad, N + pad];
      const [sA, sB, sC] = [(tA ? K : M) * lda, shareB ? 0 : (tB ? N : K) * ldb, M * ldc];
      const a = twin.put(normal(batch * sA));
      const b = twin.put(normal(Math.max(sB * batch, (tB ? N : K) * ldb)));
      const c = twin.put(normal(batch * sC));
      twin.call('sgemmBatched', (at) => [batch, tA, tB, M, N, K, 0.75, at(a), lda, sA, at(b), ldb, sB, 0.5, at(c), ldc, sC]);
      assertClose('C', twin.read(c, batch * sC), 1e-5 * Math.sqrt(K), 1e-4);
    });
  }

  it('gemmBf16 (bf16 operands, f32 C) NT and TN', () => {
    const bf16 = (n: number): Uint16Array => Uint16Array.from(normal(n), (v) => new Uint32Array(Float32Array.of(v).buffer)[0] >>> 16);
    for (const [tA, tB, M, N, K] of [[false, true, 37, 29, 70], [true, false, 16, 48, 33]] as Array<[boolean, boolean, number, number, number]>) {
      const [lda, ldb] = [tA ? M : K, tB ? K : N];
      const a = twin.put(bf16(M * K));
      const b = twin.put(bf16(K * N));
      const c = twin.put(normal(M * N));
      twin.call('gemmBf16', (at) => [tA, tB, M, N, K, 1.25, at(a), lda, at(b), ldb, 0.5, at(c), N]);
      assertClose(`C ${tA ? 'T' : 'N'}${tB ? 'T' : 'N'}`, twin.read(c, M * N), 1e-5 * Math.sqrt(K), 1e-4);
    }
  });

  it('adamw: parameters and both moments', () => {
    const n = 100003;
    const p = twin.put(normal(n));
    const g = twin.put(normal(n));
    const m = twin.put(normal(n, 0.1));
    const v = twin.put(Float32Array.from(normal(n, 0.1), (x) => x * x));
    twin.call('adamw', (at) => [n, at(p), at(g), at(m), at(v), 4.5e-4, 0.9, 0.96, 1e-8, 0.045, 0.25, 7]);
    for (const [what, pair] of [['param', p], ['m', m], ['v', v]] as const) assertClose(what, twin.read(pair, n), 1e-7, 1e-6);
  });

  it('scaleFilter: the scaled values, non-finite products zeroed and counted', () => {
    const n = 100003;
    const x = normal(n, 1000);
    [x[5], x[77], x[n - 1]] = [Infinity, NaN, -Infinity];
    x[9] = 3e38; // finite, but not once scaled by 8
    const pair = twin.put(x);
    const [cpuCount, gpuCount] = twin.call('scaleFilter', (at) => [n, at(pair), at(pair), 8]);
    assert.strictEqual(gpuCount, cpuCount);
    assertClose('y', twin.read(pair, n), 0, 0);
  });

  // [kind, textLen, gridSide, convKernel, B, H, D, Dv, q stored heads-inside-positions (strided)]
  const attention: Array<[MaskKind, number, number, number, number, number, number, number, boolean]> = [
    ['row', 5, 7, 1, 2, 3, 40, 24, true], ['column', 3, 9, 1, 1, 2, 64, 64, false], ['conv', 7, 11, 5, 2, 1, 33, 64, true],
    ['conv', 1, 3, 11, 1, 1, 8, 8, false],
  ];
  if (process.env.DALLE_CUDA_CHECK_BIG === '1') {
    for (const [kind, k] of [['row', 1], ['column', 1], ['conv', 11]] as Array<[MaskKind, number]>) attention.push([kind, 256, 32, k, 1, 2, 64, 64, false]);
  }
  for (const [kind, textLen, gridSide, convKernel, B, H, D, Dv, strided] of attention) {
    it(`sparse attention ${kind}${kind === 'conv' ? convKernel : ''}, text ${textLen} + ${gridSide}x${gridSide}, B ${B} H ${H} D ${D} Dv ${Dv}${strided ? ', strided q' : ''}: forward and backward`, () => {
      const T = seqLen({ kind, textLen, gridSide, convKernel });
      // q as (B, T, H, D) in memory, read as (B, H, T, D): strides of B, H, T.
      const qs = strided ? [T * H * D, D, H * D] : [H * T * D, T * D, D];
      const ks = [H * T * D, T * D, D];
      const vs = [H * T * Dv, T * Dv, Dv];
      const [q, k, v, dO] = [twin.put(normal(B * H * T * D)), twin.put(normal(B * H * T * D)), twin.put(normal(B * H * T * Dv)), twin.put(normal(B * H * T * Dv))];
      const out = twin.zeros(B * H * T * Dv * 4);
      const lse = twin.zeros(B * H * T * 4);
      const spec = [MASK_KIND_CODE[kind], textLen, gridSide, convKernel, B, H, D, Dv, 1 / Math.sqrt(D)];
      twin.call('sparseAttentionForward', (at) => [at(q), qs, at(k), ks, at(v), vs, at(out), at(lse), ...spec]);
      assertClose('out', twin.read(out, B * H * T * Dv), 1e-5, 1e-4);
      assertClose('lse', twin.read(lse, B * H * T), 1e-4, 1e-4);
      // dk unwanted (null) in the strided cases: the adapter's workspace path.
      const [dq, dk, dv] = [twin.zeros(B * H * T * D * 4), strided ? null : twin.zeros(B * H * T * D * 4), twin.zeros(B * H * T * Dv * 4)];
      twin.call('sparseAttentionBackward', (at) => [at(q), qs, at(k), ks, at(v), vs, at(dO), vs, at(lse), at(dq), at(dk), at(dv), ...spec]);
      assertClose('dq', twin.read(dq, B * H * T * D), 1e-5, 1e-4);
      if (dk) assertClose('dk', twin.read(dk, B * H * T * D), 1e-5, 1e-4);
      assertClose('dv', twin.read(dv, B * H * T * Dv), 1e-5, 1e-4);
    });
  }
});
