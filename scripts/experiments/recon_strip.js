#!/usr/bin/env node
// Originals (top row) over their reconstructions (bottom row) for every Nth image of a folder, through `dalle encode`
// and `dalle decode` as a user runs them; the README's reconstruction strips.
//   node scripts/experiments/recon_strip.js RUN DATA_DIR OUT.png [every=50] [count=16]
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const sharp = require('sharp');

async function main() {
  const [run, dir, out, everyArg, countArg] = process.argv.slice(2);
  if (!run || !dir || !out) throw new Error('usage: recon_strip.js RUN DATA_DIR OUT.png [every=50] [count=16]');
  const every = Number(everyArg || 50);
  const count = Number(countArg || 16);
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.png')).sort().filter((_, i) => i % every === 0).slice(0, count);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recon-strip-'));
  const cli = path.join(__dirname, '..', '..', 'bin', 'run.js');
  execFileSync('node', [cli, 'encode', '--dvae', run, ...files.map((f) => path.join(dir, f)), '--out', path.join(tmp, 't.npy')], { stdio: 'inherit' });
  execFileSync('node', [cli, 'decode', '--dvae', run, path.join(tmp, 't.npy'), '--out', path.join(tmp, 'dec')], { stdio: 'inherit' });
  const side = (await sharp(path.join(dir, files[0])).metadata()).width;
  const cell = side + 2;
  const tiles = [];
  for (let i = 0; i < files.length; i++) {
    const original = await sharp(path.join(dir, files[i])).flatten({ background: '#ffffff' }).png().toBuffer();
    const decoded = path.join(tmp, 'dec', `${String(i).padStart(6, '0')}.png`);
    tiles.push({ input: original, left: i * cell + 1, top: 1 }, { input: decoded, left: i * cell + 1, top: cell + 1 });
  }
  await sharp({ create: { width: files.length * cell, height: 2 * cell, channels: 3, background: '#ffffff' } })
    .composite(tiles).png({ compressionLevel: 9, adaptiveFiltering: true }).toFile(out); // lossless (effort would quantize to a palette)
  fs.rmSync(tmp, { recursive: true, force: true });
  console.log(`${out}: ${files.length} images (every ${every}th of ${dir}) over their reconstructions by ${run}`);
}

main().catch((e) => { console.error(e.message); process.exit(1); });
