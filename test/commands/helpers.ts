/** A tiny dVAE config and a small data set of generated images, for tests that train for real in well under a second. */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { dvaeConfig, DvaeConfig, parseSetArgument, resolveConfig } from '../../src/core/config';

const temporaryDirs: string[] = [];
after(() => {
  for (const dir of temporaryDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

export function temporaryDir(prefix = 'dalle-train-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  temporaryDirs.push(dir);
  return dir;
}

/** The tiny dVAE: n_hid 8, 2 groups (16 px -> an 8x8 grid), vocab 16, batch 4. */
export const TINY_YAML = `kind: dvae
model:
  n_hid: 8
  n_groups: 2
  n_blk_per_group: 1
  vocab_size: 16
  n_init: 8
data:
  resolution: 16
  prefetch_batches: 1
train:
  steps: 8
  batch_size: 4
  lr: 1.0e-3
  kl_ramp_steps: 4
  tau_anneal_steps: 8
  checkpoint_every: 4
  sample_every: 4
  log_every: 1
runtime:
  threads: 1
`;

export function writeTinyConfig(dir: string): string {
  const file = path.join(dir, 'tiny.yaml');
  fs.writeFileSync(file, TINY_YAML);
  return file;
}

export function tinyConfig(dataPath: string, sets: string[] = []): DvaeConfig {
  const dir = temporaryDir('dalle-cfg-');
  return resolveConfig(dvaeConfig, {
    file: writeTinyConfig(dir),
    sets: [`data.path=${dataPath}`, ...sets].map((text) => parseSetArgument(text)),
  });
}

/** `count` PNGs (20x20, so the loader resizes them) of coloured rectangles on white, deterministic. */
export async function makeImages(dir: string, count = 10): Promise<string> {
  fs.mkdirSync(dir, { recursive: true });
  let state = 12345;
  const next = (): number => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
  for (let i = 0; i < count; i++) {
    const side = 20;
    const pixels = Buffer.alloc(side * side * 3, 255);
    const [x0, y0] = [Math.floor(next() * 10), Math.floor(next() * 10)];
    const [w, h] = [4 + Math.floor(next() * 8), 4 + Math.floor(next() * 8)];
    const colour = [next() * 255, next() * 255, next() * 255];
    for (let y = y0; y < Math.min(side, y0 + h); y++) {
      for (let x = x0; x < Math.min(side, x0 + w); x++) {
        for (let c = 0; c < 3; c++) pixels[(y * side + x) * 3 + c] = colour[c];
      }
    }
    await sharp(pixels, { raw: { width: side, height: side, channels: 3 } })
      .png()
      .toFile(path.join(dir, `${String(i).padStart(3, '0')}.png`));
  }
  return dir;
}

export interface MetricsLine {
  step: number;
  loss: number;
  recon: number;
  recon_per_dim: number;
  kl: number;
  perplexity: number;
  dead_codes: number;
  grad_norm: number;
}

export function readMetrics(runDir: string): MetricsLine[] {
  return fs
    .readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as MetricsLine);
}

/** Every file under `dir` (relative path -> sha256 of its bytes) and every folder (-> 'dir'): equal means unchanged. */
export function hashTree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (folder: string): void => {
    for (const entry of fs.readdirSync(folder, { withFileTypes: true })) {
      const full = path.join(folder, entry.name);
      const relative = path.relative(dir, full);
      if (entry.isDirectory()) {
        out[relative] = 'dir';
        walk(full);
      } else {
        out[relative] = createHash('sha256').update(fs.readFileSync(full)).digest('hex');
      }
    }
  };
  walk(dir);
  return out;
}
