// A prior training step (forward, backward, gradient clipping, AdamW; fp32) on a device, ours vs PyTorch eager and
// torch.compile of the same architecture on the same GPU (bench/ref/cuda_prior_step.py), in the same run, at the
// prior-emoji shapes (default) or at the shapes --set gives (e.g. the larger config of bench/cuda-check.sh: 24 layers,
// d 1024, 256 text + 32x32 image tokens). Our step ends with its loss read back, so the time includes the GPU's work.
//   node dist/bench/cuda-prior-step.js [--device cuda] [--set model.n_layers=24 ...] [--batch B] [--reps 5]
//       [--no-torch] [--no-compile] [--out FILE]
// Without a GPU (--device cpu) it times the CPU, and --no-torch skips the reference: a check of the script anywhere.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { parseSetArgument, priorConfig, resolveConfig } from '../src/core/config';
import { parseDevice } from '../src/core/backend';
import { applyRuntime } from '../src/core/runtime';
import { priorStepBench } from './prior-step-setup';

const ROOT = path.join(__dirname, '..', '..');

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

function sets(): string[] {
  return process.argv.flatMap((a, i) => (a === '--set' && i + 1 < process.argv.length ? [process.argv[i + 1]] : []));
}

function main(): void {
  const device = flag('--device', 'cuda');
  const reps = Number(flag('--reps', '5'));
  const out = flag('--out', '');
  const config = resolveConfig(priorConfig, {
    file: path.join(ROOT, 'configs', 'prior-emoji.yaml'),
    sets: [`runtime.device=${device}`, ...sets()].map((text) => parseSetArgument(text)),
  });
  applyRuntime(config.runtime, 'train-prior'); // refuses a device without the kernels, as the command would
  const m = config.model;
  const B = Number(flag('--batch', String(config.train.batch_size)));
  const bench = priorStepBench(m, B, parseDevice(config.runtime.device));
  const { model } = bench;
  let loss = NaN;
  const step = (): void => {
    loss = bench.step(true); // waits for the device
  };
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < 3; i++) step();
  const warmupS = Number(process.hrtime.bigint() - t0) / 1e9;
  let best = Infinity;
  for (let i = 0; i < reps; i++) {
    const s0 = process.hrtime.bigint();
    step();
    best = Math.min(best, Number(process.hrtime.bigint() - s0) / 1e6);
  }
  const shape = { layers: m.n_layers, heads: m.n_heads, head_dim: m.head_dim, text_len: m.text_len, text_vocab: m.text_vocab,
    grid: m.image_grid, image_vocab: m.image_vocab, conv: m.conv_kernel, batch: B };
  const result: Record<string, unknown> = { device: model.device, shape, params: model.parameterCount(), reps,
    ours_ms: best, ours_warmup_s: warmupS, ours_loss: loss };
  if (!process.argv.includes('--no-torch')) {
    const args = [...Object.values(shape).map(String), '--reps', String(reps), '--device', device === 'cpu' ? 'cpu' : 'cuda'];
    if (process.argv.includes('--no-compile')) args.push('--no-compile');
    const py = spawnSync(process.env.PYTHON ?? 'python3', [path.join(ROOT, 'bench', 'ref', 'cuda_prior_step.py'), ...args], { encoding: 'utf8', timeout: 240000 });
    if (py.status === 0) {
      const ref = JSON.parse(py.stdout.trim().split('\n').pop()!) as Record<string, number | string>;
      result.torch = ref;
      if (typeof ref.eager_ms === 'number') result.ratio_ours_to_eager = best / ref.eager_ms;
      if (typeof ref.compiled_ms === 'number') result.ratio_ours_to_compiled = best / ref.compiled_ms;
    } else {
      result.torch = { error: (py.stderr || py.error?.message || `exit ${py.status}`).trim().split('\n').slice(-3).join(' | ') };
    }
  }
  const text2 = JSON.stringify(result, null, 2);
  if (out) fs.writeFileSync(out, text2 + '\n');
  console.log(text2);
  bench.dispose();
}

main();
