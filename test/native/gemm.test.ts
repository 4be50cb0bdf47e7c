// GEMM kernels (native/cpu/gemm*.cc) against a float64 reference written here, on fresh random inputs: every ISA path
// (portable, AVX2, AVX-512; bf16 with vdpbf16ps or converted), 1 and 2 threads, all four transpose combinations,
// alpha/beta variants (beta = 0 with a NaN-filled C: C must be write-only), padded leading dimensions (the padding
// must stay untouched), the small-M / small-N paths, batched GEMM with broadcast (stride 0), and argument errors.
//
// Tolerance: |ours - ref| <= 1e-4 * sqrt(K) * scale, scale = |alpha| max|A| max|B| + |beta| max|C|. Each output is a
// K-term fp32 sum; rounding errors of a blocked / FMA sum behave like a random walk, ~ sqrt(K) * 2^-24 * scale, so
// 1e-4 leaves a margin of ~1000x for the summation order (K blocks, pairs of k in bf16) while a wrong index, a missed
// tile edge or a stale accumulator shows up as an error of order `scale`. bf16 inputs are rounded to bf16 first and
// the reference runs on the rounded values (products of two bf16 are exact in fp32), so the same bound holds.
import { native } from '../../src/core/native';
import * as assert from 'node:assert';

interface Addon {
  alloc(bytes: number): number;
  free(address: number, bytes: number): void;
  copyIn(address: number, data: ArrayBufferView): void;
  copyOut(address: number, data: ArrayBufferView): void;
  setThreads(n: number): number;
  numThreads(): number;
  setIsa(isa: string): string;
  cpuInfo(): { avx2: boolean; avx512: boolean; avx512bf16: boolean; isa: string };
  sgemm(ta: boolean, tb: boolean, M: number, N: number, K: number, alpha: number, a: number | null, lda: number,
    b: number | null, ldb: number, beta: number, c: number | null, ldc: number): void;
  gemmBf16(ta: boolean, tb: boolean, M: number, N: number, K: number, alpha: number, a: number | null, lda: number,
    b: number | null, ldb: number, beta: number, c: number | null, ldc: number): void;
  sgemmReference(ta: boolean, tb: boolean, M: number, N: number, K: number, alpha: number, a: number, lda: number,
    b: number, ldb: number, beta: number, c: number, ldc: number): void;
  gemmBf16Reference(ta: boolean, tb: boolean, M: number, N: number, K: number, alpha: number, a: number, lda: number,
    b: number, ldb: number, beta: number, c: number, ldc: number): void;
  sgemmBatched(batch: number, ta: boolean, tb: boolean, M: number, N: number, K: number, alpha: number,
    a: number | null, lda: number, sa: number, b: number | null, ldb: number, sb: number, beta: number,
    c: number | null, ldc: number, sc: number): void;
  sgemmBatchedSharedA(batch: number, ta: boolean, M: number, N: number, K: number, alpha: number, a: number,
    lda: number, b: number, ldb: number, sb: number, beta: number, c: number, ldc: number, sc: number): void;
}
const addon: Addon = native as unknown as Addon; // loaded by the engine (DALLE_ADDON honoured)

// ------------------------------------------------------------------------------------------------------------------
// Native memory: a tiny local helper (alloc / copyIn / copyOut / free).

class NativeBuf {
  readonly addr: number;
  constructor(readonly bytes: number) {
    this.addr = addon.alloc(Math.max(bytes, 4));
  }
  static from(data: Float32Array | Uint16Array): NativeBuf {
    const b = new NativeBuf(data.byteLength);
    addon.copyIn(b.addr, data);
    return b;
  }
  readF32(n: number): Float32Array {
    const out = new Float32Array(n);
    addon.copyOut(this.addr, out);
    return out;
  }
  free(): void {
    addon.free(this.addr, Math.max(this.bytes, 4));
  }
}

// Frees every buffer made inside fn, even when an assertion fails.
function withBufs<T>(fn: (mk: (d: Float32Array | Uint16Array) => NativeBuf) => T): T {
  const bufs: NativeBuf[] = [];
  try {
    return fn((d) => {
      const b = NativeBuf.from(d);
      bufs.push(b);
      return b;
    });
  } finally {
    for (const b of bufs) b.free();
  }
}

// ------------------------------------------------------------------------------------------------------------------
// Random inputs (seeded: a failure reproduces) and bf16 rounding.

function mulberry32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
let rng = mulberry32(20240611);

function randomF32(n: number, lo = -1, hi = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * rng();
  return a;
}

// float32 -> bf16 bits, round to nearest even (finite inputs).
function toBf16(x: Float32Array): Uint16Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = ((u[i] + 0x7fff + ((u[i] >>> 16) & 1)) >>> 16) & 0xffff;
  return out;
}
function bf16ToF32(h: Uint16Array): Float32Array {
  const u = new Uint32Array(h.length);
  for (let i = 0; i < h.length; i++) u[i] = h[i] << 16;
  return new Float32Array(u.buffer);
}

// ------------------------------------------------------------------------------------------------------------------
// The float64 reference: the definition, C = alpha op(A) op(B) + beta C (beta = 0: C not read).

interface Gemm {
  ta: boolean; tb: boolean; M: number; N: number; K: number; alpha: number; beta: number;
  lda: number; ldb: number; ldc: number;
}

function refGemm(g: Gemm, A: Float32Array, B: Float32Array, C: Float32Array): Float64Array {
  const out = Float64Array.from(C);
  for (let i = 0; i < g.M; i++) {
    for (let j = 0; j < g.N; j++) {
      let s = 0;
      for (let k = 0; k < g.K; k++) {
        const a = g.ta ? A[k * g.lda + i] : A[i * g.lda + k];
        const b = g.tb ? B[j * g.ldb + k] : B[k * g.ldb + j];
        s += a * b;
      }
      out[i * g.ldc + j] = g.alpha * s + (g.beta === 0 ? 0 : g.beta * C[i * g.ldc + j]);
    }
  }
  return out;
}

function maxAbs(x: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < x.length; i++) if (Number.isFinite(x[i])) m = Math.max(m, Math.abs(x[i]));
  return m;
}

// Compares C (M rows of ldc) with the reference; the padding columns [N, ldc) must equal `pad` exactly.
function assertClose(what: string, g: Gemm, got: Float32Array, want: Float64Array, scale: number, pad: Float32Array) {
  const tol = 1e-4 * Math.sqrt(Math.max(g.K, 1)) * Math.max(scale, 1e-30);
  for (let i = 0; i < g.M; i++) {
    for (let j = 0; j < g.ldc; j++) {
      const idx = i * g.ldc + j;
      if (j >= g.N) {
        if (!Object.is(got[idx], pad[idx])) assert.fail(`${what}: wrote the padding of C at (${i}, ${j})`);
        continue;
      }
      const err = Math.abs(got[idx] - want[idx]);
      if (!(err <= tol)) {
        assert.fail(`${what}: C(${i}, ${j}) = ${got[idx]}, reference ${want[idx]} (|err| ${err} > tol ${tol})`);
      }
    }
  }
}

type Dtype = 'f32' | 'bf16';

function gemmLabel(g: Gemm, dt: Dtype): string {
  return `${dt} M=${g.M} N=${g.N} K=${g.K} ta=${g.ta} tb=${g.tb} alpha=${g.alpha} beta=${g.beta} ` +
    `ld=(${g.lda},${g.ldb},${g.ldc})`;
}

// One GEMM through the addon vs the TS reference. Returns nothing; throws on mismatch.
function checkGemm(g: Gemm, dt: Dtype, opts: { nanC?: boolean } = {}): void {
  const aLen = (g.ta ? g.K : g.M) * g.lda, bLen = (g.tb ? g.N : g.K) * g.ldb, cLen = g.M * g.ldc;
  let A = randomF32(aLen), B = randomF32(bLen);
  const A16 = toBf16(A), B16 = toBf16(B);
  if (dt === 'bf16') A = bf16ToF32(A16), B = bf16ToF32(B16);  // the reference sees the rounded values
  const C0 = randomF32(cLen);
  if (opts.nanC) C0.fill(NaN);
  const want = refGemm(g, A, B, C0);
  const scale = Math.abs(g.alpha) * maxAbs(A) * maxAbs(B) + Math.abs(g.beta) * maxAbs(C0);
  const got = withBufs((mk) => {
    const a = dt === 'bf16' ? mk(A16) : mk(A), b = dt === 'bf16' ? mk(B16) : mk(B), c = mk(C0);
    const fn = dt === 'bf16' ? addon.gemmBf16 : addon.sgemm;
    fn(g.ta, g.tb, g.M, g.N, g.K, g.alpha, a.addr, g.lda, b.addr, g.ldb, g.beta, c.addr, g.ldc);
    return c.readF32(cLen);
  });
  assertClose(gemmLabel(g, dt), g, got, want, scale, C0);
}

function gemm(M: number, N: number, K: number, ta: boolean, tb: boolean, alpha = 1, beta = 0,
  pad: [number, number, number] = [0, 0, 0]): Gemm {
  return {
    ta, tb, M, N, K, alpha, beta,
    lda: (ta ? M : K) + pad[0] || 1, ldb: (tb ? K : N) + pad[1] || 1, ldc: N + pad[2] || 1,
  };
}

const TRANSPOSES: [boolean, boolean][] = [[false, false], [false, true], [true, false], [true, true]];

// Runs fn under each ISA path and thread count, restoring the addon's settings afterwards. Threads outermost: the
// pool is resized twice per test, not for every ISA.
function eachPath(fn: (isa: string, threads: number) => void): void {
  const threadsBefore = addon.numThreads();
  const isaBefore = addon.cpuInfo().isa;
  try {
    for (const threads of [1, 2]) {
      addon.setThreads(threads);
      for (const isa of ['portable', 'avx2', 'avx512']) {
        const active = addon.setIsa(isa);
        if (active !== isa) continue;  // this CPU lacks it: the capped path is tested under its own name
        fn(isa, threads);
      }
    }
  } finally {
    addon.setIsa(isaBefore);
    addon.setThreads(threadsBefore);
  }
}

// ------------------------------------------------------------------------------------------------------------------

describe('native gemm', function () {
  this.timeout(300000);
  beforeEach(() => {
    rng = mulberry32(20240611);
  });

  for (const dt of ['f32', 'bf16'] as Dtype[]) {
    it(`${dt}: squares 1, 7, 33, 129, 257, all transposes, every ISA path, 1 and 2 threads`, () => {
      eachPath((isa, threads) => {
        for (const n of [1, 7, 33, 129, 257]) {
          for (const [ta, tb] of TRANSPOSES) {
            try {
              checkGemm(gemm(n, n, n, ta, tb), dt);
            } catch (e) {
              throw new Error(`[${isa}, ${threads} threads] ${(e as Error).message}`);
            }
          }
        }
      });
    });

    it(`${dt}: odd shapes (M, N, K all different; small M, small N, K past one block) with alpha/beta and padding`, () => {
      const shapes: [number, number, number][] = [
        [13, 1, 300], [1, 517, 64], [300, 5, 17], [5, 250, 513], [2, 3, 4], [9, 100, 1000], [100, 3, 64],
        [8, 200, 96], [49, 97, 311], [600, 50, 520], [17, 1030, 9], [4, 9, 700], [9, 3100, 20], [20, 30, 1100],
      ];
      const scalars: [number, number][] = [[1, 0], [-0.5, 1], [2, 0.25], [0, 0.5]];
      eachPath((isa, threads) => {
        let s = 0;
        for (const [M, N, K] of shapes) {
          for (const [ta, tb] of TRANSPOSES) {
            const [alpha, beta] = scalars[s++ % scalars.length];
            const pad: [number, number, number] = [s % 3 === 0 ? 0 : 5, s % 2 ? 3 : 0, s % 4 === 1 ? 0 : 7];
            try {
              checkGemm(gemm(M, N, K, ta, tb, alpha, beta, pad), dt);
            } catch (e) {
              throw new Error(`[${isa}, ${threads} threads] ${(e as Error).message}`);
            }
          }
        }
      });
    });

    it(`${dt}: beta = 0 never reads C (NaN-filled C gives finite results)`, () => {
      eachPath((isa, threads) => {
        for (const [M, N, K] of [[33, 65, 17], [3, 100, 50], [100, 2, 40], [129, 129, 300]] as const) {
          for (const [ta, tb] of TRANSPOSES) {
            try {
              checkGemm(gemm(M, N, K, ta, tb, 1.5, 0, [1, 2, 3]), dt, { nanC: true });
            } catch (e) {
              throw new Error(`[${isa}, ${threads} threads] ${(e as Error).message}`);
            }
          }
        }
      });
    });

    it(`${dt}: K = 0 and alpha = 0 scale C by beta without reading A or B`, () => {
      eachPath(() => {
        for (const beta of [0, 0.5]) {
          for (const [K, alpha] of [[0, 1], [16, 0]]) {
            const g = gemm(9, 70, K, false, false, alpha, beta);
            const C0 = randomF32(g.M * g.ldc);
            const got = withBufs((mk) => {
              const c = mk(C0);
              const fn = dt === 'bf16' ? addon.gemmBf16 : addon.sgemm;
              // A and B are null: with K = 0 they are empty; with alpha = 0 they must not be read either, but the
              // API still wants them when their size is not 0, so pass real buffers there.
              if (K === 0) fn(false, false, g.M, g.N, 0, alpha, null, 1, null, g.ldb, beta, c.addr, g.ldc);
              else {
                const a = mk(new Float32Array(g.M * K).fill(NaN)), b = mk(new Float32Array(K * g.N).fill(NaN));
                fn(false, false, g.M, g.N, K, alpha, a.addr, g.lda, b.addr, g.ldb, beta, c.addr, g.ldc);
              }
              return c.readF32(g.M * g.ldc);
            });
            for (let i = 0; i < got.length; i++) {
              const want = beta === 0 ? 0 : Math.fround(beta * C0[i]);
              assert.ok(got[i] === want, `C[${i}] = ${got[i]}, want ${want} (K=${K} alpha=${alpha} beta=${beta})`);
            }
          }
        }
      });
    });
  }

  it('transformer shapes (M = 2048, K = 256, N = 1024), spot-checked rows, 2 threads, AVX-512 and bf16', () => {
    // The full reference would be 0.5 G multiply-adds in JavaScript: check 16 random rows instead.
    const threadsBefore = addon.numThreads();
    addon.setThreads(2);
    try {
      const M = 2048, N = 1024, K = 256;
      for (const dt of ['f32', 'bf16'] as Dtype[]) {
        for (const [ta, tb] of [[false, true], [false, false]] as [boolean, boolean][]) {
          const g = gemm(M, N, K, ta, tb);
          let A = randomF32(M * K), B = randomF32(K * N);
          const A16 = toBf16(A), B16 = toBf16(B);
          if (dt === 'bf16') A = bf16ToF32(A16), B = bf16ToF32(B16);
          const got = withBufs((mk) => {
            const a = dt === 'bf16' ? mk(A16) : mk(A), b = dt === 'bf16' ? mk(B16) : mk(B);
            const c = mk(new Float32Array(M * N).fill(NaN));
            (dt === 'bf16' ? addon.gemmBf16 : addon.sgemm)(ta, tb, M, N, K, 1, a.addr, g.lda, b.addr, g.ldb, 0, c.addr,
              g.ldc);
            return c.readF32(M * N);
          });
          const tol = 1e-4 * Math.sqrt(K) * maxAbs(A) * maxAbs(B);
          for (let r = 0; r < 16; r++) {
            const i = Math.floor(rng() * M);
            for (let j = 0; j < N; j++) {
              let s = 0;
              for (let k = 0; k < K; k++) s += A[i * K + k] * (tb ? B[j * K + k] : B[k * N + j]);
              assert.ok(Math.abs(got[i * N + j] - s) <= tol, `${dt} tb=${tb} C(${i}, ${j}) = ${got[i * N + j]}, want ${s}`);
            }
          }
        }
      }
    } finally {
      addon.setThreads(threadsBefore);
    }
  });

  it('batched: independent matrices, and stride 0 broadcasts A or B', () => {
    eachPath((isa, threads) => {
      const cases = [
        { batch: 3, M: 17, N: 33, K: 20, sa0: false, sb0: false, ta: false, tb: true },
        { batch: 4, M: 5, N: 70, K: 65, sa0: true, sb0: false, ta: true, tb: false },
        { batch: 5, M: 40, N: 6, K: 31, sa0: false, sb0: true, ta: false, tb: false },
        { batch: 2, M: 64, N: 64, K: 64, sa0: false, sb0: false, ta: true, tb: true },
        { batch: 3, M: 19, N: 150, K: 700, sa0: true, sb0: false, ta: false, tb: false },
      ];
      for (const t of cases) {
        const g = gemm(t.M, t.N, t.K, t.ta, t.tb, 0.75, 0.5, [2, 1, 3]);
        const aMat = (t.ta ? t.K : t.M) * g.lda, bMat = (t.tb ? t.N : t.K) * g.ldb, cMat = t.M * g.ldc + 5;
        const sa = t.sa0 ? 0 : aMat + 3, sb = t.sb0 ? 0 : bMat + 1, sc = cMat;
        const A = randomF32(t.sa0 ? aMat : sa * t.batch), B = randomF32(t.sb0 ? bMat : sb * t.batch);
        const C0 = randomF32(sc * t.batch);
        const got = withBufs((mk) => {
          const a = mk(A), b = mk(B), c = mk(C0);
          addon.sgemmBatched(t.batch, t.ta, t.tb, t.M, t.N, t.K, g.alpha, a.addr, g.lda, sa, b.addr, g.ldb, sb, g.beta,
            c.addr, g.ldc, sc);
          return c.readF32(sc * t.batch);
        });
        const scale = Math.abs(g.alpha) * maxAbs(A) * maxAbs(B) + Math.abs(g.beta) * maxAbs(C0);
        for (let i = 0; i < t.batch; i++) {
          const Ai = A.subarray(i * sa, i * sa + aMat), Bi = B.subarray(i * sb, i * sb + bMat);
          const Ci = C0.subarray(i * sc, i * sc + t.M * g.ldc);
          const want = refGemm(g, Ai, Bi, Ci);
          try {
            assertClose(`batch ${i}`, g, got.subarray(i * sc, i * sc + t.M * g.ldc), want, scale, Ci);
          } catch (e) {
            throw new Error(`[${isa}, ${threads} threads] ${JSON.stringify(t)} ${(e as Error).message}`);
          }
          // the gap between matrices is not written
          for (let j = t.M * g.ldc; j < sc; j++) assert.strictEqual(got[i * sc + j], C0[i * sc + j]);
        }
      }
    });
  });

  it('sgemmBatchedSharedA (the 1x1 convolutions): A packed once, wide B in strips; small M and narrow B as batched', () => {
    eachPath((isa, threads) => {
      const cases = [
        // several one-sliver strips with a partial last one (K 700), one image on two threads with a transposed A,
        // K 1, and the fallbacks: M <= 8 (small-M path) and N too narrow for strips
        { batch: 3, M: 19, N: 150, K: 700, ta: false },
        { batch: 1, M: 13, N: 301, K: 33, ta: true },
        { batch: 4, M: 9, N: 96, K: 1, ta: false },
        { batch: 2, M: 6, N: 200, K: 17, ta: true },
        { batch: 3, M: 40, N: 50, K: 9, ta: false },
      ];
      for (const t of cases) {
        const g = gemm(t.M, t.N, t.K, t.ta, false, 0.75, 0.5, [2, 1, 3]);
        const aMat = (t.ta ? t.K : t.M) * g.lda, bMat = t.K * g.ldb, cMat = t.M * g.ldc + 5;
        const sb = bMat + 1, sc = cMat;
        const A = randomF32(aMat), B = randomF32(sb * t.batch), C0 = randomF32(sc * t.batch);
        const got = withBufs((mk) => {
          const a = mk(A), b = mk(B), c = mk(C0);
          addon.sgemmBatchedSharedA(t.batch, t.ta, t.M, t.N, t.K, g.alpha, a.addr, g.lda, b.addr, g.ldb, sb, g.beta,
            c.addr, g.ldc, sc);
          return c.readF32(sc * t.batch);
        });
        const scale = Math.abs(g.alpha) * maxAbs(A) * maxAbs(B) + Math.abs(g.beta) * maxAbs(C0);
        for (let i = 0; i < t.batch; i++) {
          const Bi = B.subarray(i * sb, i * sb + bMat), Ci = C0.subarray(i * sc, i * sc + t.M * g.ldc);
          try {
            assertClose(`batch ${i}`, g, got.subarray(i * sc, i * sc + t.M * g.ldc), refGemm(g, A, Bi, Ci), scale, Ci);
          } catch (e) {
            throw new Error(`[${isa}, ${threads} threads] ${JSON.stringify(t)} ${(e as Error).message}`);
          }
          for (let j = t.M * g.ldc; j < sc; j++) assert.strictEqual(got[i * sc + j], C0[i * sc + j]);
        }
      }
    });
  });

  it('agrees with the native references (sgemmReference, gemmBf16Reference)', () => {
    for (const dt of ['f32', 'bf16'] as Dtype[]) {
      const g = gemm(37, 41, 43, true, false, 1.25, 0.5, [1, 2, 3]);
      const A = randomF32((g.K) * g.lda), B = randomF32(g.K * g.ldb), C0 = randomF32(g.M * g.ldc);
      const A16 = toBf16(A), B16 = toBf16(B);
      const [fast, ref] = withBufs((mk) => {
        const a = dt === 'bf16' ? mk(A16) : mk(A), b = dt === 'bf16' ? mk(B16) : mk(B), c1 = mk(C0), c2 = mk(C0);
        (dt === 'bf16' ? addon.gemmBf16 : addon.sgemm)(g.ta, g.tb, g.M, g.N, g.K, g.alpha, a.addr, g.lda, b.addr, g.ldb,
          g.beta, c1.addr, g.ldc);
        (dt === 'bf16' ? addon.gemmBf16Reference : addon.sgemmReference)(g.ta, g.tb, g.M, g.N, g.K, g.alpha, a.addr,
          g.lda, b.addr, g.ldb, g.beta, c2.addr, g.ldc);
        return [c1.readF32(g.M * g.ldc), c2.readF32(g.M * g.ldc)];
      });
      const want = refGemm(g, dt === 'bf16' ? bf16ToF32(A16) : A, dt === 'bf16' ? bf16ToF32(B16) : B, C0);
      const scale = Math.abs(g.alpha) * maxAbs(A) * maxAbs(B) + Math.abs(g.beta) * maxAbs(C0);
      assertClose(`${dt} native reference`, g, ref, want, scale, C0);
      assertClose(`${dt} fast`, g, fast, want, scale, C0);
    }
  });

  it('rejects bad arguments with an error naming the shapes, never a crash', () => {
    const isNative = (re: RegExp) => (err: Error & { code?: string }) => err.code === 'DALLE_NATIVE' && re.test(err.message);
    withBufs((mk) => {
      const a = mk(new Float32Array(64)).addr, b = mk(new Float32Array(64)).addr, c = mk(new Float32Array(64)).addr;
      assert.throws(() => addon.sgemm(false, false, -1, 4, 4, 1, a, 4, b, 4, 0, c, 4), isNative(/negative size: M=-1/));
      assert.throws(() => addon.sgemm(false, false, 4, 4, 8, 1, a, 4, b, 4, 0, c, 4),
        isNative(/lda=4 is less than the row length of A, stored \(4, 8\)/));
      assert.throws(() => addon.sgemm(false, true, 4, 8, 4, 1, a, 4, b, 3, 0, c, 8),
        isNative(/ldb=3 .* B, stored \(8, 4\) \(transposed\)/));
      assert.throws(() => addon.sgemm(false, false, 4, 8, 4, 1, a, 4, b, 8, 0, c, 4), isNative(/ldc=4 .* C \(4, 8\)/));
      assert.throws(() => addon.sgemm(false, false, 4, 4, 4, 1, null, 4, b, 4, 0, c, 4), isNative(/A is null/));
      assert.throws(() => addon.sgemm(false, false, 4, 4, 4, 1, a, 4, null, 4, 0, c, 4), isNative(/B is null/));
      assert.throws(() => addon.sgemm(false, false, 4, 4, 4, 1, a, 4, b, 4, 0, null, 4), isNative(/C is null/));
      assert.throws(() => addon.gemmBf16(true, false, 4, 4, 4, 1, a, 2, b, 4, 0, c, 4), isNative(/gemmBf16: lda=2/));
      assert.throws(() => addon.sgemmBatched(2, false, false, 2, 2, 2, 1, a, 2, 4, b, 2, 4, 0, c, 2, 0),
        isNative(/stride of C \(0\) makes the \(2, 2\) results of the batch overlap/));
      assert.throws(() => addon.sgemmBatched(-1, false, false, 2, 2, 2, 1, a, 2, 4, b, 2, 4, 0, c, 2, 4),
        isNative(/negative batch/));
      assert.throws(() => addon.sgemmBatched(2, false, false, 2, 2, 2, 1, a, 2, -4, b, 2, 4, 0, c, 2, 4),
        isNative(/negative batch stride/));
      assert.throws(() => (addon.sgemm as unknown as (...x: unknown[]) => void)(false, false, 4, 4),
        isNative(/missing/));
      // empty problems are fine with null pointers
      addon.sgemm(false, false, 0, 5, 3, 1, null, 3, b, 5, 0, null, 5);
      addon.sgemm(false, false, 3, 0, 5, 1, a, 5, null, 1, 0, null, 1);
      addon.sgemmBatched(0, false, false, 3, 3, 3, 1, null, 3, 9, null, 3, 9, 0, null, 3, 9);
    });
  });
});
