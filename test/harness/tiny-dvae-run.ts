// The trained run that command tests start from: a fresh work folder, `imageCount` tiny images in work/images, and a
// dVAE trained on them by `dalle train-dvae` as a user runs it (the tiny config, 8 updates) into work/runs/tiny.
import assert from 'node:assert/strict';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import { makeImages, temporaryDir, writeTinyConfig } from '../commands/helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');

export interface TinyDvaeRun {
  readonly work: string;
  readonly images: string;
  readonly run: string;
}

export async function trainTinyDvaeRun(prefix: string, imageCount: number): Promise<TinyDvaeRun> {
  const work = temporaryDir(prefix);
  const images = await makeImages(path.join(work, 'images'), imageCount);
  const run = path.join(work, 'runs', 'tiny');
  const { error } = await runCommand(['train-dvae', '--config', writeTinyConfig(work), '--data', images, '--out', run], { root: ROOT });
  assert.equal(error, undefined, error?.message);
  return { work, images, run };
}
