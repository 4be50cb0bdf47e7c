// Where one training step's time goes, op by op: the step of `prior-emoji` or `dvae-emoji` (the same steps as
// bench/prior-step.ts and bench/dvae-step.ts) run with every registered op timed (bench/lib/op-timer.ts: exclusive
// times, so a backward made of ops is charged only for its own work). The step is warmed up, then `--reps` steps are
// timed and their per-op times summed; the rest of the step's time (tape, JavaScript, AdamW's native calls, buffer
// allocation) is printed as "outside ops". Times include the wrapper's small cost per call.
// Run: node dist/bench/step-profile.js [--model dvae|prior] [--threads 2] [--reps 5] [--top 30] [--by op|call]
import * as path from 'path';
import { dvaeConfig, priorConfig, resolveConfig } from '../src/core/config';
import { native } from '../src/core/native';
import '../src/core/ops';
import { registeredOps } from '../src/core/tensor';
import { dvaeStepBench } from './dvae-step-setup';
import { OpTime, timeOpCalls } from './lib/op-timer';
import { priorStepBench } from './prior-step-setup';

const ROOT = path.join(__dirname, '..', '..');

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

function stepOf(model: string): { step: () => void; dispose: () => void } {
  if (model === 'prior') {
    const config = resolveConfig(priorConfig, { file: path.join(ROOT, 'configs', 'prior-emoji.yaml') });
    const bench = priorStepBench(config.model, config.train.batch_size);
    return { step: () => void bench.step(), dispose: bench.dispose };
  }
  if (model === 'dvae') {
    const bench = dvaeStepBench(resolveConfig(dvaeConfig, { file: path.join(ROOT, 'configs', 'dvae-emoji.yaml') }));
    return bench;
  }
  throw new Error(`--model must be dvae or prior, got ${JSON.stringify(model)}`);
}

function main(): void {
  const model = arg('--model', 'dvae');
  const threads = Number(arg('--threads', '2'));
  const reps = Number(arg('--reps', '5'));
  const top = Number(arg('--top', '30'));
  const byCall = arg('--by', 'op') === 'call';
  native.setThreads(threads);
  const bench = stepOf(model);
  try {
    for (let i = 0; i < 3; i++) bench.step();
    const rows = new Map<string, OpTime>();
    let totalMs = 0;
    for (let r = 0; r < reps; r++) {
      const run = timeOpCalls(registeredOps(), bench.step);
      totalMs += run.totalMs;
      for (const t of run.times) {
        const id = byCall ? `${t.op}|${t.pass}|${t.key}` : `${t.op}|${t.pass}`;
        const row = rows.get(id);
        if (row) {
          row.calls += t.calls;
          row.ms += t.ms;
        } else rows.set(id, { ...t, key: byCall ? t.key : '' });
      }
    }
    const sorted = [...rows.values()].sort((a, b) => b.ms - a.ms);
    const inOps = sorted.reduce((s, t) => s + t.ms, 0) / reps;
    const step = totalMs / reps;
    console.log(`${model}-emoji step, ${threads} threads, ${native.cpuInfo().isa}: ${step.toFixed(1)} ms a step (mean of ${reps}), ` +
      `${inOps.toFixed(1)} ms in ops, ${(step - inOps).toFixed(1)} ms outside ops`);
    console.log(`${'ms/step'.padStart(8)} ${'share'.padStart(6)} ${'calls'.padStart(6)}  op`);
    for (const t of sorted.slice(0, top)) {
      console.log(`${(t.ms / reps).toFixed(2).padStart(8)} ${((t.ms / reps / step) * 100).toFixed(1).padStart(5)}% ` +
        `${String(t.calls / reps).padStart(6)}  ${t.op} ${t.pass}${t.key ? ` ${t.key}` : ''}`);
    }
  } finally {
    bench.dispose();
  }
}

main();
