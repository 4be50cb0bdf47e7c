// The CUDA addon's fp16 / bf16 block-sparse attention (tensor cores: native/cuda/attention_tc_kernels.cuh) and its
// KV-cache decode kernel (attentionDecode: native/cuda/attention_decode_kernels.cuh) against the CPU's dense attention
// (attentionForward / attentionBackward with the mask of masks.ts) on the same values: the 16-bit inputs widened to
// f32 for the CPU. Needs a GPU; skips with the reason elsewhere (the same device code is emulated on every machine:
// attention-tc-emu.test.ts, attention-decode-emu.test.ts).
import { backendKernel, cpuBackend } from '../../src/core/backend';
import { CudaAddon, CudaDType, cudaAddon, cudaStatus } from '../../src/core/cuda';
import { denseMask, isAllowed, MaskKind, MaskSpec, seqLen } from '../../src/core/models/prior/masks';
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from '../../src/core/tensor/dtype';
import { makeRandom, TEST_SEED } from '../harness/random';
import { assertClose } from './twin';

type Fn = (...args: unknown[]) => unknown;
type Half = 'f16' | 'bf16';

const toBits: Record<Half, (x: number) => number> = { f16: f32ToF16Bits, bf16: f32ToBf16Bits };
const fromBits: Record<Half, (h: number) => number> = { f16: f16BitsToF32, bf16: bf16BitsToF32 };
// Elementwise atol, rtol of the 16-bit outputs against the CPU's fp32 (P and dS are rounded to the input type on the
// GPU; the emulation of these cases stays below 0.3 of the forward's bound and 0.2 of the gradients').
const TOL: Record<CudaDType, [number, number]> = { f32: [1e-5, 1e-4], f16: [2e-3, 2e-3], bf16: [1e-2, 1.6e-2] };
const GRAD_SLACK = 4;

describe(`CUDA tensor-core attention and KV-cache decode vs the CPU (needs a GPU; seed ${TEST_SEED})`, function () {
  this.timeout(600000);
  const rand = makeRandom(TEST_SEED);
  let cuda: CudaAddon;
  const host: Array<[number, number]> = [];
  const device: Array<[number, number]> = [];

  before(function () {
    const s = cudaStatus();
    if (!s.available) {
      console.log(`      (skipped: ${s.reason})`);
      this.skip();
    }
    cuda = cudaAddon();
  });
  afterEach(() => {
    for (const [a, n] of host.splice(0)) cpuBackend.free(a, n);
    for (const [a, n] of device.splice(0)) cuda.free(a, n);
  });

  const onHost = (data: Float32Array | Int32Array): number => {
    const bytes = Math.max(data.byteLength, 4);
    const a = cpuBackend.alloc(bytes);
    cpuBackend.copyIn(a, data);
    host.push([a, bytes]);
    return a;
  };
  const onDevice = (data: Float32Array | Uint16Array): number => {
    const bytes = Math.max(data.byteLength, 4);
    const a = cuda.alloc(bytes);
    cuda.copyIn(a, data);
    device.push([a, bytes]);
    return a;
  };
  const readHost = (a: number, n: number): Float32Array => {
    const out = new Float32Array(n);
    cpuBackend.copyOut(a, out);
    return out;
  };
  const readDevice = (a: number, n: number, dtype: CudaDType): Float32Array => {
    if (dtype === 'f32') {
      const out = new Float32Array(n);
      cuda.copyOut(out, a);
      return out;
    }
    const bits = new Uint16Array(n);
    cuda.copyOut(bits, a);
    return Float32Array.from(bits, fromBits[dtype]);
  };
  /** n normal values in dtype: the device's encoding and the same values in f32 for the CPU. */
  const values = (n: number, dtype: CudaDType): { enc: Float32Array | Uint16Array; f32: Float32Array } => {
    const x = Float32Array.from({ length: n }, () => rand.normal());
    if (dtype === 'f32') return { enc: x, f32: x };
    const enc = Uint16Array.from(x, toBits[dtype]);
    return { enc, f32: Float32Array.from(enc, fromBits[dtype]) };
  };
  const cpu = (name: string): Fn => backendKernel<Fn>(cpuBackend, name);

  // [kind, textLen, gridSide, convKernel, B, H, D, Dv]
  const cases: Array<[MaskKind, number, number, number, number, number, number, number]> = [
    ['row', 5, 7, 1, 2, 3, 64, 64], ['column', 3, 9, 1, 1, 2, 64, 48], ['conv', 65, 8, 5, 1, 2, 64, 64],
    ['conv', 7, 11, 5, 2, 1, 33, 64],
  ];
  if (process.env.DALLE_CUDA_CHECK_BIG === '1') {
    for (const [kind, k] of [['row', 1], ['column', 1], ['conv', 11]] as Array<[MaskKind, number]>) cases.push([kind, 256, 32, k, 1, 2, 64, 64]);
  }

  for (const dtype of ['f16', 'bf16'] as Half[]) {
    for (const [kind, textLen, gridSide, convKernel, B, H, D, Dv] of cases) {
      it(`${dtype} attention ${kind}${kind === 'conv' ? convKernel : ''}, text ${textLen} + ${gridSide}x${gridSide}, B ${B} H ${H} D ${D} Dv ${Dv}: forward and backward on tensor cores`, () => {
        const spec: MaskSpec = { kind, textLen, gridSide, convKernel };
        const T = seqLen(spec);
        const scale = 1 / Math.sqrt(D);
        const [q, k, v, dO] = [values(B * H * T * D, dtype), values(B * H * T * D, dtype), values(B * H * T * Dv, dtype), values(B * H * T * Dv, dtype)];
        const mask = denseMask(spec);
        try {
          const qs = [H * T * D, T * D, D];
          const vs = [H * T * Dv, T * Dv, Dv];
          const [hq, hk, hv, hdo] = [onHost(q.f32), onHost(k.f32), onHost(v.f32), onHost(dO.f32)];
          const [ho, hl] = [onHost(new Float32Array(B * H * T * Dv)), onHost(new Float32Array(B * H * T))];
          cpu('attentionForward')(hq, qs, hk, qs, hv, vs, mask.address, ho, hl, B, H, T, T, D, Dv, scale, false);
          const [hdq, hdk, hdv] = [onHost(new Float32Array(B * H * T * D)), onHost(new Float32Array(B * H * T * D)), onHost(new Float32Array(B * H * T * Dv))];
          cpu('attentionBackward')(hq, qs, hk, qs, hv, vs, mask.address, hdo, vs, hl, hdq, hdk, hdv, B, H, T, T, D, Dv, scale, false);

          const [dq, dk, dv, ddo] = [onDevice(q.enc), onDevice(k.enc), onDevice(v.enc), onDevice(dO.enc)];
          const [dout, dlse] = [onDevice(new Uint16Array(B * H * T * Dv)), onDevice(new Float32Array(B * H * T))];
          cuda.blockSparseAttentionForward(dtype, kind, textLen, gridSide, convKernel, dq, dk, dv, dout, dlse, B, H, D, Dv, scale);
          const [gq, gk, gv] = [onDevice(new Uint16Array(B * H * T * D)), onDevice(new Uint16Array(B * H * T * D)), onDevice(new Uint16Array(B * H * T * Dv))];
          const delta = onDevice(new Float32Array(B * H * T));
          cuda.blockSparseAttentionBackward(dtype, kind, textLen, gridSide, convKernel, dq, dk, dv, dout, ddo, dlse, gq, gk, gv, delta, B, H, D, Dv, scale);
          cuda.synchronize();

          const [at, rt] = TOL[dtype];
          assertClose('out', [readHost(ho, B * H * T * Dv), readDevice(dout, B * H * T * Dv, dtype)], at, rt);
          assertClose('lse', [readHost(hl, B * H * T), readDevice(dlse, B * H * T, 'f32')], 1e-4, 1e-4);
          assertClose('dq', [readHost(hdq, B * H * T * D), readDevice(gq, B * H * T * D, dtype)], at * GRAD_SLACK, rt * GRAD_SLACK);
          assertClose('dk', [readHost(hdk, B * H * T * D), readDevice(gk, B * H * T * D, dtype)], at * GRAD_SLACK, rt * GRAD_SLACK);
          assertClose('dv', [readHost(hdv, B * H * T * Dv), readDevice(gv, B * H * T * Dv, dtype)], at * GRAD_SLACK, rt * GRAD_SLACK);
        } finally {
          mask.dispose();
        }
      });
    }
  }

  // The decode step: the query of position pos against a cache (B + 1, H, T + 3, D) filled with every position's
  // keys and values; the CPU sees keys 0..pos with the mask's row pos.
  for (const dtype of ['f32', 'f16'] as CudaDType[]) {
    for (const [kind, textLen, gridSide, convKernel, B, H, D, Dv] of cases.slice(0, 3)) {
      it(`${dtype} attentionDecode ${kind}, text ${textLen} + ${gridSide}x${gridSide}, B ${B} H ${H}: text, first image and last positions`, () => {
        const spec: MaskSpec = { kind, textLen, gridSide, convKernel };
        const T = seqLen(spec);
        const [Bc, Tc] = [B + 1, T + 3];
        const scale = 1 / Math.sqrt(D);
        const k = values(Bc * H * Tc * D, dtype);
        const v = values(Bc * H * Tc * Dv, dtype);
        const [dk, dv] = [onDevice(k.enc), onDevice(v.enc)];
        const [hk, hv] = [onHost(k.f32), onHost(v.f32)];
        const ks = [H * Tc * D, Tc * D, D];
        const vs = [H * Tc * Dv, Tc * Dv, Dv];
        for (const pos of [textLen - 1, textLen, textLen + gridSide, T - 1]) {
          const q = values(B * H * D, dtype); // (B, H, 1, D)
          const qs = [H * D, D, D];
          const row = onHost(Int32Array.from({ length: pos + 1 }, (_, j) => (isAllowed(spec, pos, j) ? 1 : 0)));
          const [ho, hl] = [onHost(new Float32Array(B * H * Dv)), onHost(new Float32Array(B * H))];
          cpu('attentionForward')(onHost(q.f32), qs, hk, ks, hv, vs, row, ho, hl, B, H, 1, pos + 1, D, Dv, scale, false);
          const dout = onDevice(dtype === 'f32' ? new Float32Array(B * H * Dv) : new Uint16Array(B * H * Dv));
          const dlse = onDevice(new Float32Array(B * H));
          cuda.attentionDecode(dtype, onDevice(q.enc), qs, dk, ks, dv, vs, dout, dlse, kind, textLen, gridSide, convKernel, B, H, pos, D, Dv, scale);
          cuda.synchronize();
          // Only the output's rounding separates f16 from f32 here (fp32 arithmetic on exact 16-bit inputs).
          const [at, rt] = dtype === 'f32' ? TOL.f32 : [1e-4, 1 / 1024];
          assertClose(`out at ${pos}`, [readHost(ho, B * H * Dv), readDevice(dout, B * H * Dv, dtype)], at, rt);
          assertClose(`lse at ${pos}`, [readHost(hl, B * H), readDevice(dlse, B * H, 'f32')], 1e-5, 1e-4);
        }
      });
    }
  }
});
