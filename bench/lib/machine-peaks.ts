// What this machine can reach, measured in the benchmark's own run (so an op's bound and its time share the same
// clock, threads and neighbours):
// - memory bandwidth: a 256 MiB copy (the addon's memcpy: 256 MiB read + 256 MiB written) and STREAM's "add"
//   (c = a + b over 64 Mi floats through the addon's flat elementwise kernel: 2 reads + 1 write); the faster counts;
// - FLOP peak: the fastest GEMM reached, ours (2048^3 sgemm and bf16 gemm) and OpenBLAS's sgemm at the same size
//   (bench/out/openblas_gemm, built by bench/setup.sh; skipped when absent, and said). The FMA-loop ceiling of
//   bench/lib/peak.ts is reported beside it: ops are held to what a GEMM reaches, not to the FMA units' limit.
// Each figure is the best of a few timed repetitions after a warm-up.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import { native } from '../../src/core/native';
import { OPENBLAS_BIN, measuredPeak } from './peak';

interface PeakAddon {
  alloc(bytes: number): number;
  free(address: number, bytes: number): void;
  copyIn(address: number, data: ArrayBufferView): void;
  memcpy(dst: number, src: number, bytes: number): void;
  ewBinaryFlat(code: number, n: number, out: number, a: number, b: number): void;
  sgemm(ta: boolean, tb: boolean, M: number, N: number, K: number, alpha: number, a: number, lda: number, b: number,
    ldb: number, beta: number, c: number, ldc: number): void;
  gemmBf16(ta: boolean, tb: boolean, M: number, N: number, K: number, alpha: number, a: number, lda: number,
    b: number, ldb: number, beta: number, c: number, ldc: number): void;
}
const addon = native as unknown as PeakAddon;

const EW_ADD = 0; // native/cpu/elementwise.cc's binary op code for add

export interface MachinePeaks {
  /** Bytes per second (the faster of copy and add). */
  bandwidth: number;
  copyBandwidth: number;
  addBandwidth: number;
  /** FLOP per second reached by the fastest f32 GEMM (ours or OpenBLAS). */
  flopsF32: number;
  /** FLOP per second reached by our bf16 GEMM (or flopsF32 if faster). */
  flopsBf16: number;
  notes: string[];
}

function bestSeconds(fn: () => void, reps: number): number {
  fn(); // warm-up: first touch of the pages, packing buffers
  let best = Infinity;
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return best;
}

function withBuffers<T>(sizes: number[], fn: (addresses: number[]) => T): T {
  const addresses: number[] = [];
  try {
    for (const s of sizes) addresses.push(addon.alloc(s));
    return fn(addresses);
  } finally {
    addresses.forEach((a, i) => addon.free(a, sizes[i]));
  }
}

function fillConstant(address: number, floats: number, value: number): void {
  const chunk = new Float32Array(Math.min(floats, 1 << 20)).fill(value);
  for (let i = 0; i < floats; i += chunk.length) {
    const n = Math.min(chunk.length, floats - i);
    addon.copyIn(address + 4 * i, n === chunk.length ? chunk : chunk.subarray(0, n));
  }
}

function measureBandwidth(bytes: number, reps: number): { copy: number; add: number } {
  const floats = bytes / 4;
  return withBuffers([bytes, bytes, bytes], ([a, b, c]) => {
    fillConstant(a, floats, 1);
    fillConstant(b, floats, 2);
    const copy = (2 * bytes) / bestSeconds(() => addon.memcpy(c, a, bytes), reps);
    const add = (3 * bytes) / bestSeconds(() => addon.ewBinaryFlat(EW_ADD, floats, c, a, b), reps);
    return { copy, add };
  });
}

function ourGemm(n: number, dtype: 'f32' | 'bf16', reps: number): number {
  const es = dtype === 'f32' ? 4 : 2;
  return withBuffers([n * n * es, n * n * es, n * n * 4], ([a, b, c]) => {
    if (dtype === 'f32') {
      fillConstant(a, n * n, 0.5);
      fillConstant(b, n * n, 0.25);
    } else {
      addon.copyIn(a, new Uint16Array(n * n).fill(0x3f00)); // 0.5
      addon.copyIn(b, new Uint16Array(n * n).fill(0x3e80)); // 0.25
    }
    const gemm = dtype === 'f32' ? addon.sgemm : addon.gemmBf16;
    return (2 * n * n * n) / bestSeconds(() => gemm(false, false, n, n, n, 1, a, n, b, n, 0, c, n), reps);
  });
}

/** OpenBLAS sgemm FLOP/s at n^3 on `threads` threads, or null (with the reason in notes) when unavailable. */
function openblasGemm(n: number, threads: number, notes: string[]): number | null {
  if (!fs.existsSync(OPENBLAS_BIN)) {
    notes.push(`OpenBLAS reference skipped: ${OPENBLAS_BIN} missing (bash bench/setup.sh builds it)`);
    return null;
  }
  const env: NodeJS.ProcessEnv = { ...process.env, OMP_NUM_THREADS: String(threads), OPENBLAS_NUM_THREADS: String(threads) };
  const r = spawnSync(OPENBLAS_BIN, ['gemm', String(n), String(n), String(n), '0', '0'], { env, encoding: 'utf8' });
  const gflops = Number((r.stdout ?? '').trim().split(/\s+/)[6]);
  if (r.status !== 0 || !(gflops > 0)) {
    notes.push(`OpenBLAS reference failed (${(r.stderr || String(r.error ?? 'no output')).trim().split('\n').pop()})`);
    return null;
  }
  return gflops * 1e9;
}

export interface PeakOptions {
  threads: number;
  /** Buffer size of the bandwidth runs (256 MiB: far beyond any cache). */
  bandwidthBytes: number;
  /** GEMM size (2048: where our GEMM and OpenBLAS reach their best on these machines, bench/gemm.ts). */
  gemmN: number;
  reps: number;
}

export function measureMachinePeaks(o: PeakOptions): MachinePeaks {
  const notes: string[] = [];
  const bw = measureBandwidth(o.bandwidthBytes, o.reps);
  const f32 = ourGemm(o.gemmN, 'f32', o.reps);
  const bf16 = ourGemm(o.gemmN, 'bf16', o.reps);
  const blas = openblasGemm(o.gemmN, o.threads, notes);
  const fma = measuredPeak(o.threads);
  const mib = o.bandwidthBytes / (1 << 20);
  notes.push(`bandwidth: ${mib} MiB copy ${(bw.copy / 1e9).toFixed(1)} GB/s, add (2 reads + 1 write) ${(bw.add / 1e9).toFixed(1)} GB/s`);
  notes.push(`GEMM ${o.gemmN}^3: ours f32 ${(f32 / 1e9).toFixed(1)}, bf16 ${(bf16 / 1e9).toFixed(1)}` +
    (blas ? `, OpenBLAS sgemm ${(blas / 1e9).toFixed(1)}` : '') + ' GFLOP/s; FMA-loop ceiling ' +
    `${fma.fp32.toFixed(0)} f32 / ${fma.bf16.toFixed(0)} bf16 GFLOP/s${fma.measured ? '' : ' (assumed, not measured)'}`);
  const flopsF32 = Math.max(f32, blas ?? 0);
  return {
    bandwidth: Math.max(bw.copy, bw.add), copyBandwidth: bw.copy, addBandwidth: bw.add, flopsF32,
    flopsBf16: Math.max(bf16, flopsF32), notes,
  };
}
