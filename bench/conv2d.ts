// conv2d forward + backward at the dVAE's shapes (dvae-emoji: 64 px, n_hid 64, 3 groups, 1 block per group, vocab 1024,
// batch 16), against PyTorch CPU timed in the same run (bench/ref/torch_conv.py as a child process: Debian
// python3-torch 1.13 (oneDNN convolutions), jemalloc preloaded and told to keep its memory, OpenBLAS's AVX-512 kernels,
// the same thread count). Set-up: bash bench/setup.sh.
//   node dist/bench/conv2d.js [--threads 2] [--reps 10] [--rounds 2] [--filter 3x3] [--no-torch] [--json]
// Times are the best of --reps after warm-up, and the best over --rounds (each round runs PyTorch, then ours), since
// other processes on a shared 2-core machine add noise. "step" = forward + backward (dx, dw, db; the 7x7 input
// convolution has no dx, in both). GFLOP/s counts 2 B H W Co C k^2 per pass (padding taps included); the peak is
// 64 FLOP/cycle/core at 3.3 GHz unless DALLE_PEAK_GFLOPS says otherwise.
// Key: B batch, C in channels, Co out channels, H x W image, k kernel.
import { native } from '../src/core/native';
import { measuredPeak } from './lib/peak';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

interface Addon {
  alloc(bytes: number): number;
  free(address: number, bytes: number): void;
  copyIn(address: number, data: ArrayBufferView): void;
  setThreads(n: number): number;
  cpuInfo(): { isa: string };
  conv2dForward(x: number, w: number, b: number | null, y: number, B: number, C: number, Co: number, H: number,
    W: number, k: number): void;
  conv2dBackward(x: number | null, w: number | null, dy: number, dx: number | null, dw: number | null,
    db: number | null, B: number, C: number, Co: number, H: number, W: number, k: number): void;
}
const addon: Addon = native as unknown as Addon; // loaded by the engine (DALLE_ADDON honoured)

interface Shape {
  name: string; B: number; Cin: number; Cout: number; H: number; W: number; k: number; dx: boolean;
  count: number;  // how many convolutions of this shape one dVAE training step runs (encoder + decoder)
  where: string;
}

const B = 16;
function shape(k: number, Cin: number, Cout: number, H: number, count: number, where: string, dx = true): Shape {
  return { name: `${k}x${k} ${Cin}->${Cout} @${H}`, B, Cin, Cout, H, W: H, k, dx, count, where };
}

// Encoder: 7x7 input conv; groups of widths 64, 128, 256 at 64, 32, 16 px (resblock: 3x3 n_in -> n_out/4, two 3x3,
// 1x1 -> n_out; 1x1 identity when widths differ); 1x1 to 1024 logits. Decoder: 1x1 1024 -> 128; groups of widths
// 256, 128, 64 at 16, 32, 64 px (resblock: 1x1 n_in -> n_out/4, three 3x3, the last to n_out); 1x1 to 6 channels.
const SHAPES: Shape[] = [
  shape(3, 64, 16, 64, 1, 'enc g1 conv_1'),
  shape(3, 16, 16, 64, 4, 'enc g1 conv_2,3; dec g3 conv_2,3'),
  shape(3, 16, 64, 64, 1, 'dec g3 conv_4'),
  shape(3, 64, 32, 32, 1, 'enc g2 conv_1'),
  shape(3, 32, 32, 32, 4, 'enc g2 conv_2,3; dec g2 conv_2,3'),
  shape(3, 32, 128, 32, 1, 'dec g2 conv_4'),
  shape(3, 128, 64, 16, 1, 'enc g3 conv_1'),
  shape(3, 64, 64, 16, 4, 'enc g3 conv_2,3; dec g1 conv_2,3'),
  shape(3, 64, 256, 16, 1, 'dec g1 conv_4'),
  shape(7, 3, 64, 64, 1, 'enc input (no dx)', false),
  shape(1, 16, 64, 64, 1, 'enc g1 conv_4'),
  shape(1, 64, 128, 32, 1, 'enc g2 id'),
  shape(1, 32, 128, 32, 1, 'enc g2 conv_4'),
  shape(1, 128, 256, 16, 2, 'enc g3 id; dec g1 id'),
  shape(1, 64, 256, 16, 1, 'enc g3 conv_4'),
  shape(1, 256, 1024, 16, 1, 'enc output'),
  shape(1, 1024, 128, 16, 1, 'dec input'),
  shape(1, 128, 64, 16, 1, 'dec g1 conv_1'),
  shape(1, 256, 128, 32, 1, 'dec g2 id'),
  shape(1, 256, 32, 32, 1, 'dec g2 conv_1'),
  shape(1, 128, 64, 64, 1, 'dec g3 id'),
  shape(1, 128, 16, 64, 1, 'dec g3 conv_1'),
  shape(1, 64, 6, 64, 1, 'dec output'),
];

interface Timing { fwd_ms: number; step_ms: number }

function args(): { threads: number; reps: number; rounds: number; filter: string; torch: boolean; json: boolean } {
  const a = process.argv.slice(2);
  const get = (flag: string, dflt: string): string => {
    const i = a.indexOf(flag);
    return i >= 0 && i + 1 < a.length ? a[i + 1] : dflt;
  };
  return {
    threads: Number(get('--threads', '2')),
    reps: Number(get('--reps', '10')),
    rounds: Number(get('--rounds', '2')),
    filter: get('--filter', ''),
    torch: !a.includes('--no-torch'),
    json: a.includes('--json'),
  };
}

function randomBuffer(n: number, scale: number): { p: number; bytes: number } {
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = (Math.random() * 2 - 1) * scale;
  const bytes = 4 * n;
  const p = addon.alloc(bytes);
  addon.copyIn(p, data);
  return { p, bytes };
}

function timeOurs(s: Shape, reps: number): Timing {
  const { B: b, Cin, Cout, H, W, k } = s;
  const bufs = [
    randomBuffer(b * Cin * H * W, 1), randomBuffer(Cout * Cin * k * k, 1 / Math.sqrt(Cin * k * k)),
    randomBuffer(Cout, 1), randomBuffer(b * Cout * H * W, 1), randomBuffer(b * Cout * H * W, 0),
    randomBuffer(b * Cin * H * W, 0), randomBuffer(Cout * Cin * k * k, 0), randomBuffer(Cout, 0),
  ];
  const [x, w, bias, dy, y, dx, dw, db] = bufs.map((q) => q.p);
  let fwd = Infinity, step = Infinity;
  try {
    for (let r = 0; r < reps + 2; r++) {
      const t0 = process.hrtime.bigint();
      addon.conv2dForward(x, w, bias, y, b, Cin, Cout, H, W, k);
      const t1 = process.hrtime.bigint();
      addon.conv2dBackward(x, w, dy, s.dx ? dx : null, dw, db, b, Cin, Cout, H, W, k);
      const t2 = process.hrtime.bigint();
      if (r >= 2) {  // two warm-up calls: workspaces cached, pages touched
        fwd = Math.min(fwd, Number(t1 - t0) / 1e6);
        step = Math.min(step, Number(t2 - t0) / 1e6);
      }
    }
  } finally {
    for (const q of bufs) addon.free(q.p, q.bytes);
  }
  return { fwd_ms: fwd, step_ms: step };
}

function timeTorch(shapes: Shape[], threads: number, reps: number): { version: string; results: Map<string, Timing> } | string {
  const python = process.env.PYTHON ?? '/usr/bin/python3';
  const script = path.join(__dirname, '../../bench/ref/torch_conv.py');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    LD_PRELOAD: '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2',
    MALLOC_CONF: 'dirty_decay_ms:-1,muzzy_decay_ms:-1',  // keep freed memory: no page faults in steady state
    OPENBLAS_CORETYPE: 'SkylakeX',
    OMP_NUM_THREADS: String(threads),
  };
  const input = JSON.stringify(shapes.map((s) => ({ name: s.name, B: s.B, Cin: s.Cin, Cout: s.Cout, H: s.H, W: s.W,
    k: s.k, dx: s.dx })));
  const r = spawnSync(python, [script, '--threads', String(threads), '--reps', String(reps)],
    { input, env, encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.error || r.status !== 0) {
    return `PyTorch reference unavailable (${r.error?.message ?? (r.stderr || '').trim().split('\n').pop()}); ` +
      'run `bash bench/setup.sh` to install python3-torch';
  }
  const out = JSON.parse(r.stdout) as { torch: string; threads: number; results: Array<Timing & { name: string }> };
  return { version: `torch ${out.torch}, ${out.threads} threads`, results: new Map(out.results.map((t) => [t.name, t])) };
}

/** "AMD EPYC (family 25, model 17)": the peak depends on it (Zen 4, family 25, runs 512-bit FMAs at half the rate of
 * Zen 5, family 26). */
function cpuName(): string {
  try {
    const info = fs.readFileSync('/proc/cpuinfo', 'utf8');
    const field = (key: string): string => (info.match(new RegExp(`^${key}\\s*:\\s*(.*)$`, 'm')) ?? [])[1] ?? '?';
    return `${field('model name')} (family ${field('cpu family')}, model ${field('model')})`;
  } catch {
    return 'unknown CPU';
  }
}

function main(): void {
  const opt = args();
  const shapes = SHAPES.filter((s) => s.name.includes(opt.filter));
  addon.setThreads(opt.threads);
  const measured = measuredPeak(opt.threads);
  const peak = Number(process.env.DALLE_PEAK_GFLOPS ?? measured.fp32);
  const ours = new Map<string, Timing>();
  let torch = new Map<string, Timing>();
  let torchNote = '';
  const best = (m: Map<string, Timing>, name: string, t: Timing): void => {
    const o = m.get(name);
    m.set(name, o ? { fwd_ms: Math.min(o.fwd_ms, t.fwd_ms), step_ms: Math.min(o.step_ms, t.step_ms) } : t);
  };
  for (let round = 0; round < opt.rounds; round++) {
    if (opt.torch) {
      const t = timeTorch(shapes, opt.threads, opt.reps);
      if (typeof t === 'string') {
        torchNote = t;
        opt.torch = false;
      } else {
        torchNote = t.version;
        for (const [name, timing] of t.results) best(torch, name, timing);
      }
    }
    for (const s of shapes) best(ours, s.name, timeOurs(s, opt.reps));
  }
  if (!opt.torch) torch = new Map();

  const rows = shapes.map((s) => {
    const o = ours.get(s.name)!, t = torch.get(s.name);
    const pass = (2 * s.B * s.H * s.W * s.Cout * s.Cin * s.k * s.k) / 1e9;  // GFLOP
    const stepFlop = pass * (s.dx ? 3 : 2);
    return {
      name: s.name, where: s.where, count: s.count,
      ours_fwd_ms: o.fwd_ms, ours_step_ms: o.step_ms, ours_step_gflops: stepFlop / (o.step_ms / 1e3),
      torch_fwd_ms: t?.fwd_ms ?? null, torch_step_ms: t?.step_ms ?? null,
      ratio_step: t ? o.step_ms / t.step_ms : null,
    };
  });
  const total = (key: 'ours_step_ms' | 'torch_step_ms'): number =>
    rows.reduce((acc, r) => acc + (r[key] ?? NaN) * r.count, 0);
  const summary = {
    isa: addon.cpuInfo().isa, cpu: cpuName(), threads: opt.threads, peak_gflops: peak, reference: torchNote,
    dvae_conv_step_ours_ms: total('ours_step_ms'), dvae_conv_step_torch_ms: opt.torch ? total('torch_step_ms') : null,
  };
  if (opt.json) {
    process.stdout.write(JSON.stringify({ summary, rows }) + '\n');
    return;
  }
  const f = (v: number | null, d = 3): string => (v === null || !isFinite(v) ? '-' : v.toFixed(d));
  console.log(`conv2d, batch ${B}, ${opt.threads} threads, ISA ${summary.isa}, ${cpuName()}; reference: ${torchNote || 'none'}`);
  console.log(
    `GFLOP/s of the step (fwd + bwd), % of peak ${peak.toFixed(0)} GFLOP/s ` +
      `(${measured.measured ? 'measured FMA loop' : 'assumed: 64 FLOP/cycle/core at 3.3 GHz'}); ratio = ours / PyTorch (< 1: ours faster)`,
  );
  const head = ['shape', 'n', 'fwd ms', 'step ms', 'GFLOP/s', '%peak', 'torch fwd', 'torch step', 'ratio'];
  console.log(head[0].padEnd(20) + head.slice(1).map((h) => h.padStart(11)).join(''));
  for (const r of rows) {
    console.log(r.name.padEnd(20) + [String(r.count), f(r.ours_fwd_ms), f(r.ours_step_ms), f(r.ours_step_gflops, 0),
      f((100 * r.ours_step_gflops) / peak, 0), f(r.torch_fwd_ms), f(r.torch_step_ms), f(r.ratio_step, 2)]
      .map((c) => c.padStart(11)).join(''));
  }
  const o = summary.dvae_conv_step_ours_ms, t = summary.dvae_conv_step_torch_ms;
  console.log(`dVAE step, all convolutions (weighted by n): ours ${f(o, 1)} ms` +
    (t ? `, PyTorch ${f(t, 1)} ms, ratio ${(o / t).toFixed(2)}` : ''));
}

main();
