// bench/cuda-summary.py's memoryEstimate on made-up run folders (no GPU): for each prior run of bench/cuda-check.sh
// (prior-gpu fp32, prior-gpu-fp16) it sets the estimate that `dalle config --device cuda --json` gave for the run's
// config (NAME.estimate.json) against the run's measured peakBytesInUse (NAME.json), for the run's own precision, and
// says whether the ratio is within 20%; a missing file is named, not a crash.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { temporaryDir } from '../commands/helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');

function summarize(files: Record<string, unknown>): Record<string, Record<string, unknown>> {
  const dir = temporaryDir('dalle-cuda-summary-');
  for (const [name, value] of Object.entries(files)) {
    fs.writeFileSync(path.join(dir, name), typeof value === 'string' ? value : JSON.stringify(value));
  }
  const run = spawnSync('python3', [path.join(ROOT, 'bench', 'cuda-summary.py'), dir], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  return JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')).memoryEstimate;
}

/** The last line of `dalle config --device cuda --json` for a small prior, as gpu_estimate saves it. */
function configEstimate(precision: string): Record<string, unknown> {
  const run = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'run.js'), 'config', '--kind', 'prior', '--set', 'model.n_layers=2',
    '--set', 'train.batch_size=4', '--device', 'cuda', '--precision', precision, '--json'], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  return JSON.parse(run.stdout.trim().split('\n').pop()!);
}

describe('bench/cuda-summary.py: the GPU memory estimate against the measured peak', function () {
  this.timeout(60000);

  it('reads the estimate of the run\'s precision from the real `dalle config` JSON; ratio and the 20% verdict', () => {
    const fp32 = configEstimate('fp32');
    const fp16 = configEstimate('fp16');
    type Training = Record<string, { totalBytes: number }>;
    const est32 = ((fp32.estimates as { device: { training: Training } }).device.training).fp32.totalBytes;
    const est16 = ((fp16.estimates as { device: { training: Training } }).device.training).fp16.totalBytes;
    const m = summarize({
      'prior-gpu.estimate.json': fp32,
      'prior-gpu.json': { peakBytesInUse: Math.round(est32 / 1.1) }, // estimate 10% above: within
      'prior-gpu-fp16.estimate.json': fp16,
      'prior-gpu-fp16.json': { peakBytesInUse: Math.round(est16 / 1.3) }, // 30% above: not within
    });
    assert.equal(m.fp32.precision, 'fp32');
    assert.equal(m.fp32.batch, 4);
    assert.equal(m.fp32.estimate_bytes, est32);
    assert.ok(Math.abs((m.fp32.ratio_estimate_to_measured as number) - 1.1) < 1e-6);
    assert.equal(m.fp32.within_20_percent, true);
    assert.equal(m.fp16.precision, 'fp16');
    assert.equal(m.fp16.estimate_bytes, est16);
    assert.ok(Math.abs((m.fp16.ratio_estimate_to_measured as number) - 1.3) < 1e-6);
    assert.equal(m.fp16.within_20_percent, false);
  });

  it('names what is missing: no estimate file, no measured peak, an estimate without the GPU part', () => {
    const m = summarize({
      'prior-gpu.estimate.json': { runtime: { precision: 'fp32' }, estimates: { device: { training: { fp32: { totalBytes: 5e6, batch: 2 } } } } },
      'prior-gpu.json': { error: 'the run failed' },
      'prior-gpu-fp16.estimate.json': { runtime: { precision: 'fp16' }, estimates: { training: {} } },
    });
    assert.match(String(m.fp32.measured_peak_bytes), /^missing \(no peakBytesInUse in prior-gpu\.json\)/);
    assert.equal(m.fp32.within_20_percent, undefined);
    assert.match(String(m.fp16.unreadable), /prior-gpu-fp16\.estimate\.json: no estimates\.device\.training\.fp16\.totalBytes/);
    assert.deepStrictEqual(summarize({}), { fp32: { missing: 'prior-gpu.estimate.json' }, fp16: { missing: 'prior-gpu-fp16.estimate.json' } });
  });
});
