// The CUDA block-sparse attention (native/cuda/attention.cu) at the prior's shape: 256 text + 32 x 32 image tokens
// (T = 1280), 64-wide heads, fp16, for the row, column and conv (k = 11) masks, forward and backward, against PyTorch's
// SDPA flash kernel on dense causal attention of the same shape (bench/ref/cuda_sdpa.py, when python3 has torch with
// CUDA). Needs a GPU: without one it says so and exits 0 (so `npm run bench` on a CPU machine passes over it).
//   node dist/bench/cuda-attention.js [--batch 4] [--heads 16] [--iters 20] [--json]
import { spawnSync } from 'child_process';
import * as path from 'path';
import { cudaAddon, cudaStatus } from '../src/core/cuda';
import { allowedPairs, MaskKind, MaskSpec, seqLen } from '../src/core/models/prior/masks';

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

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
    const fwd = (): void => cuda.attentionForward('f16', kind, 256, 32, k, q, kk, v, o, lse, B, H, D, D, 1 / Math.sqrt(D));
    const bwd = (): void =>
      cuda.attentionBackward('f16', kind, 256, 32, k, q, kk, v, o, dO, lse, dq, dk, dv, delta, B, H, D, D, 1 / Math.sqrt(D));
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
    rows.push({ kind: kind === 'conv' ? `conv${k}` : kind, B, H, T, D, allowedFraction: pairs / ((T * (T + 1)) / 2),
      forwardMs: fMs, backwardMs: bMs, forwardTflops: (B * H * pairs * 4 * D) / fMs / 1e9, backwardTflops: (B * H * pairs * 10 * D) / bMs / 1e9 });
    for (const b of [...bufs, lse, delta, tmp]) cuda.free(b);
  }
  let sdpa: Record<string, unknown> | null = null;
  const py = spawnSync('python3', [path.join(__dirname, '..', '..', 'bench', 'ref', 'cuda_sdpa.py'), String(B), String(H), '1280', String(D), String(iters)], { encoding: 'utf8' });
  if (py.status === 0) sdpa = JSON.parse(py.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
  if (process.argv.includes('--json')) {
    console.log(JSON.stringify({ device, ours: rows, sdpaFlashCausal: sdpa }));
    return;
  }
  console.log(`CUDA sparse attention on ${device}: fp16, 256 text + 32x32 image (T = 1280), D = ${D}, B = ${B}, H = ${H}`);
  for (const r of rows) {
    console.log(`  ${String(r.kind).padEnd(7)} forward ${(r.forwardMs as number).toFixed(3)} ms (${(r.forwardTflops as number).toFixed(1)} TFLOP/s useful), ` +
      `backward ${(r.backwardMs as number).toFixed(3)} ms, ${((r.allowedFraction as number) * 100).toFixed(1)}% of causal pairs`);
  }
  if (sdpa) {
    console.log(`  PyTorch ${sdpa.torch} SDPA flash, dense causal: forward ${(sdpa.forward_ms as number).toFixed(3)} ms, backward ${(sdpa.backward_ms as number).toFixed(3)} ms`);
  } else {
    console.log(`  PyTorch SDPA reference not run: ${(py.stderr || py.error?.message || '').trim().split('\n').pop()}`);
  }
}

main();
