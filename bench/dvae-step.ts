// A dVAE training step (forward, backward, AdamW) and argmax encoding at the `dvae-emoji` shapes, ours vs PyTorch CPU
// (bench/ref/torch_dvae.py: the same released architecture, same shapes and thread count, jemalloc keeping freed
// memory: glibc returning big blocks to the OS every step halves its speed on these VMs), measured in the same run.
// Run: node dist/bench/dvae-step.js [--threads 2] [--reps 10] [--no-torch] [--config configs/dvae-emoji-fine.yaml]
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { dvaeConfig, resolveConfig } from '../src/core/config';
import { native } from '../src/core/native';
import { noGrad, tidy } from '../src/core/tensor';
import { dvaeStepBench } from './dvae-step-setup';

const ROOT = path.join(__dirname, '..', '..');
const JEMALLOC = '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

function bestMs(fn: () => void, reps: number): number {
  for (let i = 0; i < 3; i++) fn();
  let best = Infinity;
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return best;
}

function torchReference(args: number[], threads: number): { step_ms: number; encode_images_per_s: number; torch: string } | string {
  const env: NodeJS.ProcessEnv = { ...process.env, OMP_NUM_THREADS: String(threads), OPENBLAS_CORETYPE: 'SkylakeX' };
  if (fs.existsSync(JEMALLOC)) {
    env.LD_PRELOAD = JEMALLOC;
    env.MALLOC_CONF = 'dirty_decay_ms:-1,muzzy_decay_ms:-1'; // keep freed pages: no page faults per step
  }
  const python = process.env.PYTHON ?? '/usr/bin/python3'; // Debian's python3-torch lives there, not in a pyenv
  const r = spawnSync(python, [path.join(ROOT, 'bench', 'ref', 'torch_dvae.py'), ...args.map(String)], { env, encoding: 'utf8' });
  if (r.status !== 0) return `PyTorch reference unavailable (${(r.stderr || String(r.error)).trim().split('\n').pop()}); run bash bench/setup.sh`;
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

function main(): void {
  const threads = Number(arg('--threads', '2'));
  const reps = Number(arg('--reps', '10'));
  native.setThreads(threads);
  const configFile = arg('--config', path.join(ROOT, 'configs', 'dvae-emoji.yaml'));
  const config = resolveConfig(dvaeConfig, { file: configFile });
  const { n_hid, n_groups, n_blk_per_group, vocab_size } = config.model;
  const res = config.data.resolution;
  const B = config.train.batch_size;

  const bench = dvaeStepBench(config);
  const { model, x } = bench;
  const step = bench.step;
  const stepMs = bestMs(step, reps);
  const encodeMs = bestMs(() => tidy(() => void noGrad(() => model.encode(x))), reps);

  console.log(`dVAE (${path.basename(configFile, '.yaml')}: n_hid ${n_hid}, ${n_groups} groups x ${n_blk_per_group} block, vocab ${vocab_size}, ${res} px, batch ${B}), ${threads} threads, ${native.cpuInfo().isa}`);
  const ref = process.argv.includes('--no-torch') ? 'skipped (--no-torch)' : torchReference([n_hid, n_groups, n_blk_per_group, vocab_size, res, B, threads, reps], threads);
  const ours = { step_ms: stepMs, encode_images_per_s: (B / encodeMs) * 1e3 };
  if (typeof ref === 'string') {
    console.log(`training step: ${stepMs.toFixed(1)} ms (${(B / stepMs * 1e3).toFixed(1)} images/s); encode: ${ours.encode_images_per_s.toFixed(0)} images/s`);
    console.log(ref);
    return;
  }
  console.log(`                    ours        PyTorch ${ref.torch}   ratio`);
  console.log(`training step ms    ${stepMs.toFixed(1).padStart(8)}    ${ref.step_ms.toFixed(1).padStart(8)}            ${(stepMs / ref.step_ms).toFixed(2)}  (< 1: ours faster)`);
  console.log(`encode images/s     ${ours.encode_images_per_s.toFixed(0).padStart(8)}    ${ref.encode_images_per_s.toFixed(0).padStart(8)}            ${(ours.encode_images_per_s / ref.encode_images_per_s).toFixed(2)}  (> 1: ours faster)`);
  bench.dispose();
}

main();
