// Minor page faults per steady-state training step. On these VMs each first touch of a 4 KiB page costs 13-20 us, so
// the engine's caching allocator must serve a warmed-up step from memory it already has: the target is zero.
// The process-wide count includes the JavaScript heap (V8's scavenger and JIT touch fresh pages as objects come and
// go); the kernel pool threads' own count and the allocator's OS allocations show the engine's part.
// Run: node dist/bench/page-faults.js   (BENCH_STEPS=N for a longer measurement)
import * as fs from 'fs';
import { native } from '../src/core/native';
import { Conv2d, LayerNorm, Linear } from '../src/core/nn';
import {
  attention, crossEntropy, gelu, maxPool2x2, mean, permute, relu, reshape, slice, square, sub, upsample2x,
} from '../src/core/ops';
import { Tensor, backward, keep, tidy, zeroGrad } from '../src/core/tensor';
import { Philox } from '../src/core/tensor/rng';
import { AdamW } from '../src/core/train/adamw';

/** Minor faults of the native kernel pool's worker threads (named dalle-pool), from /proc on Linux; 0 elsewhere. */
function poolThreadFaults(): number {
  let total = 0;
  try {
    for (const tid of fs.readdirSync('/proc/self/task')) {
      const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      if (stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) !== 'dalle-pool') continue;
      total += Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7]); // field 10: minflt
    }
  } catch {
    // not Linux
  }
  return total;
}

function measure(name: string, params: Array<[string, Tensor]>, body: () => Tensor, steps = Number(process.env.BENCH_STEPS ?? 50)): void {
  const opt = new AdamW([{ params: params.map(([n, t]) => ({ name: n, tensor: t })) }], {
    lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0,
  });
  const step = () =>
    tidy(() => {
      zeroGrad(opt.parameters);
      const loss = body();
      backward(loss);
      opt.update();
    });
  for (let i = 0; i < 10; i++) step(); // warm-up: the allocator cache fills
  const pool0 = poolThreadFaults();
  const faults0 = native.minorFaults();
  const os0 = native.allocStats().osAllocs;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < steps; i++) step();
  const ms = Number(process.hrtime.bigint() - t0) / 1e6 / steps;
  const faults = (native.minorFaults() - faults0) / steps;
  const poolFaults = (poolThreadFaults() - pool0) / steps;
  const osAllocs = native.allocStats().osAllocs - os0;
  console.log(
    `${name.padEnd(34)} ${ms.toFixed(2).padStart(8)} ms/step   minor faults/step: ${faults.toFixed(2).padStart(6)} ` +
      `(kernel pool threads ${poolFaults.toFixed(2)})   new blocks from the OS: ${osAllocs}`,
  );
  opt.dispose();
}

function main(): void {
  const threads = Number(process.env.DALLE_THREADS ?? 2);
  native.setThreads(threads);
  console.log(`page faults per steady-state step (${threads} threads, ${native.cpuInfo().isa})`);
  const rng = new Philox(1);

  // The dVAE's op mix: convolutions, pooling, upsampling at 64 px, batch 16.
  const c1 = new Conv2d(3, 64, 7, rng);
  const c2 = new Conv2d(64, 64, 3, rng);
  const c3 = new Conv2d(64, 3, 1, rng);
  const img = new Float32Array(16 * 3 * 64 * 64);
  rng.fillUniform(img);
  const x = keep(Tensor.from(img, [16, 3, 64, 64]));
  measure('conv model (64 px, batch 16)',
    [...c1.namedParameters('c1.'), ...c2.namedParameters('c2.'), ...c3.namedParameters('c3.')],
    () => mean(square(sub(c3.forward(upsample2x(relu(c2.forward(maxPool2x2(relu(c1.forward(x))))))), x))));

  // The prior's op mix: layer norm, attention, MLP, cross-entropy (batch 8, 288 tokens, d 256).
  const B = 8, T = 288, C = 256, H = 8, V = 1024;
  const ln = new LayerNorm(C);
  const qkv = new Linear(C, 3 * C, rng);
  const fc = new Linear(C, 4 * C, rng);
  const proj = new Linear(4 * C, C, rng);
  const head = new Linear(C, V, rng);
  const hostX = new Float32Array(B * T * C);
  rng.fillNormal(hostX);
  const h0 = keep(Tensor.from(hostX, [B, T, C]));
  const targets = keep(Tensor.from(Int32Array.from({ length: B * T }, (_, i) => (i * 7919) % V), [B * T], 'i32'));
  measure('transformer block (8 x 288, d 256)',
    [...ln.namedParameters('ln.'), ...qkv.namedParameters('qkv.'), ...fc.namedParameters('fc.'),
      ...proj.namedParameters('proj.'), ...head.namedParameters('head.')],
    () => {
      const n = ln.forward(h0);
      // (B, T, 3C) -> (3, B, H, T, D)
      const q = permute(reshape(qkv.forward(n), [B, T, 3, H, C / H]), [2, 0, 3, 1, 4]);
      const [qq, kk, vv] = [0, 1, 2].map((i) => reshape(slice(q, [[i, i + 1]]), [B, H, T, C / H]));
      const a = reshape(permute(attention(qq, kk, vv, undefined, { causal: true }), [0, 2, 1, 3]), [B, T, C]);
      const m = proj.forward(gelu(fc.forward(a)));
      return crossEntropy(reshape(head.forward(m), [B * T, V]), targets, undefined, { reduction: 'mean' });
    });
}

main();
