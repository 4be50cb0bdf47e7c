// Image tokens per second of KV-cached generation at the `prior-emoji` shapes (8 layers, d 256, 8 heads, text 32,
// 16x16 grid, batch 8): the whole sampling loop (src/core/sample/sampler.ts: prefill, 255 steps, sampling on the host),
// ours vs PyTorch CPU with a KV cache (bench/ref/torch_generate.py: the same architecture and masks, same shapes and
// thread count), measured in the same run. Random weights: the time does not depend on their values.
// --device cuda runs ours on the GPU (the prior there, sampling on the host, as `dalle generate --device cuda`) and the
// reference on the same GPU; --set KEY=VALUE changes the model's shapes; --out FILE writes the figures as JSON.
// Run: node dist/bench/generate.js [--threads 2] [--reps 3] [--batch 8] [--device cpu|cuda] [--set ...] [--out FILE] [--no-torch]
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { parseSetArgument, priorConfig, resolveConfig } from '../src/core/config';
import { parseDevice } from '../src/core/backend';
import { applyRuntime } from '../src/core/runtime';
import { Prior, padText } from '../src/core/models/prior';
import { native } from '../src/core/native';
import { unitRng } from '../src/core/sample/plan';
import { sampleImageTokens } from '../src/core/sample/sampler';
import { Philox, Tensor, noGrad, tidy } from '../src/core/tensor';

const ROOT = path.join(__dirname, '..', '..');
const JEMALLOC = '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

/** Every --set KEY=VALUE of the command line. */
function sets(): string[] {
  return process.argv.flatMap((a, i) => (a === '--set' && i + 1 < process.argv.length ? [process.argv[i + 1]] : []));
}

function torchReference(args: Array<number | string>, threads: number): { tokens_per_s: number; ms_per_step: number; torch: string } | string {
  const env: NodeJS.ProcessEnv = { ...process.env, OMP_NUM_THREADS: String(threads), OPENBLAS_CORETYPE: 'SkylakeX' };
  if (fs.existsSync(JEMALLOC)) {
    env.LD_PRELOAD = JEMALLOC;
    env.MALLOC_CONF = 'dirty_decay_ms:-1,muzzy_decay_ms:-1';
  }
  const python = process.env.PYTHON ?? '/usr/bin/python3'; // Debian's python3-torch lives there
  const r = spawnSync(python, [path.join(ROOT, 'bench', 'ref', 'torch_generate.py'), ...args.map(String)], { env, encoding: 'utf8' });
  if (r.status !== 0) return `PyTorch reference unavailable (${(r.stderr || String(r.error)).trim().split('\n').pop()}); run bash bench/setup.sh`;
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

function main(): void {
  const threads = Number(arg('--threads', '2'));
  const reps = Number(arg('--reps', '3'));
  native.setThreads(threads);
  const device = arg('--device', 'cpu');
  const config = resolveConfig(priorConfig, {
    file: path.join(ROOT, 'configs', 'prior-emoji.yaml'),
    sets: [`runtime.device=${device}`, ...sets()].map((text) => parseSetArgument(text)),
  });
  applyRuntime({ ...config.runtime, threads }, 'generate'); // refuses a device without the kernels, as the command would
  const m = config.model;
  const B = Number(arg('--batch', String(config.train.batch_size)));
  const N = m.image_grid ** 2;
  const prior = new Prior(m, new Philox(0)).to(parseDevice(config.runtime.device));
  const rng = new Philox(1);
  const ids = Array.from({ length: B }, (_, b) => Array.from(rng.randint(1 + (b % m.text_len), m.text_vocab)));
  const text = padText(ids, m.text_len, m.text_vocab);
  const sampling = { temperature: 1, topK: 0, topP: 1 };

  // The generation loop (what `dalle generate` runs), best of reps after one warm-up.
  let best = Infinity;
  for (let r = 0; r <= reps; r++) {
    const t0 = process.hrtime.bigint();
    sampleImageTokens(prior, { text, rngs: Array.from({ length: B }, (_, b) => unitRng(r, { caption: b, sample: 0 })) }, { sampling });
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    if (r > 0) best = Math.min(best, s);
  }
  // The model's step alone (no host sampling): one token for B rows, best of 50 at the middle of the grid.
  const cache = prior.createCache(B);
  noGrad(() => tidy(() => void prior.prefill(cache, Tensor.from(text, [B, m.text_len], 'i32', prior.device))));
  const tok = Tensor.from(new Int32Array(B), [B], 'i32', prior.device);
  let stepBest = Infinity;
  for (let i = 0; i < Math.min(60, N - 1); i++) {
    const t0 = process.hrtime.bigint();
    tidy(() => void prior.step(cache, tok).toArray());
    if (i >= 10) stepBest = Math.min(stepBest, Number(process.hrtime.bigint() - t0) / 1e6);
  }
  cache.dispose();
  tok.dispose();

  const ours = { tokens_per_s: (B * N) / best, ms_per_step: (best * 1e3) / N };
  console.log(`KV-cached generation on ${prior.device} (${m.n_layers} layers, d ${m.n_heads * m.head_dim}, ${m.n_heads} heads, text ${m.text_len}, ${m.image_grid}x${m.image_grid} grid, vocab ${m.image_vocab}, batch ${B}), ${threads} threads, ${native.cpuInfo().isa}`);
  console.log(`ours: prior.step alone ${stepBest.toFixed(2)} ms (best of 50)`);
  const ref = process.argv.includes('--no-torch')
    ? 'skipped (--no-torch)'
    : torchReference([m.n_layers, m.n_heads, m.head_dim, m.text_len, m.text_vocab, m.image_grid, m.image_vocab, m.conv_kernel, B, threads, reps,
      device === 'cpu' ? 'cpu' : 'cuda'], threads);
  const out = arg('--out', '');
  if (out) {
    const shape = { layers: m.n_layers, heads: m.n_heads, head_dim: m.head_dim, text_len: m.text_len, grid: m.image_grid, image_vocab: m.image_vocab, batch: B };
    const torch = typeof ref === 'string' ? { error: ref } : ref;
    const ratio = typeof ref === 'string' ? null : ours.tokens_per_s / ref.tokens_per_s;
    fs.writeFileSync(out, JSON.stringify({ device: prior.device, shape, ours: { ...ours, step_ms: stepBest }, torch, ratio_tokens_per_s: ratio }, null, 2) + '\n');
  }
  if (typeof ref === 'string') {
    console.log(`generation: ${ours.tokens_per_s.toFixed(0)} image tokens/s (${ours.ms_per_step.toFixed(2)} ms a token position for ${B} images)`);
    console.log(ref);
  } else {
    console.log(`                        ours        PyTorch ${ref.torch}   ratio`);
    console.log(`image tokens/s      ${ours.tokens_per_s.toFixed(0).padStart(8)}    ${ref.tokens_per_s.toFixed(0).padStart(8)}            ${(ours.tokens_per_s / ref.tokens_per_s).toFixed(2)}  (> 1: ours faster)`);
    console.log(`ms per position     ${ours.ms_per_step.toFixed(2).padStart(8)}    ${ref.ms_per_step.toFixed(2).padStart(8)}`);
  }
  prior.dispose();
}

main();
