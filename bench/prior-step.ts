// A prior training step (forward, backward, gradient clipping, AdamW) at the `prior-emoji` shapes (8 layers, d 256,
// 32 text + 256 image tokens, batch 8), ours vs PyTorch CPU (bench/ref/torch_prior.py: the same architecture with
// dense masks, same thread count, jemalloc keeping freed memory), measured in the same run.
// Run: node dist/bench/prior-step.js [--threads 2] [--reps 10] [--no-torch]
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { priorConfig, resolveConfig } from '../src/core/config';
import { native } from '../src/core/native';
import { priorStepBench } from './prior-step-setup';

const ROOT = path.join(__dirname, '..', '..');
const JEMALLOC = '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

function main(): void {
  const threads = Number(arg('--threads', '2'));
  const reps = Number(arg('--reps', '10'));
  native.setThreads(threads);
  const config = resolveConfig(priorConfig, { file: path.join(ROOT, 'configs', 'prior-emoji.yaml') });
  const m = config.model;
  const B = config.train.batch_size;
  const { model, step } = priorStepBench(m, B);
  const N = m.image_grid * m.image_grid;
  for (let i = 0; i < 3; i++) step();
  let best = Infinity;
  let cpuBest = Infinity;
  for (let i = 0; i < reps; i++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    step();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e6);
    const c = process.cpuUsage(c0);
    cpuBest = Math.min(cpuBest, (c.user + c.system) / 1e3);
  }
  console.log(`prior (prior-emoji: ${m.n_layers} layers, ${m.n_heads}x${m.head_dim}, ${m.text_len} text + ${N} image tokens, batch ${B}, ${model.parameterCount()} parameters), ${threads} threads, ${native.cpuInfo().isa}`);
  console.log(`ours:    step ${best.toFixed(1)} ms (best of ${reps}); CPU time ${cpuBest.toFixed(1)} ms`);
  if (process.argv.includes('--no-torch')) return;
  const env: NodeJS.ProcessEnv = { ...process.env, OMP_NUM_THREADS: String(threads), OPENBLAS_CORETYPE: 'SkylakeX' };
  if (fs.existsSync(JEMALLOC)) {
    env.LD_PRELOAD = JEMALLOC;
    env.MALLOC_CONF = 'dirty_decay_ms:-1,muzzy_decay_ms:-1';
  }
  const python = process.env.PYTHON ?? '/usr/bin/python3';
  const args = [m.n_layers, m.n_heads, m.head_dim, m.text_len, m.text_vocab, m.image_grid, m.image_vocab, m.conv_kernel, B, threads, reps];
  const r = spawnSync(python, [path.join(ROOT, 'bench', 'ref', 'torch_prior.py'), ...args.map(String)], { env, encoding: 'utf8' });
  if (r.status !== 0) {
    console.log(`PyTorch reference unavailable (${(r.stderr || String(r.error)).trim().split('\n').pop()}); run bash bench/setup.sh`);
    return;
  }
  const ref = JSON.parse(r.stdout.trim().split('\n').pop()!);
  console.log(`PyTorch ${ref.torch}: step ${ref.step_ms.toFixed(1)} ms (best of ${reps}); CPU time ${ref.cpu_ms.toFixed(1)} ms (${ref.params} parameters)`);
  console.log(`ratio ours/PyTorch: wall ${(best / ref.step_ms).toFixed(2)}, CPU time ${(cpuBest / ref.cpu_ms).toFixed(2)} (< 1: ours faster)`);
}

main();
