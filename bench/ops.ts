// Every registered op against its bound, so the next slow op is visible (issue 17). For each op of the registry
// (a new op appears by itself; one without shapes in bench/ops-shapes.ts is listed as "no shapes"), on the shapes the
// prior-emoji and dvae-emoji models really use: the median time of its forward and, where it has a backward, of
// forward+backward; the bytes it must move and its FLOPs; the bound max(bytes / bandwidth, FLOPs / GEMM peak), both
// peaks measured in this run (bench/lib/machine-peaks.ts); and the fraction of the bound reached. Rows are sorted by
// time per training step: each case's time x how often one step of its model makes that exact call (counted by
// wrapping the registry's ops for one step, bench/lib/op-calls.ts).
//   bash bench/run.sh ops                      (or node dist/bench/ops.js)
//   node dist/bench/ops.js [--quick] [--json FILE] [--no-step]
// --json FILE: the rows, peaks and step times as JSON (a full run writes bench/out/ops.json unless told otherwise).
// --quick: one or two repetitions per case and smaller peak runs (development only: the numbers mean little).
// Threads: DALLE_THREADS, else every core the addon sees.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { dvaeConfig, priorConfig, resolveConfig } from '../src/core/config';
import { native } from '../src/core/native';
import '../src/core/ops';
import { registeredOps } from '../src/core/tensor';
import { FULL_TIMING, OpBenchRow, QUICK_TIMING, benchOps, furthestFromBound, markdownTable, sortByTimeShare } from './lib/op-bench';
import { OpCalls, countOpCalls } from './lib/op-calls';
import { measureMachinePeaks } from './lib/machine-peaks';
import { BenchModel, OP_BENCH_SHAPES, dimsFromConfigs } from './ops-shapes';
import { dvaeStepBench } from './dvae-step-setup';
import { priorStepBench } from './prior-step-setup';

const ROOT = path.join(__dirname, '..', '..');

interface Opts { quick: boolean; json: string | null; step: boolean }

function parseArgs(argv: string[]): Opts {
  const o: Opts = { quick: false, json: null, step: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') o.quick = true;
    else if (a === '--no-step') o.step = false;
    else if (a === '--json') {
      const file = argv[++i];
      if (!file) throw new Error('bench/ops: --json needs a file name (e.g. --json bench/out/ops.json)');
      o.json = file;
    } else throw new Error(`bench/ops: unknown argument ${a} (known: --quick, --json FILE, --no-step)`);
  }
  return o;
}

function threadsFromEnv(): number {
  const raw = process.env.DALLE_THREADS;
  if (raw === undefined || raw === '' || raw === '0') return native.numThreads();
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 1024) throw new Error(`bench/ops: DALLE_THREADS=${raw} is not a thread count (1..1024, or 0 = all cores)`);
  return n;
}

/** /proc/cpuinfo's model name, with the family and model numbers (a VM may name only the vendor: "AMD EPYC"). */
function cpuModel(): string {
  try {
    const info = fs.readFileSync('/proc/cpuinfo', 'utf8');
    const field = (name: string): string | undefined => new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm').exec(info)?.[1];
    const family = field('cpu family'), model = field('model');
    return `${field('model name') ?? os.cpus()[0]?.model ?? '?'}${family && model ? ` (family ${family} model ${model})` : ''}`;
  } catch {
    return os.cpus()[0]?.model ?? '?';
  }
}

interface StepProfile { calls: OpCalls; stepMs: number }

/** One prior-emoji training step (forward, backward, clipping, AdamW) counted, then one timed. */
function priorStep(): StepProfile {
  const config = resolveConfig(priorConfig, { file: path.join(ROOT, 'configs', 'prior-emoji.yaml') });
  const bench = priorStepBench(config.model, config.train.batch_size);
  try {
    const calls = countOpCalls(registeredOps(), () => bench.step());
    const t0 = process.hrtime.bigint();
    bench.step();
    return { calls, stepMs: Number(process.hrtime.bigint() - t0) / 1e6 };
  } finally {
    bench.dispose();
  }
}

/** One dvae-emoji training step (bench/dvae-step-setup.ts: forward, loss, backward, AdamW) counted, then one timed. */
function dvaeStep(): StepProfile {
  const bench = dvaeStepBench(resolveConfig(dvaeConfig, { file: path.join(ROOT, 'configs', 'dvae-emoji.yaml') }));
  try {
    const calls = countOpCalls(registeredOps(), bench.step);
    const t0 = process.hrtime.bigint();
    bench.step();
    return { calls, stepMs: Number(process.hrtime.bigint() - t0) / 1e6 };
  } finally {
    bench.dispose();
  }
}

function coverage(rows: readonly OpBenchRow[], model: BenchModel, step: StepProfile): string {
  const covered = rows.filter((r) => r.model === model && r.stepMs).reduce((s, r) => s + (r.stepMs ?? 0), 0);
  let calls = 0;
  for (const perOp of step.calls.forward.values()) for (const n of perOp.values()) calls += n;
  return `${model}: one training step ${step.stepMs.toFixed(0)} ms (${calls} op calls); the benchmarked cases ` +
    `account for ${covered.toFixed(0)} ms of it (${((100 * covered) / step.stepMs).toFixed(0)}%)`;
}

function main(): void {
  const opt = parseArgs(process.argv.slice(2));
  if (!opt.quick && opt.json === null) opt.json = path.join(ROOT, 'bench', 'out', 'ops.json');
  const threads = threadsFromEnv();
  native.setThreads(threads);
  const started = new Date();
  const peakOptions = opt.quick
    ? { threads, bandwidthBytes: 32 << 20, gemmN: 512, reps: 2 }
    : { threads, bandwidthBytes: 256 << 20, gemmN: 2048, reps: 5 };
  const peaks = measureMachinePeaks(peakOptions);

  const steps = new Map<BenchModel, StepProfile>();
  if (opt.step) {
    steps.set('prior-emoji', priorStep());
    steps.set('dvae-emoji', dvaeStep());
  }
  const counts = opt.step ? new Map([...steps].map(([m, s]) => [m, s.calls] as const)) : null;

  const rows = sortByTimeShare(benchOps({
    ops: registeredOps(), shapes: OP_BENCH_SHAPES, dims: dimsFromConfigs(ROOT),
    peaks, timing: opt.quick ? QUICK_TIMING : FULL_TIMING, counts,
    onCase: (op, name, pass) => process.stderr.write(`  ${op} [${name}] ${pass}\n`),
  }));

  const info = native.cpuInfo();
  console.log(`Ops against their bound, ${started.toISOString()}${opt.quick ? ' (--quick: development numbers)' : ''}`);
  console.log(`machine: ${cpuModel()}; ${threads} thread(s); kernels ${info.isa}`);
  console.log(`bound = max(bytes / ${(peaks.bandwidth / 1e9).toFixed(1)} GB/s, FLOPs / ${(peaks.flopsF32 / 1e9).toFixed(1)} ` +
    `GFLOP/s f32 or ${(peaks.flopsBf16 / 1e9).toFixed(1)} bf16); fraction of bound = bound ms / ms (1 = at the bound; ` +
    `above 1: the operands stay in cache, faster than the bandwidth measured on ${peakOptions.bandwidthBytes >> 20} MiB)`);
  for (const n of peaks.notes) console.log(`  ${n}`);
  for (const [model, step] of steps) console.log(`  ${coverage(rows, model, step)}`);
  const missing = rows.filter((r) => r.status === 'no shapes').map((r) => r.op);
  if (missing.length) console.log(`  no shapes (add them to bench/ops-shapes.ts): ${missing.join(', ')}`);
  const errors = rows.filter((r) => r.status === 'error');
  if (errors.length) console.log(`  ${errors.length} case(s) failed: see the error rows`);
  console.log('');
  console.log(markdownTable(rows));
  console.log('');
  console.log(`Furthest from their bound${counts ? ' (cases a training step runs)' : ''}:`);
  console.log('');
  console.log(markdownTable(furthestFromBound(rows, 5)));

  if (opt.json) {
    const doc = {
      date: started.toISOString(), machine: cpuModel(), threads, isa: info.isa, quick: opt.quick,
      peaks: { bandwidth_gb_s: peaks.bandwidth / 1e9, copy_gb_s: peaks.copyBandwidth / 1e9, add_gb_s: peaks.addBandwidth / 1e9,
        gflops_f32: peaks.flopsF32 / 1e9, gflops_bf16: peaks.flopsBf16 / 1e9, notes: peaks.notes },
      steps: Object.fromEntries([...steps].map(([m, s]) => [m, { step_ms: s.stepMs, coverage: coverage(rows, m, s) }])),
      rows,
    };
    const tmp = `${opt.json}.tmp-${process.pid}`;
    fs.mkdirSync(path.dirname(path.resolve(opt.json)), { recursive: true });
    fs.writeFileSync(tmp, JSON.stringify(doc, null, 2) + '\n');
    fs.renameSync(tmp, opt.json);
    console.log(`\nJSON: ${opt.json}`);
  }
  if (errors.length) process.exitCode = 1;
}

main();
