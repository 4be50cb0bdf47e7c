// Image tokens per second of KV-cached generation at the `prior-emoji` shapes (8 layers, d 256, 8 heads, text 32,
// 16x16 grid), at batch 1, 8 and 32 by default: the whole sampling loop (src/core/sample/sampler.ts: prefill, 255 steps,
// sampling on the host), ours vs PyTorch CPU with a KV cache (bench/ref/torch_generate.py: the same architecture and
// masks, same shapes and thread count), measured in the same run. Random weights: the time does not depend on their
// values. Each batch runs in a child process of its own (ours and PyTorch's), so its peak resident memory (maxRSS: the
// weights, the KV cache, the temporaries and the runtime) is that batch's alone.
// --batch B runs one batch (the default on --device cuda: the config's train batch); --batches 1,8,32 a list.
// --device cuda runs ours on the GPU (the prior there, sampling on the host, as `dalle generate --device cuda`) and the
// reference on the same GPU; --set KEY=VALUE changes the model's shapes; --out FILE writes the figures as JSON.
// Run: node dist/bench/generate.js [--threads 2] [--reps 3] [--batches 1,8,32 | --batch 8] [--device cpu|cuda] [--set ...] [--out FILE] [--no-torch]
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { parseSetArgument, priorConfig, resolveConfig } from '../src/core/config';
import { parseDevice } from '../src/core/backend';
import { applyRuntime } from '../src/core/runtime';
import { writeFileAtomicSync } from '../src/core/io/atomic';
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

interface TorchFigures {
  tokens_per_s: number;
  ms_per_step: number;
  max_rss_mb?: number;
  torch: string;
}

function torchReference(args: Array<number | string>, threads: number): TorchFigures | string {
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

/** What a child process measures for one batch (printed as its last line of JSON). */
interface OursFigures {
  tokens_per_s: number;
  ms_per_step: number;
  /** prior.step alone (no host sampling), best of 50, ms. */
  step_ms: number;
  /** Peak resident memory of the whole process (node, weights, KV cache, temporaries), MB. */
  max_rss_mb: number;
  device: string;
  isa: string;
}

function setup() {
  const threads = Number(arg('--threads', '2'));
  native.setThreads(threads);
  const device = arg('--device', 'cpu');
  const config = resolveConfig(priorConfig, {
    file: path.join(ROOT, 'configs', 'prior-emoji.yaml'),
    sets: [`runtime.device=${device}`, ...sets()].map((text) => parseSetArgument(text)),
  });
  return { threads, reps: Number(arg('--reps', '3')), device, config };
}

/** The child: one batch's generation loop and step, then its figures as JSON on the last line. */
function measureOne(B: number): void {
  const { threads, reps, config } = setup();
  applyRuntime({ ...config.runtime, threads }, 'generate'); // refuses a device without the kernels, as the command would
  const m = config.model;
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
  const figures: OursFigures = {
    tokens_per_s: (B * N) / best,
    ms_per_step: (best * 1e3) / N,
    step_ms: stepBest,
    max_rss_mb: process.resourceUsage().maxRSS / 1024,
    device: prior.device,
    isa: native.cpuInfo().isa,
  };
  prior.dispose();
  console.log(JSON.stringify(figures));
}

/** Runs this script again as a child for one batch (its own process, so its maxRSS is that batch's). */
function oursInChild(B: number): OursFigures {
  const passed = process.argv.slice(2).filter((a, i, all) => !['--batch', '--batches', '--out'].includes(a) && !['--batch', '--batches', '--out'].includes(all[i - 1]));
  const r = spawnSync(process.execPath, [__filename, ...passed, '--child', '--batch', String(B)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (r.status !== 0) throw new Error(`bench/generate: the batch-${B} child failed (exit ${r.status}${r.error ? `, ${r.error.message}` : ''})`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as OursFigures;
}

function main(): void {
  if (process.argv.includes('--child')) {
    measureOne(Number(arg('--batch', '8')));
    return;
  }
  const { threads, reps, device, config } = setup();
  const m = config.model;
  const batchList = process.argv.includes('--batch')
    ? arg('--batch', '8')
    : arg('--batches', device === 'cpu' ? '1,8,32' : String(config.train.batch_size)); // GPU sessions keep their one batch
  const batches = batchList.split(',').map((b) => Number(b));
  if (batches.some((b) => !(Number.isInteger(b) && b >= 1))) throw new Error(`bench/generate: batches must be integers >= 1, got ${batchList}`);
  const runs = batches.map((B) => {
    const ours = oursInChild(B);
    const ref = process.argv.includes('--no-torch')
      ? 'skipped (--no-torch)'
      : torchReference([m.n_layers, m.n_heads, m.head_dim, m.text_len, m.text_vocab, m.image_grid, m.image_vocab, m.conv_kernel, B, threads, reps,
        device === 'cpu' ? 'cpu' : 'cuda'], threads);
    return { B, ours, ref };
  });
  const first = runs[0].ours;
  console.log(`KV-cached generation on ${first.device} (${m.n_layers} layers, d ${m.n_heads * m.head_dim}, ${m.n_heads} heads, text ${m.text_len}, ${m.image_grid}x${m.image_grid} grid, vocab ${m.image_vocab}), ${threads} threads, ${first.isa}; best of ${reps}`);
  const torchVersion = runs.map((r) => (typeof r.ref === 'string' ? '' : r.ref.torch)).find((v) => v) ?? '';
  console.log(`batch   ours tok/s   PyTorch${torchVersion ? ` ${torchVersion}` : ''} tok/s   ratio   ours step ms   ours peak RSS MB   PyTorch peak RSS MB`);
  for (const { B, ours, ref } of runs) {
    const torch = typeof ref === 'string' ? null : ref;
    console.log(
      `${String(B).padStart(5)}   ${ours.tokens_per_s.toFixed(0).padStart(10)}   ${(torch ? torch.tokens_per_s.toFixed(0) : '-').padStart(13 + (torchVersion ? torchVersion.length + 1 : 0))}   ` +
        `${(torch ? (ours.tokens_per_s / torch.tokens_per_s).toFixed(2) : '-').padStart(5)}   ${ours.step_ms.toFixed(2).padStart(12)}   ` +
        `${ours.max_rss_mb.toFixed(0).padStart(16)}   ${(torch?.max_rss_mb !== undefined ? torch.max_rss_mb.toFixed(0) : '-').padStart(19)}`,
    );
    if (typeof ref === 'string') console.log(`       ${ref}`);
  }
  console.log('ratio > 1: ours faster. Peak RSS: each batch in its own process (node or python, weights, KV cache, temporaries).');
  const out = arg('--out', '');
  if (out) {
    const shape = { layers: m.n_layers, heads: m.n_heads, head_dim: m.head_dim, text_len: m.text_len, grid: m.image_grid, image_vocab: m.image_vocab };
    const results = runs.map(({ B, ours, ref }) => ({
      batch: B,
      ours,
      torch: typeof ref === 'string' ? { error: ref } : ref,
      ratio_tokens_per_s: typeof ref === 'string' ? null : ours.tokens_per_s / ref.tokens_per_s,
    }));
    writeFileAtomicSync(out, JSON.stringify({ device: first.device, threads, reps, shape, runs: results }, null, 2) + '\n');
  }
}

main();
