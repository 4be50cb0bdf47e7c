// The tiny end-to-end check of a GPU session (bench/cuda-check.sh): trains a 2-step dVAE with `--device cuda` as a
// user would (the dalle executable, 8 generated 16 x 16 images) and records what happened in FILE: the exit code, the
// last lines of its output (the refusal text, while the commands refuse a GPU) and the seconds it took.
//   node dist/bench/cuda-e2e.js FILE
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';

const CONFIG = `kind: dvae
model: { n_hid: 8, n_groups: 2, n_blk_per_group: 1, vocab_size: 16, n_init: 8 }
data: { resolution: 16, prefetch_batches: 1 }
train: { steps: 2, batch_size: 4, checkpoint_every: 2, sample_every: 2, log_every: 1 }
runtime: { threads: 1 }
`;

async function main(): Promise<void> {
  const file = process.argv[2];
  if (!file) throw new Error('usage: node dist/bench/cuda-e2e.js FILE');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dalle-e2e-'));
  const images = path.join(dir, 'images');
  fs.mkdirSync(images);
  for (let i = 0; i < 8; i++) {
    const pixels = Buffer.alloc(16 * 16 * 3, 255);
    for (let p = 0; p < 16 * 4; p++) pixels[(i * 16 + p) % pixels.length] = (i * 37) % 256;
    await sharp(pixels, { raw: { width: 16, height: 16, channels: 3 } }).png().toFile(path.join(images, `${i}.png`));
  }
  fs.writeFileSync(path.join(dir, 'tiny.yaml'), CONFIG);
  const args = ['bin/run.js', 'train-dvae', '--config', path.join(dir, 'tiny.yaml'), '--data', images, '--out', path.join(dir, 'run'), '--device', 'cuda'];
  const t0 = Date.now();
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 50000 });
  const tail = (text: string | null): string[] => (text ?? '').trim().split('\n').slice(-8);
  const result = { command: `dalle ${args.slice(1).join(' ')}`, exitCode: r.status, signal: r.signal, seconds: (Date.now() - t0) / 1000,
    stdout: tail(r.stdout), stderr: tail(r.stderr) };
  fs.writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
  console.log(JSON.stringify(result));
  fs.rmSync(dir, { recursive: true, force: true });
  process.exitCode = r.status === 0 ? 0 : 1;
}

void main();
