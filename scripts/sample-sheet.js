#!/usr/bin/env node
// A sample sheet for the README from a `dalle generate` folder: every image of results.jsonl, in caption then sample
// order, tiled into one PNG (2 px white padding), `--columns` images a row (default 8: two captions of 4 samples).
// Usage: node scripts/sample-sheet.js GENERATE_DIR OUT.png [--columns N]
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const sharp = require('sharp');
const root = path.join(__dirname, '..');
const { tileImages, writePng } = require(path.join(root, 'dist/src/core/image/grid'));

async function main(argv) {
  const columnsAt = argv.indexOf('--columns');
  const columns = columnsAt >= 0 ? Number(argv[columnsAt + 1]) : 8;
  const args = argv.filter((a, i) => !a.startsWith('--') && i !== columnsAt + 1);
  if (args.length !== 2 || !Number.isInteger(columns) || columns < 1) {
    console.error('usage: node scripts/sample-sheet.js GENERATE_DIR OUT.png [--columns N]');
    process.exit(2);
  }
  const [dir, out] = args;
  const records = fs.readFileSync(path.join(dir, 'results.jsonl'), 'utf8').split('\n').filter((l) => l.trim())
    .map((l) => JSON.parse(l))
    .sort((a, b) => a.caption_index - b.caption_index || a.sample - b.sample);
  const tiles = [];
  for (const r of records) {
    const { data, info } = await sharp(path.join(dir, r.file)).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    tiles.push({ width: info.width, height: info.height, data: new Uint8Array(data) });
  }
  await writePng(out, tileImages(tiles, { columns }));
  console.log(`${out}: ${tiles.length} images, ${columns} a row`);
}

main(process.argv.slice(2)).catch((e) => {
  console.error(e.message);
  process.exit(1);
});
