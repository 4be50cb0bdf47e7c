// `dalle config --device cuda` prints the prior's per-GPU memory estimate (src/core/models/prior/size-cuda.ts) as a
// user runs it, in a child process on this GPU-less machine: the text says it is an estimate and what it counts,
// --json carries the same numbers under estimates.device, and without a GPU device there are no GPU lines.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { priorDeviceGenerationMemory, priorDeviceTrainingMemory } from '../../src/core/models/prior/size-cuda';
import type { PriorConfig } from '../../src/core/config';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const SMALL = ['--kind', 'prior', '--set', 'model.n_layers=2', '--set', 'model.n_heads=4', '--set', 'model.head_dim=32',
  '--set', 'model.text_len=12', '--set', 'model.text_vocab=2000', '--set', 'model.image_grid=6', '--set', 'model.image_vocab=256',
  '--set', 'model.conv_kernel=5', '--set', 'train.batch_size=4', '--set', 'train.recompute=true'];

function dalle(args: string[]) {
  const result = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'run.js'), 'config', ...SMALL, ...args], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  return result.stdout;
}

describe('dalle config --device cuda: the per-GPU memory estimate', function () {
  this.timeout(60000);

  it('--json carries the GPU estimate for the resolved config: by precision, batch and recompute', () => {
    const config = JSON.parse(dalle(['--device', 'cuda:1', '--json']).trim().split('\n').pop()!) as PriorConfig & {
      estimates: { device: { device: string; training: Record<string, unknown>; generation: unknown[] } };
    };
    const d = config.estimates.device;
    assert.equal(d.device, 'cuda:1');
    for (const precision of ['fp32', 'fp16', 'bf16'] as const) {
      assert.deepStrictEqual(d.training[precision],
        { batch: 4, recompute: true, ...priorDeviceTrainingMemory(config.model, 4, { precision, recompute: true }) });
    }
    assert.deepStrictEqual(d.generation[1], { batch: 8, condScale: 'other', ...priorDeviceGenerationMemory(config.model, 8, { condScale: 2 }) });
  });

  it('the text says it is an estimate, what it counts and what it leaves out', () => {
    const text = dalle(['--device', 'cuda']);
    assert.match(text, /# GPU memory per GPU \(cuda, estimate: the tensors above in the CUDA allocator's size classes plus the CUDA backend's attention workspaces/);
    assert.match(text, /#   training \(batch 4, recompute\): fp32 [\d.]+ GiB, fp16 [\d.]+ GiB, bf16 [\d.]+ GiB/);
    assert.match(text, /not counted: about \d+ MiB outside the allocator/);
  });

  it('on the CPU there are no GPU lines and no estimates.device', () => {
    const text = dalle([]);
    assert.doesNotMatch(text, /GPU memory/);
    const config = JSON.parse(dalle(['--json']).trim().split('\n').pop()!) as { estimates: Record<string, unknown> };
    assert.equal(config.estimates.device, undefined);
  });
});
