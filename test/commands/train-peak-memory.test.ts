/**
 * `dalle train-dvae --json` and `dalle train-prior --json` end with the run's peak memory on its device
 * (peakBytesInUse: the device allocator's peak from model creation to the end), the figure a GPU session compares
 * between --precision fp16 and fp32. It is the run's own: a larger allocation freed before the run does not count, and
 * it holds at least the weights and AdamW's two moments.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import { native } from '../../src/core/native';
import { makeImages, temporaryDir, writeTinyConfig } from './helpers';
import { makeCaptionedData, makeTinyDvae, writeTinyPriorConfig } from '../train/prior-helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const EARLIER_PEAK = 48 * 1024 * 1024;

/** The command's final JSON object (the last stdout line under --json). */
async function finalJson(args: string[]): Promise<Record<string, unknown>> {
  const { error, stdout } = await runCommand([...args, '--json'], { root: ROOT });
  assert.equal(error, undefined, error?.message);
  return JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

/** Raises the CPU allocator's peak well above what a tiny run holds, then frees it. */
function allocateAndFree(bytes: number): void {
  const address = native.alloc(bytes);
  native.free(address, bytes);
  assert.ok(native.allocStats().peakBytesInUse >= bytes);
}

function weightBytes(checkpoint: string): number {
  return fs.statSync(path.join(checkpoint, 'model.safetensors')).size;
}

describe('commands: train-dvae / train-prior report the run peak memory', function () {
  this.timeout(180000);

  afterEach(() => {
    process.exitCode = undefined;
  });

  it('train-dvae: peakBytesInUse covers weights and moments, not an earlier allocation', async () => {
    const work = temporaryDir('dalle-peak-dvae-');
    const images = await makeImages(path.join(work, 'images'), 8);
    allocateAndFree(EARLIER_PEAK);
    const result = await finalJson(['train-dvae', '--config', writeTinyConfig(work), '--data', images, '--out', path.join(work, 'run')]);
    const peak = result.peakBytesInUse as number;
    assert.equal(typeof peak, 'number');
    assert.ok(peak >= 3 * weightBytes(result.checkpoint as string), `peak ${peak} below weights + 2 moments`);
    assert.ok(peak < EARLIER_PEAK, `peak ${peak} counts the allocation freed before the run`);
  });

  it('train-prior: the same, and the token cache encoding before the model is not counted', async () => {
    const work = temporaryDir('dalle-peak-prior-');
    const data = await makeCaptionedData(path.join(work, 'data'));
    const dvae = await makeTinyDvae(work, data);
    allocateAndFree(EARLIER_PEAK);
    const result = await finalJson(['train-prior', '--config', writeTinyPriorConfig(work), '--data', data, '--dvae', dvae, '--out', path.join(work, 'run'), '--set', 'train.steps=2']);
    const peak = result.peakBytesInUse as number;
    assert.equal(typeof peak, 'number');
    assert.ok(peak >= 3 * weightBytes(result.checkpoint as string), `peak ${peak} below weights + 2 moments`);
    assert.ok(peak < EARLIER_PEAK, `peak ${peak} counts the allocation freed before the run`);
  });
});
