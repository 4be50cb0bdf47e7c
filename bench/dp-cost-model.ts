// The cost model of a data-parallel update (src/core/distributed/cost-model.ts) for a prior config: bytes each GPU
// all-reduces per update, exact and with PowerSGD, their time at given link speeds, against the modelled compute time.
// A model, not a measurement: nothing runs on a GPU. Prints a markdown table, or JSON with --json.
//   node dist/bench/dp-cost-model.js [--config configs/prior-paper.yaml] [--set key=value ...] [--gpus 8,64,1024]
//       [--rank 896] [--bytes 2] [--gbps 100,400] [--peak-tflops 989] [--mfu 0.4] [--json]
// Defaults: the paper's rank for its 12B prior (896) and fp16 values on the wire (the paper's gradients were 16-bit);
// the H100 SXM's dense bf16 peak (989 TFLOP/s) at an assumed 40% of peak.
import * as path from 'path';
import { parseSetArgument, priorConfig, resolveConfig } from '../src/core/config';
import { dataParallelCost } from '../src/core/distributed/cost-model';
import { parameterShapes } from '../src/core/models/prior/size';

const ROOT = path.join(__dirname, '..', '..');

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  if (i < 0) return fallback;
  if (i + 1 >= process.argv.length) throw new Error(`${name} needs a value`);
  return process.argv[i + 1];
}

function numbers(name: string, fallback: string): number[] {
  const text = flag(name, fallback);
  const values = text.split(',').map(Number);
  if (values.length === 0 || values.length > 16 || values.some((v) => !Number.isFinite(v) || v <= 0)) {
    throw new Error(`${name} takes up to 16 positive numbers separated by commas, got '${text}'`);
  }
  return values;
}

const number = (name: string, fallback: string): number => {
  const values = numbers(name, fallback);
  if (values.length !== 1) throw new Error(`${name} takes one number, got '${flag(name, fallback)}'`);
  return values[0];
};

function main(): void {
  const configFile = flag('--config', path.join(ROOT, 'configs', 'prior-paper.yaml'));
  const sets = process.argv.flatMap((a, i) => (a === '--set' && i + 1 < process.argv.length ? [process.argv[i + 1]] : []));
  const config = resolveConfig(priorConfig, { file: configFile, sets: sets.map((s) => parseSetArgument(s)) });
  const m = config.model;
  const gpus = numbers('--gpus', '8,64,1024');
  const rank = number('--rank', '896');
  const bytesPerValue = number('--bytes', '2');
  const gbps = numbers('--gbps', '100,400');
  const peakTflops = number('--peak-tflops', '989');
  const mfu = number('--mfu', '0.4');
  const cost = dataParallelCost({
    parameterShapes: parameterShapes(m),
    tokensPerExample: m.text_len + m.image_grid * m.image_grid,
    globalBatch: config.train.batch_size,
    bytesPerValue,
    rank,
    linkGbps: gbps,
    peakFlops: peakTflops * 1e12,
    mfu,
  }, gpus);
  const assumptions = { config: path.relative(ROOT, path.resolve(configFile)), globalBatch: config.train.batch_size, rank, bytesPerValue, gbps, peakTflops, mfu };
  if (process.argv.includes('--json')) {
    process.stdout.write(`${JSON.stringify({ model: 'cost model (arithmetic, not measured)', assumptions, ...cost })}\n`);
    return;
  }
  const wire = bytesPerValue === 2 ? 'fp16' : bytesPerValue === 4 ? 'f32' : `${bytesPerValue}-byte`;
  const gb = (b: number) => (b / 1e9).toFixed(2);
  const ms = (s: number) => (s * 1e3 < 10 ? (s * 1e3).toFixed(1) : (s * 1e3).toFixed(0));
  const at = gbps.map((g) => `@${g} Gb/s (ms)`).join(' | ');
  const lines = [
    `Model (not measured): ${(cost.parameters / 1e9).toFixed(2)}B parameters, global batch ${config.train.batch_size}, ` +
      `${wire} gradients, PowerSGD rank ${rank} sends ${(100 * cost.powerSgdFraction).toFixed(1)}% of the values ` +
      `(${cost.compressedMatrices} matrices compressed); compute at ${peakTflops} TFLOP/s x ${mfu} MFU.`,
    '',
    `| GPUs | examples/GPU | compute (ms) | exact: GB/GPU | ${at} | PowerSGD: GB/GPU | ${at} |`,
    `|${' --- |'.repeat(4 + 2 * gbps.length + 1)}`,
    ...cost.rows.map((r) => `| ${r.gpus} | ${r.examplesPerGpu} | ${ms(r.computeSeconds)} | ${gb(r.exactBytes)} | ` +
      `${r.exactSeconds.map(ms).join(' | ')} | ${gb(r.powerSgdBytes)} | ${r.powerSgdSeconds.map(ms).join(' | ')} |`),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

try {
  main();
} catch (err) {
  process.stderr.write(`dp-cost-model: ${(err as Error).message}\n`);
  process.exit(2);
}
