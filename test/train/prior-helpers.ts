/** A tiny captioned data set (train/ and val/), a tiny trained dVAE and a tiny prior config, for prior tests. */
import fs from 'node:fs';
import path from 'node:path';
import { parseSetArgument, priorConfig, PriorConfig, resolveConfig } from '../../src/core/config';
import { DvaeTrainer } from '../../src/core/train/dvae-trainer';
import { makeImages, temporaryDir, tinyConfig } from '../commands/helpers';

/** 2 layers (row, conv), 2 heads of 4, 6 text positions, the tiny dVAE's 8x8 grid of 16 codes. */
export const TINY_PRIOR_YAML = `kind: prior
model:
  n_layers: 2
  n_heads: 2
  head_dim: 4
  text_len: 6
  text_vocab: 300
  image_grid: 8
  image_vocab: 16
  conv_kernel: 3
data:
  bpe_dropout: 0.1
train:
  steps: 6
  batch_size: 3
  lr: 1.0e-3
  warmup_steps: 2
  caption_dropout: 0.2
  checkpoint_every: 3
  sample_every: 3
  log_every: 1
  val_every: 3
runtime:
  threads: 1
`;

const WORDS = ['red', 'green', 'blue', 'box', 'small', 'large', 'left', 'right', 'square', 'on', 'white'];

/** DIR/train (12 images) and DIR/val (4 images) with one or two captions each, deterministic. */
export async function makeCaptionedData(dir: string): Promise<string> {
  let state = 7;
  const next = (n: number): number => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return Math.floor((state / 2 ** 32) * n);
  };
  for (const [split, count] of [['train', 12], ['val', 4]] as const) {
    const folder = await makeImages(path.join(dir, split), count);
    for (const png of fs.readdirSync(folder).filter((f) => f.endsWith('.png'))) {
      const caption = () => Array.from({ length: 2 + next(4) }, () => WORDS[next(WORDS.length)]).join(' ');
      const lines = next(2) === 0 ? [caption()] : [caption(), caption()];
      fs.writeFileSync(path.join(folder, png.replace(/\.png$/, '.txt')), lines.join('\n') + '\n');
    }
  }
  return dir;
}

/** Trains the tiny dVAE of commands/helpers for 2 updates on the train split; returns its run directory. */
export async function makeTinyDvae(work: string, data: string): Promise<string> {
  const out = path.join(work, 'dvae');
  await new DvaeTrainer({ config: tinyConfig(path.join(data, 'train'), ['train.steps=2']), out }).run();
  return out;
}

export function writeTinyPriorConfig(dir: string): string {
  const file = path.join(dir, 'tiny-prior.yaml');
  fs.writeFileSync(file, TINY_PRIOR_YAML);
  return file;
}

export function tinyPriorConfig(data: string, dvae: string, sets: string[] = []): PriorConfig {
  const dir = temporaryDir('dalle-cfg-');
  return resolveConfig(priorConfig, {
    file: writeTinyPriorConfig(dir),
    sets: [`data.path=${data}`, `data.dvae=${dvae}`, ...sets].map((text) => parseSetArgument(text)),
  });
}

export function readJsonLines<T = Record<string, number>>(file: string): T[] {
  return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as T);
}
