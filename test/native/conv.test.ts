// The dVAE's image kernels (native/cpu/conv.cc, pool.cc) against float64 references written here as direct loops:
// conv2d forward and every gradient (k = 1, 3, 5, 7 and a GEMM-path 9), also with the input ReLU fused
// (conv2dReluForward / conv2dReluBackward: the convolution of ReLU(x), dx gated by x > 0), 2x2 max-pool and 2x nearest upsampling,
// forward and backward. Fresh random inputs each run (seed in every message; DALLE_TEST_SEED replays one), every ISA
// this CPU has, 1 and 2 threads, and 1- vs 2-thread results bitwise identical. The references' own gradient formulas
// are checked by central finite differences on tiny sizes.
// Key: B batch, C in channels, Co out channels, H x W image, k kernel (odd; stride 1, same zero padding).
import { native } from '../../src/core/native';
import * as assert from 'node:assert';
import { makeRandom, TEST_SEED } from '../harness/random';

type Isa = 'portable' | 'avx2' | 'avx512';
interface Addon {
  alloc(bytes: number): number;
  free(address: number, bytes: number): void;
  copyIn(address: number, data: ArrayBufferView): void;
  copyOut(address: number, data: ArrayBufferView): void;
  setThreads(n: number): number;
  setIsa(isa: Isa): string;
  cpuInfo(): { avx2: boolean; avx512: boolean; isa: Isa };
  conv2dForward(x: number, w: number, b: number | null, y: number, B: number, C: number, Co: number, H: number,
    W: number, k: number): void;
  conv2dBackward(x: number | null, w: number | null, dy: number, dx: number | null, dw: number | null,
    db: number | null, B: number, C: number, Co: number, H: number, W: number, k: number): void;
  conv2dReluForward: Addon['conv2dForward'];
  conv2dReluBackward: Addon['conv2dBackward'];
  maxpool2x2Forward(x: number, y: number, argmax: number, B: number, C: number, H: number, W: number): void;
  maxpool2x2Backward(dy: number, argmax: number, dx: number, B: number, C: number, H: number, W: number): void;
  upsample2xForward(x: number, y: number, B: number, C: number, H: number, W: number): void;
  upsample2xBackward(dy: number, dx: number, B: number, C: number, H: number, W: number): void;
}

const addon: Addon = native as unknown as Addon; // loaded by the engine (DALLE_ADDON honoured)

// ---- native memory helper: every buffer allocated in a test is freed at its end ------------------------------------

class Arena {
  private blocks: Array<[number, number]> = [];
  put(data: Float32Array | Int32Array): number {
    const bytes = Math.max(4, data.byteLength);
    const p = addon.alloc(bytes);
    this.blocks.push([p, bytes]);
    addon.copyIn(p, data);
    return p;
  }
  /** A block filled with NaN (float) / -1 (int), so unwritten outputs show. */
  out(n: number, int = false): number {
    return this.put(int ? new Int32Array(n).fill(-1) : new Float32Array(n).fill(NaN));
  }
  read(p: number, n: number): Float32Array {
    const a = new Float32Array(n);
    addon.copyOut(p, a);
    return a;
  }
  readInt(p: number, n: number): Int32Array {
    const a = new Int32Array(n);
    addon.copyOut(p, a);
    return a;
  }
  freeAll(): void {
    for (const [p, bytes] of this.blocks) addon.free(p, bytes);
    this.blocks = [];
  }
}

// ---- float64 references (direct loops) -------------------------------------------------------------------------------

interface ConvShape {
  B: number; C: number; Co: number; H: number; W: number; k: number;
}
type Arr = ArrayLike<number>;

function convForwardRef(x: Arr, w: Arr, b: Arr | null, s: ConvShape): Float64Array {
  const { B, C, Co, H, W, k } = s;
  const p = (k - 1) / 2;
  const y = new Float64Array(B * Co * H * W);
  for (let n = 0; n < B; n++)
    for (let o = 0; o < Co; o++)
      for (let h = 0; h < H; h++)
        for (let q = 0; q < W; q++) {
          let acc = b ? b[o] : 0;
          for (let c = 0; c < C; c++)
            for (let kh = 0; kh < k; kh++) {
              const hi = h + kh - p;
              if (hi < 0 || hi >= H) continue;
              for (let kw = 0; kw < k; kw++) {
                const wi = q + kw - p;
                if (wi < 0 || wi >= W) continue;
                acc += x[((n * C + c) * H + hi) * W + wi] * w[((o * C + c) * k + kh) * k + kw];
              }
            }
          y[((n * Co + o) * H + h) * W + q] = acc;
        }
  return y;
}

// y[n,o,h,q] = b[o] + sum x[n,c,h+kh-p,q+kw-p] w[o,c,kh,kw]  =>  dx, dw gather dy over the same index pairs; db = sum dy.
function convBackwardRef(x: Arr, w: Arr, dy: Arr, s: ConvShape): { dx: Float64Array; dw: Float64Array; db: Float64Array } {
  const { B, C, Co, H, W, k } = s;
  const p = (k - 1) / 2;
  const dx = new Float64Array(B * C * H * W), dw = new Float64Array(Co * C * k * k), db = new Float64Array(Co);
  for (let n = 0; n < B; n++)
    for (let o = 0; o < Co; o++)
      for (let h = 0; h < H; h++)
        for (let q = 0; q < W; q++) {
          const g = dy[((n * Co + o) * H + h) * W + q];
          db[o] += g;
          for (let c = 0; c < C; c++)
            for (let kh = 0; kh < k; kh++) {
              const hi = h + kh - p;
              if (hi < 0 || hi >= H) continue;
              for (let kw = 0; kw < k; kw++) {
                const wi = q + kw - p;
                if (wi < 0 || wi >= W) continue;
                const xi = ((n * C + c) * H + hi) * W + wi, wj = ((o * C + c) * k + kh) * k + kw;
                dx[xi] += g * w[wj];
                dw[wj] += g * x[xi];
              }
            }
        }
  return { dx, dw, db };
}

// Window order 0 (0,0), 1 (0,1), 2 (1,0), 3 (1,1); first maximum wins.
function maxpoolForwardRef(x: Arr, B: number, C: number, H: number, W: number): { y: Float64Array; arg: Int32Array } {
  const Ho = H / 2, Wo = W / 2;
  const y = new Float64Array(B * C * Ho * Wo), arg = new Int32Array(B * C * Ho * Wo);
  for (let pl = 0; pl < B * C; pl++)
    for (let i = 0; i < Ho; i++)
      for (let j = 0; j < Wo; j++) {
        let best = -Infinity, a = -1;
        for (let t = 0; t < 4; t++) {
          const v = x[(pl * H + 2 * i + (t >> 1)) * W + 2 * j + (t & 1)];
          if (v > best) { best = v; a = t; }
        }
        y[(pl * Ho + i) * Wo + j] = best;
        arg[(pl * Ho + i) * Wo + j] = a;
      }
  return { y, arg };
}

function maxpoolBackwardRef(dy: Arr, arg: Arr, B: number, C: number, H: number, W: number): Float64Array {
  const Ho = H / 2, Wo = W / 2;
  const dx = new Float64Array(B * C * H * W);
  for (let pl = 0; pl < B * C; pl++)
    for (let i = 0; i < Ho; i++)
      for (let j = 0; j < Wo; j++) {
        const t = arg[(pl * Ho + i) * Wo + j];
        dx[(pl * H + 2 * i + (t >> 1)) * W + 2 * j + (t & 1)] += dy[(pl * Ho + i) * Wo + j];
      }
  return dx;
}

function upsampleForwardRef(x: Arr, B: number, C: number, H: number, W: number): Float64Array {
  const y = new Float64Array(B * C * 4 * H * W);
  for (let pl = 0; pl < B * C; pl++)
    for (let i = 0; i < 2 * H; i++)
      for (let j = 0; j < 2 * W; j++) y[(pl * 2 * H + i) * 2 * W + j] = x[(pl * H + (i >> 1)) * W + (j >> 1)];
  return y;
}

function upsampleBackwardRef(dy: Arr, B: number, C: number, H: number, W: number): Float64Array {
  const dx = new Float64Array(B * C * H * W);
  for (let pl = 0; pl < B * C; pl++)
    for (let i = 0; i < 2 * H; i++)
      for (let j = 0; j < 2 * W; j++) dx[(pl * H + (i >> 1)) * W + (j >> 1)] += dy[(pl * 2 * H + i) * 2 * W + j];
  return dx;
}

// ---- comparison ---------------------------------------------------------------------------------------------------------

// Tolerance for float32 results against float64 references. Each output is a sum of n products of inputs in [-1, 1]
// (n = C k^2 for y, Co k^2 for dx, B H W for dw and db). The kernels sum in float32 in blocked orders (vector lanes,
// register tiles, per-image partial sums), whose rounding error grows like u sqrt(n) (u = 2^-24 ~ 6e-8) for such
// random terms, and like u |r| in the final value. We accept |a - r| <= 1e-5 (|r| + sqrt(n)): more than 10x the
// largest error seen on these shapes (~8e-7), yet any wrong or missing term (of size ~0.25) fails by far.
function assertClose(actual: Float32Array, ref: Float64Array, n: number, what: string): void {
  assert.strictEqual(actual.length, ref.length, `${what}: length`);
  const scale = Math.sqrt(n);
  let worst = 0, at = -1;
  for (let i = 0; i < ref.length; i++) {
    const e = Math.abs(actual[i] - ref[i]) / (Math.abs(ref[i]) + scale);
    if (!(e <= worst)) { worst = e; at = i; }
  }
  assert.ok(worst <= 1e-5, `${what}: worst error ${worst.toExponential(2)} at ${at} (got ${actual[at]}, want ${ref[at]})`);
}

function assertBitwise(a: Float32Array | Int32Array, b: Float32Array | Int32Array, what: string): void {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length), ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) {
    if (ua[i] !== ub[i]) assert.fail(`${what}: element ${i} differs between 1 and 2 threads (${a[i]} vs ${b[i]})`);
  }
}

function randArray(n: number, rnd: ReturnType<typeof makeRandom>): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rnd.uniform() * 2 - 1;
  return a;
}

function isas(): Isa[] {
  const info = addon.cpuInfo();
  return ['portable', ...(info.avx2 ? ['avx2' as const] : []), ...(info.avx512 ? ['avx512' as const] : [])];
}

const THREADS = [1, 2];

function restoreDefaults(): void {
  addon.setIsa('avx512');  // the cap back at its maximum: the best ISA the CPU has
  addon.setThreads(0);
}

// ---- conv2d ----------------------------------------------------------------------------------------------------------

const CONV_CASES: ConvShape[] = [
  { B: 1, C: 1, Co: 1, H: 1, W: 1, k: 3 },
  { B: 3, C: 3, Co: 7, H: 5, W: 7, k: 3 },
  { B: 1, C: 33, Co: 7, H: 7, W: 5, k: 3 },
  { B: 3, C: 7, Co: 33, H: 16, W: 16, k: 3 },
  { B: 1, C: 5, Co: 9, H: 3, W: 37, k: 3 },      // rows of more than two vectors, a partial last one
  { B: 3, C: 16, Co: 16, H: 16, W: 16, k: 3 },   // dVAE-like widths
  { B: 1, C: 3, Co: 16, H: 16, W: 5, k: 5 },
  { B: 3, C: 7, Co: 3, H: 7, W: 16, k: 5 },
  { B: 1, C: 3, Co: 7, H: 16, W: 7, k: 7 },
  { B: 3, C: 3, Co: 16, H: 5, W: 1, k: 7 },      // kernel wider than the image
  { B: 3, C: 33, Co: 7, H: 5, W: 7, k: 1 },
  { B: 1, C: 16, Co: 33, H: 16, W: 16, k: 1 },
  { B: 3, C: 7, Co: 5, H: 40, W: 33, k: 1 },     // H W >= 1024: the direct 1x1 weight gradient
  { B: 3, C: 5, Co: 6, H: 32, W: 32, k: 3 },     // 3x3 weight gradient over 2 images a group, then 1
  { B: 2, C: 9, Co: 10, H: 37, W: 35, k: 3 },    // a large odd image, a partial last vector
  { B: 2, C: 80, Co: 70, H: 16, W: 52, k: 1 },   // AVX-512 1x1 weight gradient by channel lanes: 64 + 16 channels
  { B: 3, C: 4, Co: 5, H: 1, W: 1, k: 1 },
  { B: 1, C: 2, Co: 3, H: 5, W: 11, k: 9 },      // k > 7: im2col + GEMM on every ISA
];

const shapeName = (s: ConvShape): string => `B${s.B} C${s.C}->${s.Co} ${s.H}x${s.W} k${s.k}`;

interface ConvOut { y: Float32Array; dx: Float32Array; dw: Float32Array; db: Float32Array }

/** Forward and all gradients; `relu`: the fused-ReLU entry points. */
function runConv(s: ConvShape, x: Float32Array, w: Float32Array, b: Float32Array, dy: Float32Array, relu = false): ConvOut {
  const mem = new Arena();
  try {
    const nx = x.length, ny = dy.length, nw = w.length;
    const px = mem.put(x), pw = mem.put(w), pb = mem.put(b), pdy = mem.put(dy);
    const py = mem.out(ny), pdx = mem.out(nx), pdw = mem.out(nw), pdb = mem.out(s.Co);
    (relu ? addon.conv2dReluForward : addon.conv2dForward)(px, pw, pb, py, s.B, s.C, s.Co, s.H, s.W, s.k);
    (relu ? addon.conv2dReluBackward : addon.conv2dBackward)(px, pw, pdy, pdx, pdw, pdb, s.B, s.C, s.Co, s.H, s.W, s.k);
    return { y: mem.read(py, ny), dx: mem.read(pdx, nx), dw: mem.read(pdw, nw), db: mem.read(pdb, s.Co) };
  } finally {
    mem.freeAll();
  }
}

describe(`native conv2d (seed ${TEST_SEED}; DALLE_TEST_SEED replays it)`, () => {
  after(restoreDefaults);

  CONV_CASES.forEach((s, index) => {
    for (const relu of [false, true]) it(`${shapeName(s)}${relu ? ' (input ReLU fused)' : ''}: forward and gradients match the float64 reference on every ISA and thread count`, function () {
      this.timeout(60000);
      const seed = TEST_SEED + 101 * index;
      const rnd = makeRandom(seed);
      const x = randArray(s.B * s.C * s.H * s.W, rnd), w = randArray(s.Co * s.C * s.k * s.k, rnd);
      const b = randArray(s.Co, rnd), dy = randArray(s.B * s.Co * s.H * s.W, rnd);
      for (let i = 0; i < x.length; i += 7) x[i] = 0; // ReLU'(0) = 0: the fused dx must gate exact zeros out
      // With the fused ReLU: the convolution of ReLU(x); dx = (gradient at ReLU(x)) where x > 0, else 0.
      const xr = relu ? x.map((v) => (v > 0 ? v : 0)) : x;
      const y = convForwardRef(xr, w, b, s);
      const g = convBackwardRef(xr, w, dy, s);
      if (relu) g.dx.forEach((_, i) => { if (!(x[i] > 0)) g.dx[i] = 0; });
      try {
        for (const isa of isas()) {
          addon.setIsa(isa);
          const outs: ConvOut[] = [];
          for (const t of THREADS) {
            addon.setThreads(t);
            const o = runConv(s, x, w, b, dy, relu);
            const tag = `${shapeName(s)}${relu ? ' relu' : ''} ${isa} ${t} thread(s), seed ${seed}`;
            assertClose(o.y, y, s.C * s.k * s.k, `y, ${tag}`);
            assertClose(o.dx, g.dx, s.Co * s.k * s.k, `dx, ${tag}`);
            assertClose(o.dw, g.dw, s.B * s.H * s.W, `dw, ${tag}`);
            assertClose(o.db, g.db, s.B * s.H * s.W, `db, ${tag}`);
            outs.push(o);
          }
          for (const key of ['y', 'dx', 'dw', 'db'] as const) {
            assertBitwise(outs[0][key], outs[1][key], `${key}, ${shapeName(s)} ${isa}, seed ${seed}`);
          }
        }
      } finally {
        restoreDefaults();
      }
    });
  });

  it('computes only the gradients asked for (null outputs), each the same as in a full call', () => {
    const s: ConvShape = { B: 2, C: 5, Co: 6, H: 7, W: 9, k: 3 };
    const rnd = makeRandom(TEST_SEED + 7);
    const x = randArray(s.B * s.C * s.H * s.W, rnd), w = randArray(s.Co * s.C * 9, rnd);
    const dy = randArray(s.B * s.Co * s.H * s.W, rnd);
    const full = runConv(s, x, w, new Float32Array(s.Co), dy);
    const mem = new Arena();
    try {
      const px = mem.put(x), pw = mem.put(w), pdy = mem.put(dy);
      const pdw = mem.out(w.length), pdx = mem.out(x.length), pdb = mem.out(s.Co);
      addon.conv2dBackward(px, pw, pdy, null, pdw, null, s.B, s.C, s.Co, s.H, s.W, s.k);
      assertBitwise(mem.read(pdw, w.length), full.dw, 'dw alone');
      addon.conv2dBackward(null, pw, pdy, pdx, null, null, s.B, s.C, s.Co, s.H, s.W, s.k);  // x not needed for dx
      assertBitwise(mem.read(pdx, x.length), full.dx, 'dx alone');
      addon.conv2dBackward(null, null, pdy, null, null, pdb, s.B, s.C, s.Co, s.H, s.W, s.k);
      assertBitwise(mem.read(pdb, s.Co), full.db, 'db alone');
      // A null bias is a zero bias.
      const py = mem.out(full.y.length);
      addon.conv2dForward(px, pw, null, py, s.B, s.C, s.Co, s.H, s.W, s.k);
      assertBitwise(mem.read(py, full.y.length), full.y, 'y without bias');
    } finally {
      mem.freeAll();
    }
  });

  it('rejects bad shapes with errors that name them, without crashing', () => {
    const mem = new Arena();
    try {
      const p = mem.out(64);
      const expectError = (fn: () => void, pattern: RegExp): void =>
        assert.throws(fn, (err: Error & { code?: string }) => err.code === 'DALLE_NATIVE' && pattern.test(err.message));
      expectError(() => addon.conv2dForward(p, p, null, p, 1, 2, 3, 4, 4, 2), /odd and positive.*k = 2.*\(3, 2, 2, 2\)/);
      expectError(() => addon.conv2dForward(p, p, null, p, 1, 2, 3, 4, 4, -1), /k = -1/);
      expectError(() => addon.conv2dBackward(p, p, p, p, p, p, 1, 0, 3, 4, 4, 3), /positive.*\(1, 0, 4, 4\)/);
      expectError(() => addon.conv2dForward(p, p, null, p, 1, 2, 3, 0, 4, 3), /\(1, 2, 0, 4\)/);
      expectError(() => addon.conv2dBackward(p, null, p, p, null, null, 1, 2, 3, 4, 4, 3), /dx needs w/);
      expectError(() => addon.maxpool2x2Forward(p, p, p, 1, 2, 5, 4), /even.*\(1, 2, 5, 4\)/);
      expectError(() => addon.maxpool2x2Backward(p, p, p, 1, 2, 4, 3), /even.*\(1, 2, 4, 3\)/);
      expectError(() => addon.upsample2xForward(p, p, 1, -2, 4, 4), /positive.*\(1, -2, 4, 4\)/);
      expectError(() => addon.upsample2xBackward(p, p, 0, 2, 4, 4), /positive/);
    } finally {
      mem.freeAll();
    }
  });
});

// ---- max-pool and upsample ------------------------------------------------------------------------------------------

const POOL_CASES: Array<[number, number, number, number]> = [
  [1, 1, 2, 2], [3, 3, 4, 6], [1, 7, 16, 16], [3, 3, 6, 32], [1, 33, 2, 10],
];
const UPSAMPLE_CASES: Array<[number, number, number, number]> = [
  [1, 1, 1, 1], [3, 3, 5, 7], [1, 7, 16, 16], [3, 3, 3, 8], [1, 33, 7, 1],
];

describe(`native maxpool2x2 and upsample2x (seed ${TEST_SEED})`, () => {
  after(restoreDefaults);

  POOL_CASES.forEach(([B, C, H, W], index) => {
    it(`maxpool2x2 ${B}x${C}x${H}x${W}: forward, argmax and backward; ties go to the first`, () => {
      const seed = TEST_SEED + 31 * index;
      const rnd = makeRandom(seed);
      const x = randArray(B * C * H * W, rnd);
      // Some exact ties (quantized values), so the first-maximum rule is exercised.
      for (let i = 0; i < x.length; i += 3) x[i] = Math.round(x[i] * 2) / 2;
      const dy = randArray((B * C * H * W) / 4, rnd);
      const ref = maxpoolForwardRef(x, B, C, H, W);
      const dxRef = maxpoolBackwardRef(dy, ref.arg, B, C, H, W);
      try {
        const results: Array<[Float32Array, Int32Array, Float32Array]> = [];
        for (const t of THREADS) {
          addon.setThreads(t);
          const mem = new Arena();
          try {
            const n = x.length, m = n / 4;
            const px = mem.put(x), py = mem.out(m), pa = mem.out(m, true), pdy = mem.put(dy), pdx = mem.out(n);
            addon.maxpool2x2Forward(px, py, pa, B, C, H, W);
            addon.maxpool2x2Backward(pdy, pa, pdx, B, C, H, W);
            const y = mem.read(py, m), arg = mem.readInt(pa, m), dx = mem.read(pdx, n);
            assert.deepStrictEqual(Array.from(arg), Array.from(ref.arg), `argmax, seed ${seed}`);
            assert.deepStrictEqual(Array.from(y), Array.from(ref.y), `y (exact), seed ${seed}`);
            assert.deepStrictEqual(Array.from(dx), Array.from(dxRef), `dx (exact), seed ${seed}`);
            results.push([y, arg, dx]);
          } finally {
            mem.freeAll();
          }
        }
        results[1].forEach((r, i) => assertBitwise(results[0][i], r, `maxpool output ${i}`));
      } finally {
        restoreDefaults();
      }
    });
  });

  UPSAMPLE_CASES.forEach(([B, C, H, W], index) => {
    it(`upsample2x ${B}x${C}x${H}x${W}: forward and backward`, () => {
      const seed = TEST_SEED + 37 * index;
      const rnd = makeRandom(seed);
      const x = randArray(B * C * H * W, rnd), dy = randArray(4 * B * C * H * W, rnd);
      const yRef = upsampleForwardRef(x, B, C, H, W), dxRef = upsampleBackwardRef(dy, B, C, H, W);
      try {
        const results: Array<[Float32Array, Float32Array]> = [];
        for (const t of THREADS) {
          addon.setThreads(t);
          const mem = new Arena();
          try {
            const n = x.length;
            const px = mem.put(x), py = mem.out(4 * n), pdy = mem.put(dy), pdx = mem.out(n);
            addon.upsample2xForward(px, py, B, C, H, W);
            addon.upsample2xBackward(pdy, pdx, B, C, H, W);
            const y = mem.read(py, 4 * n), dx = mem.read(pdx, n);
            assert.deepStrictEqual(Array.from(y), Array.from(yRef), `y (exact), seed ${seed}`);
            assertClose(dx, dxRef, 4, `dx, seed ${seed}`);  // a sum of 4 float32 values
            results.push([y, dx]);
          } finally {
            mem.freeAll();
          }
        }
        results[1].forEach((r, i) => assertBitwise(results[0][i], r, `upsample output ${i}`));
      } finally {
        restoreDefaults();
      }
    });
  });
});

// ---- the references' gradients against finite differences ---------------------------------------------------------

// Loss L = sum(y * g) for a fixed random g, so dL/dy = g: the references' backward with dy = g must equal the central
// differences of L (float64, h = 1e-6: truncation error O(h^2) vanishes for these piecewise-linear / bilinear maps,
// rounding error ~1e-10 / h). Every input element is perturbed.
function finiteDiff(f: (v: Float64Array) => number, v: Float64Array, h = 1e-6): Float64Array {
  const grad = new Float64Array(v.length);
  for (let i = 0; i < v.length; i++) {
    const keep = v[i];
    v[i] = keep + h;
    const up = f(v);
    v[i] = keep - h;
    const down = f(v);
    v[i] = keep;
    grad[i] = (up - down) / (2 * h);
  }
  return grad;
}

function dot(a: Arr, b: Arr): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

function assertNear64(a: Float64Array, b: Float64Array, what: string): void {
  for (let i = 0; i < a.length; i++) {
    assert.ok(Math.abs(a[i] - b[i]) <= 1e-6 * (1 + Math.abs(b[i])), `${what}[${i}]: ${a[i]} vs finite difference ${b[i]}`);
  }
}

function rand64(n: number, rnd: ReturnType<typeof makeRandom>): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = rnd.uniform() * 2 - 1;
  return a;
}

describe(`float64 references: gradients against finite differences (seed ${TEST_SEED})`, () => {
  for (const k of [1, 3, 5]) {
    it(`conv2d k${k}`, () => {
      const s: ConvShape = { B: 2, C: 2, Co: 3, H: 3, W: 4, k };
      const rnd = makeRandom(TEST_SEED + k);
      const x = rand64(s.B * s.C * s.H * s.W, rnd), w = rand64(s.Co * s.C * k * k, rnd), b = rand64(s.Co, rnd);
      const g = rand64(s.B * s.Co * s.H * s.W, rnd);
      const grads = convBackwardRef(x, w, g, s);
      assertNear64(grads.dx, finiteDiff((v) => dot(convForwardRef(v, w, b, s), g), x), `dx k${k}`);
      assertNear64(grads.dw, finiteDiff((v) => dot(convForwardRef(x, v, b, s), g), w), `dw k${k}`);
      assertNear64(grads.db, finiteDiff((v) => dot(convForwardRef(x, w, v, s), g), b), `db k${k}`);
    });
  }

  it('maxpool2x2 (distinct values, so the maximum is differentiable)', () => {
    const [B, C, H, W] = [2, 2, 4, 6];
    const rnd = makeRandom(TEST_SEED + 11);
    // A permutation of well-separated values: no ties, gaps far larger than h.
    const n = B * C * H * W;
    const x = new Float64Array(n).map((_, i) => i / n);
    for (let i = n - 1; i > 0; i--) {
      const j = rnd.int(0, i + 1);
      [x[i], x[j]] = [x[j], x[i]];
    }
    const g = rand64(n / 4, rnd);
    const { arg } = maxpoolForwardRef(x, B, C, H, W);
    const dx = maxpoolBackwardRef(g, arg, B, C, H, W);
    assertNear64(dx, finiteDiff((v) => dot(maxpoolForwardRef(v, B, C, H, W).y, g), x), 'maxpool dx');
  });

  it('upsample2x', () => {
    const [B, C, H, W] = [2, 3, 3, 2];
    const rnd = makeRandom(TEST_SEED + 13);
    const x = rand64(B * C * H * W, rnd), g = rand64(4 * B * C * H * W, rnd);
    const dx = upsampleBackwardRef(g, B, C, H, W);
    assertNear64(dx, finiteDiff((v) => dot(upsampleForwardRef(v, B, C, H, W), g), x), 'upsample dx');
  });
});
