// The CUDA block-sparse attention (native/cuda/attention.cu) at the prior's shape: 256 text + 32 x 32 image tokens
// (T = 1280), 64-wide heads, fp16, for the row, column and conv (k = 11) masks, forward and backward, against PyTorch's
// SDPA flash kernel on dense causal attention of the same shape (bench/ref/cuda_sdpa.py) and against FlexAttention
// with the same block-sparse mask (bench/ref/cuda_flex.py, given the dense mask of masks.ts isAllowed as a file), when
// python3 has torch with CUDA. TFLOP/s count the pairs each side must compute: the mask's allowed pairs, the causal
// pairs for SDPA. Needs a GPU: without one it says so and exits 0 (so `npm run bench` on a CPU machine passes over it).
//   node dist/bench/cuda-attention.js [--batch 4] [--heads 16] [--iters 20] [--json] [--out FILE]
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { cudaAddon, cudaStatus } from '../src/core/cuda';
import { allowedPairs, isAllowed, MaskKind, MaskSpec, seqLen } from '../src/core/models/prior/masks';

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

const refDir = path.join(__dirname, '..', '..', 'bench', 'ref');

/** The last JSON line of a reference script, or why there is none. */
function runReference(script: string, args: string[]): Record<string, unknown> {
  const py = spawnSync('python3', [path.join(refDir, script), ...args], { encoding: 'utf8', timeout: 300000 });
  if (py.status === 0) return JSON.parse(py.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
  return { error: (py.stderr || py.error?.message || `exit ${py.status}`).trim().split('\n').slice(-3).join(' | ') };
}

/** The dense (T, T) mask of masks.ts as bytes (1 = allowed), for FlexAttention's block mask. */
function writeDenseMask(spec: MaskSpec, file: string): void {
  const T = seqLen(spec);
  const bytes = new Uint8Array(T * T);
  for (let i = 0; i < T; i++) for (let j = 0; j <= i; j++) bytes[i * T + j] = isAllowed(spec, i, j) ? 1 : 0;
  fs.writeFileSync(file, bytes);
}

const tflops = (pairs: number, gemmFlopsPerPair: number, ms: unknown): number | null =>
  typeof ms === 'number' && ms > 0 ? (pairs * gemmFlopsPerPair) / ms / 1e9 : null;

function main(): void {
  const status = cudaStatus();
  if (!status.available) {
    console.log(`cuda-attention: skipped: ${status.reason}`);
    return;
  }
  const cuda = cudaAddon();
  const B = flag('--batch', 4);
  const H = flag('--heads', 16);
  const iters = flag('--iters', 20);
  const D = 64;
  const rows: Array<Record<string, unknown>> = [];
  const device = status.devices[0].name;
  for (const [kind, k] of [['row', 1], ['column', 1], ['conv', 11]] as Array<[MaskKind, number]>) {
    const spec: MaskSpec = { kind, textLen: 256, gridSide: 32, convKernel: k };
    const T = seqLen(spec);
    const n = B * H * T * D;
    const bufs = [n, n, n, n, n, n, n, n].map(() => cuda.malloc(n * 2));
    const [q, kk, v, o, dO, dq, dk, dv] = bufs;
    const lse = cuda.malloc(B * H * T * 4);
    const delta = cuda.malloc(B * H * T * 4);
    // Random fp16 inputs: small uniform values written as f32 then cast on the device.
    const tmp = cuda.malloc(n * 4);
    const host = Float32Array.from({ length: n }, () => Math.random() - 0.5);
    cuda.copyIn(tmp, host);
    for (const b of [q, kk, v, dO]) cuda.cast(b, 'f16', tmp, 'f32', n);
    const fwd = (): void => cuda.blockSparseAttentionForward('f16', kind, 256, 32, k, q, kk, v, o, lse, B, H, D, D, 1 / Math.sqrt(D));
    const bwd = (): void =>
      cuda.blockSparseAttentionBackward('f16', kind, 256, 32, k, q, kk, v, o, dO, lse, dq, dk, dv, delta, B, H, D, D, 1 / Math.sqrt(D));
    const time = (f: () => void): number => {
      for (let i = 0; i < 3; i++) f();
      cuda.synchronize();
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < iters; i++) f();
      cuda.synchronize();
      return Number(process.hrtime.bigint() - t0) / 1e6 / iters;
    };
    fwd();
    const fMs = time(fwd);
    const bMs = time(bwd);
    const pairs = allowedPairs(spec);
    // Useful FLOPs: 2 GEMMs of 2 * D per allowed pair forward, 5 backward (dV, dP, dQ, dK + the recomputed S).
    const maskFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'dalle-mask-')), `${kind}.u8`);
    writeDenseMask(spec, maskFile);
    const flex = runReference('cuda_flex.py', [String(B), String(H), String(T), String(D), String(iters), maskFile]);
    rows.push({ kind: kind === 'conv' ? `conv${k}` : kind, B, H, T, D, allowedPairs: pairs, allowedFraction: pairs / ((T * (T + 1)) / 2),
      forwardMs: fMs, backwardMs: bMs, forwardTflops: tflops(B * H * pairs, 4 * D, fMs), backwardTflops: tflops(B * H * pairs, 10 * D, bMs),
      flex: { ...flex, forwardTflops: tflops(B * H * pairs, 4 * D, flex.forward_ms), backwardTflops: tflops(B * H * pairs, 10 * D, flex.backward_ms) } });
    for (const b of [...bufs, lse, delta, tmp]) cuda.free(b);
  }
  const T = 1280;
  const causal = (T * (T + 1)) / 2;
  const ref = runReference('cuda_sdpa.py', [String(B), String(H), String(T), String(D), String(iters)]);
  const sdpa: Record<string, unknown> = { ...ref, causalPairs: causal, forwardTflops: tflops(B * H * causal, 4 * D, ref.forward_ms), backwardTflops: tflops(B * H * causal, 10 * D, ref.backward_ms) };
  const result = { device, ours: rows, sdpaFlashCausal: sdpa };
  const outIndex = process.argv.indexOf('--out');
  if (outIndex >= 0) fs.writeFileSync(process.argv[outIndex + 1], JSON.stringify(result, null, 2) + '\n');
  if (process.argv.includes('--json')) {
    console.log(JSON.stringify(result));
    return;
  }
  console.log(`CUDA sparse attention on ${device}: fp16, 256 text + 32x32 image (T = 1280), D = ${D}, B = ${B}, H = ${H}`);
  for (const r of rows) {
    const flex = r.flex as Record<string, unknown>;
    console.log(`  ${String(r.kind).padEnd(7)} forward ${(r.forwardMs as number).toFixed(3)} ms (${(r.forwardTflops as number).toFixed(1)} TFLOP/s useful), ` +
      `backward ${(r.backwardMs as number).toFixed(3)} ms, ${((r.allowedFraction as number) * 100).toFixed(1)}% of causal pairs; ` +
      (flex.error ? `FlexAttention not run: ${String(flex.error)}` : `FlexAttention forward ${Number(flex.forward_ms).toFixed(3)} ms, backward ${Number(flex.backward_ms).toFixed(3)} ms`));
  }
  if (sdpa.error) console.log(`  PyTorch SDPA reference not run: ${String(sdpa.error)}`);
  else console.log(`  PyTorch ${String(sdpa.torch)} SDPA flash, dense causal: forward ${Number(sdpa.forward_ms).toFixed(3)} ms, backward ${Number(sdpa.backward_ms).toFixed(3)} ms`);
}

main();
