// The GPU-side comparison harness: runs every CUDA op (native/cuda) and its CPU reference (the main addon's kernel of
// the same name, native/cpu) on the same fresh random inputs, odd sizes included, and reports the largest error
// relative to a tolerance. Needs a CUDA device; test/cuda/gpu.test.ts runs it under mocha (skipping without one) and
// bench/cuda-check.sh runs it from the command line. 16-bit cases round the inputs to the 16-bit type first, so the
// CPU computes on exactly the values the GPU sees (in fp32); the tolerance then covers fp32-vs-fp32 summation order
// plus the rounding of the 16-bit outputs.
import { kernel, native } from '../native';
import { MaskKind, MaskSpec, denseMask, seqLen } from '../models/prior/masks';
import { CudaAddon, CudaDType } from './index';

export interface CheckResult {
  op: string;
  what: string;
  /** max over elements of |gpu - cpu| / (atol + rtol * |cpu|): <= 1 passes. */
  worst: number;
  maxAbs: number;
  ok: boolean;
}

type Arr = Float32Array | Int32Array | Uint16Array;

/** Deterministic normal random numbers (mulberry32 + Box-Muller). */
class Rng {
  constructor(private s: number) {}
  uniform(): number {
    this.s = (this.s + 0x6d2b79f5) | 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  normal(n: number, scale = 1): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const u = Math.max(this.uniform(), 1e-12);
      out[i] = scale * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.uniform());
    }
    return out;
  }
  ints(n: number, hi: number): Int32Array {
    return Int32Array.from({ length: n }, () => Math.floor(this.uniform() * hi));
  }
}

/** Host and device buffers, freed together at the end of a check. */
class Buffers {
  private host: Array<[number, number]> = [];
  private dev: number[] = [];
  constructor(private cuda: CudaAddon) {}
  /** A host (main addon) copy of data; returns its address. */
  h(data: Arr): number {
    const a = native.alloc(Math.max(data.byteLength, 4));
    this.host.push([a, Math.max(data.byteLength, 4)]);
    native.copyIn(a, data);
    return a;
  }
  hz(n: number, bytesPer = 4): number {
    return this.h(new Uint8Array(n * bytesPer) as unknown as Arr);
  }
  /** A device copy of data. */
  d(data: Arr): number {
    const a = this.cuda.malloc(Math.max(data.byteLength, 4));
    this.dev.push(a);
    if (data.byteLength > 0) this.cuda.copyIn(a, data);
    return a;
  }
  dz(n: number, bytesPer = 4): number {
    const a = this.cuda.malloc(Math.max(n * bytesPer, 4));
    this.dev.push(a);
    this.cuda.memset(a, 0, Math.max(n * bytesPer, 4));
    return a;
  }
  readH(a: number, n: number): Float32Array {
    const out = new Float32Array(n);
    native.copyOut(a, out);
    return out;
  }
  readD(a: number, n: number, dtype: CudaDType = 'f32'): Float32Array {
    if (dtype === 'f32') {
      const out = new Float32Array(n);
      this.cuda.copyOut(out, a);
      return out;
    }
    const bits = new Uint16Array(n);
    this.cuda.copyOut(bits, a);
    return widen(bits, dtype);
  }
  free(): void {
    for (const [a, b] of this.host) native.free(a, b);
    for (const a of this.dev) this.cuda.free(a);
    this.host = [];
    this.dev = [];
  }
}

/** f32 -> 16-bit bit patterns through the CPU addon's cast (round to nearest even). */
function narrow(x: Float32Array, dtype: 'f16' | 'bf16'): Uint16Array {
  const src = native.alloc(x.byteLength);
  const dst = native.alloc(x.length * 2);
  try {
    native.copyIn(src, x);
    native.cast(dst, dtype, src, 'f32', x.length);
    const out = new Uint16Array(x.length);
    native.copyOut(dst, out);
    return out;
  } finally {
    native.free(src, x.byteLength);
    native.free(dst, x.length * 2);
  }
}

function widen(bits: Uint16Array, dtype: 'f16' | 'bf16'): Float32Array {
  const src = native.alloc(bits.byteLength);
  const dst = native.alloc(bits.length * 4);
  try {
    native.copyIn(src, bits);
    native.cast(dst, 'f32', src, dtype, bits.length);
    const out = new Float32Array(bits.length);
    native.copyOut(dst, out);
    return out;
  } finally {
    native.free(src, bits.byteLength);
    native.free(dst, bits.length * 4);
  }
}

/** x as the GPU will see it (rounded for 16-bit types) and its device-ready encoding. */
function asType(x: Float32Array, dtype: CudaDType): { values: Float32Array; encoded: Arr } {
  if (dtype === 'f32') return { values: x, encoded: x };
  const bits = narrow(x, dtype);
  return { values: widen(bits, dtype), encoded: bits };
}

function compare(op: string, what: string, gpu: Float32Array, cpu: Float32Array, atol: number, rtol: number): CheckResult {
  let worst = 0;
  let maxAbs = 0;
  if (gpu.length !== cpu.length) return { op, what: `${what}: length ${gpu.length} vs ${cpu.length}`, worst: Infinity, maxAbs: Infinity, ok: false };
  for (let i = 0; i < cpu.length; i++) {
    const a = gpu[i];
    const b = cpu[i];
    if (Number.isNaN(a) || Number.isNaN(b)) {
      if (!(Number.isNaN(a) && Number.isNaN(b))) worst = Infinity;
      continue;
    }
    if (a === b) continue;
    const d = Math.abs(a - b);
    maxAbs = Math.max(maxAbs, d);
    worst = Math.max(worst, d / (atol + rtol * Math.abs(b)));
  }
  return { op, what, worst, maxAbs, ok: worst <= 1 };
}

/** Tolerances per output type: fp32 summation-order noise, or half an ulp of the 16-bit output plus that. */
function tol(dtype: CudaDType): [number, number] {
  return dtype === 'f32' ? [1e-5, 1e-4] : dtype === 'f16' ? [2e-3, 2e-3] : [1e-2, 1.6e-2];
}

type Fn = (...args: unknown[]) => unknown;
const cpu = (name: string): Fn => kernel<Fn>(name);

function checkGemm(cuda: CudaAddon, rng: Rng, out: CheckResult[]): void {
  for (const dtype of ['f32', 'f16', 'bf16'] as CudaDType[]) {
    for (const [ta, tb, M, N, K, batch] of [[false, false, 67, 45, 33, 1], [true, false, 31, 64, 17, 3], [false, true, 8, 129, 96, 2], [true, true, 64, 64, 64, 1]] as Array<[boolean, boolean, number, number, number, number]>) {
      const bufs = new Buffers(cuda);
      try {
        const a = asType(rng.normal(batch * M * K), dtype);
        const b = asType(rng.normal(batch * K * N), dtype);
        const c0 = asType(rng.normal(batch * M * N), dtype);
        const lda = ta ? M : K;
        const ldb = tb ? K : N;
        const hc = bufs.h(c0.values);
        cpu('sgemmBatched')(batch, ta, tb, M, N, K, 0.75, bufs.h(a.values), lda, M * K, bufs.h(b.values), ldb, K * N, 0.5, hc, N, M * N);
        const dc = bufs.d(c0.encoded);
        cuda.gemm(dtype, ta, tb, M, N, K, 0.75, bufs.d(a.encoded), lda, M * K, bufs.d(b.encoded), ldb, K * N, 0.5, dc, N, M * N, batch, false);
        const [at, rt] = tol(dtype);
        out.push(compare('gemm', `${dtype} ${ta ? 'T' : 'N'}${tb ? 'T' : 'N'} ${batch}x(${M}, ${N}, ${K})`, bufs.readD(dc, batch * M * N, dtype), bufs.readH(hc, batch * M * N), at * Math.sqrt(K), rt));
      } finally {
        bufs.free();
      }
    }
  }
}

function checkAttention(cuda: CudaAddon, rng: Rng, out: CheckResult[], big: boolean): void {
  const cases: Array<[MaskKind, number, number, number, number, number, number, number]> = [
    // kind, textLen, gridSide, convKernel, B, H, D, Dv
    ['row', 5, 7, 1, 2, 3, 40, 24],
    ['column', 3, 9, 1, 1, 2, 64, 64],
    ['conv', 7, 11, 5, 2, 1, 33, 64],
    ['conv', 1, 3, 11, 1, 1, 8, 8],
  ];
  if (big) for (const [kind, k] of [['row', 1], ['column', 1], ['conv', 11]] as Array<[MaskKind, number]>) cases.push([kind, 256, 32, k, 1, 2, 64, 64]);
  for (const dtype of ['f32', 'f16', 'bf16'] as CudaDType[]) {
    for (const [kind, textLen, gridSide, convKernel, B, H, D, Dv] of cases) {
      const spec: MaskSpec = { kind, textLen, gridSide, convKernel };
      const T = seqLen(spec);
      const what = `${dtype} ${kind}${kind === 'conv' ? convKernel : ''} text ${textLen} grid ${gridSide} B ${B} H ${H} D ${D} Dv ${Dv}`;
      const bufs = new Buffers(cuda);
      const mask = denseMask(spec);
      try {
        const q = asType(rng.normal(B * H * T * D), dtype);
        const k = asType(rng.normal(B * H * T * D), dtype);
        const v = asType(rng.normal(B * H * T * Dv), dtype);
        const dO = asType(rng.normal(B * H * T * Dv), dtype);
        const scale = 1 / Math.sqrt(D);
        const qs = [H * T * D, T * D, D];
        const vs = [H * T * Dv, T * Dv, Dv];
        const hq = bufs.h(q.values);
        const hk = bufs.h(k.values);
        const hv = bufs.h(v.values);
        const hdo = bufs.h(dO.values);
        const ho = bufs.hz(B * H * T * Dv);
        const hl = bufs.hz(B * H * T);
        cpu('attentionForward')(hq, qs, hk, qs, hv, vs, mask.address, ho, hl, B, H, T, T, D, Dv, scale, false);
        const hdq = bufs.hz(B * H * T * D);
        const hdk = bufs.hz(B * H * T * D);
        const hdv = bufs.hz(B * H * T * Dv);
        cpu('attentionBackward')(hq, qs, hk, qs, hv, vs, mask.address, hdo, vs, hl, hdq, hdk, hdv, B, H, T, T, D, Dv, scale, false);
        const es = dtype === 'f32' ? 4 : 2;
        const dq = bufs.d(q.encoded);
        const dk = bufs.d(k.encoded);
        const dv = bufs.d(v.encoded);
        const ddo = bufs.d(dO.encoded);
        const dout = bufs.dz(B * H * T * Dv, es);
        const dlse = bufs.dz(B * H * T);
        cuda.attentionForward(dtype, kind, textLen, gridSide, convKernel, dq, dk, dv, dout, dlse, B, H, D, Dv, scale);
        const gq = bufs.dz(B * H * T * D, es);
        const gk = bufs.dz(B * H * T * D, es);
        const gv = bufs.dz(B * H * T * Dv, es);
        const delta = bufs.dz(B * H * T);
        cuda.attentionBackward(dtype, kind, textLen, gridSide, convKernel, dq, dk, dv, dout, ddo, dlse, gq, gk, gv, delta, B, H, D, Dv, scale);
        const [at, rt] = tol(dtype);
        out.push(compare('attention forward', what, bufs.readD(dout, B * H * T * Dv, dtype), bufs.readH(ho, B * H * T * Dv), at, rt));
        out.push(compare('attention lse', what, bufs.readD(dlse, B * H * T), bufs.readH(hl, B * H * T), 1e-4, 1e-4));
        // The backward reads the GPU's own (rounded) output, the CPU its fp32 one: a little more slack for 16 bits.
        const slack = dtype === 'f32' ? 1 : 4;
        out.push(compare('attention dq', what, bufs.readD(gq, B * H * T * D, dtype), bufs.readH(hdq, B * H * T * D), at * slack, rt * slack));
        out.push(compare('attention dk', what, bufs.readD(gk, B * H * T * D, dtype), bufs.readH(hdk, B * H * T * D), at * slack, rt * slack));
        out.push(compare('attention dv', what, bufs.readD(gv, B * H * T * Dv, dtype), bufs.readH(hdv, B * H * T * Dv), at * slack, rt * slack));
      } finally {
        mask.dispose();
        bufs.free();
      }
    }
  }
}

function checkElementwise(cuda: CudaAddon, rng: Rng, out: CheckResult[]): void {
  const n = 100003;
  // casts: f32 -> 16-bit bit-exact against the CPU cast (NaN compared as NaN), specials included.
  const specials = Float32Array.from([0, -0, 1, -1, Infinity, -Infinity, NaN, 65504, 65520, 65519.99, 1e-8, 5.9604645e-8, 2.9802322e-8, 3.4e38, 1.00048828125, 1.00146484375]);
  const x = new Float32Array(n + specials.length);
  x.set(rng.normal(n, 100));
  x.set(specials, n);
  for (const dtype of ['f16', 'bf16'] as const) {
    const bufs = new Buffers(cuda);
    try {
      const want = narrow(x, dtype);
      const d16 = bufs.dz(x.length, 2);
      cuda.cast(d16, dtype, bufs.d(x), 'f32', x.length);
      const got = new Uint16Array(x.length);
      cuda.copyOut(got, d16);
      out.push(compare(`cast f32 -> ${dtype}`, `${x.length} values`, widen(got, dtype), widen(want, dtype), 0, 0));
      const back = bufs.dz(x.length);
      cuda.cast(back, 'f32', d16, dtype, x.length);
      out.push(compare(`cast ${dtype} -> f32`, `${x.length} values`, bufs.readD(back, x.length), widen(want, dtype), 0, 0));
    } finally {
      bufs.free();
    }
  }
  for (const dtype of ['f32', 'f16', 'bf16'] as CudaDType[]) {
    const bufs = new Buffers(cuda);
    try {
      const xs = asType(rng.normal(n, 3), dtype);
      const g = asType(rng.normal(n), dtype);
      const hy = bufs.hz(n);
      cpu('ewUnaryFlat')(6, n, hy, bufs.h(xs.values), 1, 0); // 6 = gelu (elementwise.cc EwUnaryCode)
      const hdx = bufs.hz(n);
      cpu('ewBinaryFlat')(7, n, hdx, bufs.h(g.values), bufs.h(xs.values)); // 7 = g * gelu'(x)
      const es = dtype === 'f32' ? 4 : 2;
      const dx = bufs.d(xs.encoded);
      const dy = bufs.dz(n, es);
      const ddx = bufs.dz(n, es);
      cuda.geluForward(dtype, dx, dy, n);
      cuda.geluBackward(dtype, dx, bufs.d(g.encoded), ddx, n);
      const [at, rt] = tol(dtype);
      out.push(compare('gelu', `${dtype} n ${n}`, bufs.readD(dy, n, dtype), bufs.readH(hy, n), at, rt));
      out.push(compare('gelu backward', `${dtype} n ${n}`, bufs.readD(ddx, n, dtype), bufs.readH(hdx, n), at, rt));
      // scale and filter (1 / scale, Inf / NaN -> 0, count).
      const xf = rng.normal(n, 1000);
      xf[5] = Infinity;
      xf[77] = NaN;
      xf[n - 1] = -Infinity;
      const xfs = asType(xf, dtype);
      const alpha = 1 / 8192;
      const dsf = bufs.d(xfs.encoded);
      const count = cuda.scaleFilter(dtype, n, dsf, dsf, alpha);
      const want = new Float32Array(n);
      let wantCount = 0;
      for (let i = 0; i < n; i++) {
        const v = Math.fround(xfs.values[i] * Math.fround(alpha));
        if (Number.isFinite(v)) want[i] = v;
        else wantCount++;
      }
      out.push(compare('scaleFilter', `${dtype} n ${n}`, bufs.readD(dsf, n, dtype), dtype === 'f32' ? want : asType(want, dtype).values, 0, 0));
      out.push({ op: 'scaleFilter count', what: `${dtype}: ${count} vs ${wantCount}`, worst: count === wantCount ? 0 : Infinity, maxAbs: Math.abs(count - wantCount), ok: count === wantCount });
    } finally {
      bufs.free();
    }
  }
  // AdamW (fp32 master weights).
  const bufs = new Buffers(cuda);
  try {
    const p = rng.normal(n);
    const g = rng.normal(n);
    const m = rng.normal(n, 0.1);
    const v = Float32Array.from(rng.normal(n, 0.1), (a) => a * a);
    const hp = bufs.h(p);
    const hm = bufs.h(m);
    const hv = bufs.h(v);
    cpu('adamw')(n, hp, bufs.h(g), hm, hv, 4.5e-4, 0.9, 0.96, 1e-8, 0.045, 0.25, 7);
    const dp = bufs.d(p);
    const dm = bufs.d(m);
    const dv = bufs.d(v);
    cuda.adamw(n, dp, bufs.d(g), dm, dv, 4.5e-4, 0.9, 0.96, 1e-8, 0.045, 0.25, 7);
    out.push(compare('adamw param', `n ${n}`, bufs.readD(dp, n), bufs.readH(hp, n), 1e-7, 1e-6));
    out.push(compare('adamw m', `n ${n}`, bufs.readD(dm, n), bufs.readH(hm, n), 1e-7, 1e-6));
    out.push(compare('adamw v', `n ${n}`, bufs.readD(dv, n), bufs.readH(hv, n), 1e-7, 1e-6));
  } finally {
    bufs.free();
  }
}

function checkRows(cuda: CudaAddon, rng: Rng, out: CheckResult[]): void {
  // Layer norm: short rows (one warp) and long rows (a block).
  for (const dtype of ['f32', 'f16', 'bf16'] as CudaDType[]) {
    for (const [R, C] of [[37, 67], [5, 3968]]) {
      const bufs = new Buffers(cuda);
      try {
        const x = asType(rng.normal(R * C, 2), dtype);
        const g = asType(rng.normal(R * C), dtype);
        const gain = rng.normal(C);
        const bias = rng.normal(C);
        const hy = bufs.hz(R * C);
        const hmean = bufs.hz(R);
        const hrstd = bufs.hz(R);
        const hx = bufs.h(x.values);
        const hgain = bufs.h(gain);
        cpu('layerNormForward')(hx, hgain, bufs.h(bias), hy, hmean, hrstd, R, C, 1e-5);
        const hdx = bufs.hz(R * C);
        const hdg = bufs.hz(C);
        const hdb = bufs.hz(C);
        cpu('layerNormBackward')(hx, hgain, hmean, hrstd, bufs.h(g.values), hdx, hdg, hdb, R, C);
        const es = dtype === 'f32' ? 4 : 2;
        const dx = bufs.d(x.encoded);
        const dgain = bufs.d(gain);
        const dy = bufs.dz(R * C, es);
        const dmean = bufs.dz(R);
        const drstd = bufs.dz(R);
        cuda.layerNormForward(dtype, dx, dgain, bufs.d(bias), dy, dmean, drstd, R, C, 1e-5);
        const ddx = bufs.dz(R * C, es);
        const ddg = bufs.dz(C);
        const ddb = bufs.dz(C);
        cuda.layerNormBackward(dtype, dx, dgain, dmean, drstd, bufs.d(g.encoded), ddx, ddg, ddb, R, C);
        const [at, rt] = tol(dtype);
        const what = `${dtype} (${R}, ${C})`;
        out.push(compare('layerNorm', what, bufs.readD(dy, R * C, dtype), bufs.readH(hy, R * C), at, rt));
        out.push(compare('layerNorm rstd', what, bufs.readD(drstd, R), bufs.readH(hrstd, R), 1e-5, 1e-4));
        out.push(compare('layerNorm dx', what, bufs.readD(ddx, R * C, dtype), bufs.readH(hdx, R * C), at * 4, rt * 4));
        out.push(compare('layerNorm dgain', what, bufs.readD(ddg, C), bufs.readH(hdg, C), 1e-4 * R, 1e-4));
        out.push(compare('layerNorm dbias', what, bufs.readD(ddb, C), bufs.readH(hdb, C), 1e-4 * R, 1e-4));
      } finally {
        bufs.free();
      }
    }
  }
  // Cross-entropy: weights, an ignored row, mean and sum, short and long rows.
  for (const [N, V, mean] of [[33, 17, true], [9, 16384, false], [5, 8192, true]] as Array<[number, number, boolean]>) {
    const bufs = new Buffers(cuda);
    try {
      const logits = rng.normal(N * V, 3);
      const targets = rng.ints(N, V);
      targets[1] = -100;
      const weights = Float32Array.from(rng.normal(N), (a) => Math.abs(a));
      const g = Float32Array.of(0.7);
      const hl = bufs.h(logits);
      const ht = bufs.h(targets);
      const hw = bufs.h(weights);
      const hout = bufs.hz(1);
      const hlse = bufs.hz(N);
      const hnll = bufs.hz(N);
      cpu('crossEntropyForward')(hl, N, V, ht, hw, true, -100, mean, hout, hlse, hnll);
      const hdx = bufs.hz(N * V);
      const hdw = bufs.hz(N);
      cpu('crossEntropyBackward')(hl, N, V, ht, hw, true, -100, mean, hlse, hnll, bufs.h(g), hdx, hdw);
      const dl = bufs.d(logits);
      const dt = bufs.d(targets);
      const dw = bufs.d(weights);
      const dout = bufs.dz(1);
      const dlse = bufs.dz(N);
      const dnll = bufs.dz(N);
      cuda.crossEntropyForward(dl, N, V, dt, dw, true, -100, mean, dout, dlse, dnll);
      const ddx = bufs.dz(N * V);
      const ddw = bufs.dz(N);
      cuda.crossEntropyBackward(dl, N, V, dt, dw, true, -100, mean, dlse, dnll, bufs.d(g), ddx, ddw);
      const what = `(${N}, ${V}) ${mean ? 'mean' : 'sum'}`;
      out.push(compare('crossEntropy loss', what, bufs.readD(dout, 1), bufs.readH(hout, 1), 1e-5, 1e-5));
      out.push(compare('crossEntropy lse', what, bufs.readD(dlse, N), bufs.readH(hlse, N), 1e-5, 1e-5));
      out.push(compare('crossEntropy dlogits', what, bufs.readD(ddx, N * V), bufs.readH(hdx, N * V), 1e-7, 1e-4));
      out.push(compare('crossEntropy dweights', what, bufs.readD(ddw, N), bufs.readH(hdw, N), 1e-6, 1e-4));
    } finally {
      bufs.free();
    }
  }
}

function checkConv(cuda: CudaAddon, rng: Rng, out: CheckResult[]): void {
  for (const [B, C, Co, H, W, k] of [[2, 3, 5, 7, 9, 3], [1, 16, 8, 5, 5, 1], [3, 4, 6, 11, 6, 5], [1, 2, 3, 4, 4, 7]]) {
    const bufs = new Buffers(cuda);
    try {
      const x = rng.normal(B * C * H * W);
      const w = rng.normal(Co * C * k * k, 0.3);
      const bias = rng.normal(Co);
      const dy = rng.normal(B * Co * H * W);
      const hx = bufs.h(x);
      const hw = bufs.h(w);
      const hy = bufs.hz(B * Co * H * W);
      cpu('conv2dForward')(hx, hw, bufs.h(bias), hy, B, C, Co, H, W, k);
      const hdx = bufs.hz(B * C * H * W);
      const hdw = bufs.hz(Co * C * k * k);
      const hdb = bufs.hz(Co);
      cpu('conv2dBackward')(hx, hw, bufs.h(dy), hdx, hdw, hdb, B, C, Co, H, W, k);
      const dx = bufs.d(x);
      const dw = bufs.d(w);
      const dyd = bufs.dz(B * Co * H * W);
      cuda.conv2dForward(dx, dw, bufs.d(bias), dyd, B, C, Co, H, W, k);
      const gdx = bufs.dz(B * C * H * W);
      const gdw = bufs.dz(Co * C * k * k);
      const gdb = bufs.dz(Co);
      cuda.conv2dBackward(dx, dw, bufs.d(dy), gdx, gdw, gdb, B, C, Co, H, W, k);
      const what = `B ${B} ${C} -> ${Co} ${H}x${W} k ${k}`;
      out.push(compare('conv2d', what, bufs.readD(dyd, B * Co * H * W), bufs.readH(hy, B * Co * H * W), 1e-4, 1e-4));
      out.push(compare('conv2d dx', what, bufs.readD(gdx, B * C * H * W), bufs.readH(hdx, B * C * H * W), 1e-4, 1e-4));
      out.push(compare('conv2d dw', what, bufs.readD(gdw, Co * C * k * k), bufs.readH(hdw, Co * C * k * k), 1e-3, 1e-4));
      out.push(compare('conv2d db', what, bufs.readD(gdb, Co), bufs.readH(hdb, Co), 1e-3, 1e-4));
    } finally {
      bufs.free();
    }
  }
}

export interface CheckOptions {
  /** Also the prior's full-size masks (256 text + 32 x 32 image). */
  big?: boolean;
  seed?: number;
  /** Only these groups: gemm, attention, elementwise, rows, conv. */
  only?: string[];
}

/** Runs every comparison; returns one result per output compared. */
export function runCudaChecks(cuda: CudaAddon, opts: CheckOptions = {}): CheckResult[] {
  const rng = new Rng(opts.seed ?? 1234);
  const out: CheckResult[] = [];
  const groups: Record<string, () => void> = {
    gemm: () => checkGemm(cuda, rng, out),
    attention: () => checkAttention(cuda, rng, out, opts.big ?? false),
    elementwise: () => checkElementwise(cuda, rng, out),
    rows: () => checkRows(cuda, rng, out),
    conv: () => checkConv(cuda, rng, out),
  };
  for (const [name, run] of Object.entries(groups)) {
    if (opts.only && !opts.only.includes(name)) continue;
    try {
      run();
      cuda.synchronize();
    } catch (err) {
      out.push({ op: name, what: `threw: ${(err as Error).message}`, worst: Infinity, maxAbs: Infinity, ok: false });
    }
  }
  return out;
}
