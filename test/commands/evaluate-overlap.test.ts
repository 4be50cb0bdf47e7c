/**
 * `dalle evaluate overlap` as a user runs it: a tiny CLIP trained on a tiny captioned folder; the queries are an exact
 * copy of a training image (found with cosine ~1 and flagged, its original first), and images unlike any training
 * image (not flagged); the JSON and HTML reports (thumbnails inline, file names escaped); bad flags. Also
 * nearestNeighbours against a plain sort of every similarity.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import sharp from 'sharp';
import { nearestNeighbours } from '../../src/core/eval/overlap';
import { temporaryDir } from './helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');

function dalle(args: string[]) {
  return runCommand(args, { root: ROOT });
}

const COLOURS: Record<string, [number, number, number]> = { red: [230, 20, 20], green: [20, 200, 40], blue: [30, 40, 220], yellow: [240, 220, 30] };

async function png(file: string, side: number, pixel: (x: number, y: number) => [number, number, number]): Promise<void> {
  const data = Buffer.alloc(side * side * 3);
  for (let y = 0; y < side; y++) for (let x = 0; x < side; x++) data.set(pixel(x, y), (y * side + x) * 3);
  await sharp(data, { raw: { width: side, height: side, channels: 3 } }).png().toFile(file);
}

/** 12 captioned 20x20 images: a coloured square (three sizes, in a corner) on white. */
async function makeTrain(dir: string): Promise<string> {
  fs.mkdirSync(dir, { recursive: true });
  let i = 0;
  for (const [name, rgb] of Object.entries(COLOURS)) {
    for (const size of [6, 10, 14]) {
      const id = String(i++).padStart(3, '0');
      await png(path.join(dir, `${id}.png`), 20, (x, y) => (x >= 2 && y >= 2 && x < 2 + size && y < 2 + size ? rgb : [255, 255, 255]));
      fs.writeFileSync(path.join(dir, `${id}.txt`), `a ${size} ${name} square\n`);
    }
  }
  return dir;
}

describe('commands: evaluate overlap', function () {
  this.timeout(180000);
  let work: string;
  let train: string;
  let queries: string;
  let clip: string;

  before(async () => {
    work = temporaryDir('dalle-overlap-');
    train = await makeTrain(path.join(work, 'train'));
    clip = path.join(work, 'clip');
    const { error } = await dalle(['train-clip', '--data', train, '--out', clip, '--steps', '30', '--batch-size', '6', '--vocab', '270', '--resolution', '16', '--checkpoint-every', '30', '--threads', '1']);
    assert.equal(error, undefined, error?.message);
    queries = path.join(work, 'queries');
    fs.mkdirSync(queries);
    fs.copyFileSync(path.join(train, '004.png'), path.join(queries, 'copy of <004> & co.png')); // an exact duplicate
    // Unlike anything in training: black and magenta stripes; a dark diagonal gradient; cyan and black checks.
    await png(path.join(queries, 'stripes.png'), 20, (_x, y) => (y % 4 < 2 ? [0, 0, 0] : [255, 0, 255]));
    await png(path.join(queries, 'gradient.png'), 20, (x, y) => [x * 6, y * 6, 40]);
    await png(path.join(queries, 'checks.png'), 20, (x, y) => ((x >> 2) + (y >> 2)) % 2 ? [0, 255, 255] : [0, 0, 0]);
  });

  afterEach(() => {
    process.exitCode = undefined;
  });

  it('finds and flags an exact copy of a training image; images unlike the training set are not flagged', async () => {
    const out = path.join(work, 'report', 'overlap');
    const { error, stdout } = await dalle(['evaluate', 'overlap', '--clip', clip, '--train', train, '--images', queries, '--top', '3', '--out', out, '--json']);
    assert.equal(error, undefined, error?.message);
    const r = JSON.parse(stdout.trim().split('\n').pop()!);
    assert.equal(r.train.images, 12);
    assert.equal(r.queries.images, 4);
    assert.equal(r.threshold, 0.95);
    const byId = new Map<string, { flagged: boolean; nearest: Array<{ id: string; similarity: number }> }>(r.results.map((q: { id: string }) => [q.id, q]));
    const copy = byId.get('copy of <004> & co.png')!;
    assert.ok(copy.flagged);
    assert.equal(copy.nearest[0].id, '004.png');
    assert.ok(Math.abs(copy.nearest[0].similarity - 1) < 1e-5, `copy similarity ${copy.nearest[0].similarity}`);
    assert.equal(copy.nearest.length, 3);
    for (const name of ['stripes.png', 'gradient.png', 'checks.png']) {
      const q = byId.get(name)!;
      assert.equal(q.flagged, false, `${name} flagged at cosine ${q.nearest[0].similarity}`);
      assert.ok(q.nearest[0].similarity < 0.95, `${name}: ${q.nearest[0].similarity}`);
      for (let k = 1; k < q.nearest.length; k++) assert.ok(q.nearest[k - 1].similarity >= q.nearest[k].similarity, 'best first');
    }
    assert.equal(r.flagged, 1);
    assert.deepEqual(r.files, { json: `${out}.json`, html: `${out}.html` });
    assert.deepEqual(JSON.parse(fs.readFileSync(`${out}.json`, 'utf8')).results, r.results);
    const html = fs.readFileSync(`${out}.html`, 'utf8');
    assert.equal((html.match(/<img src="data:image\/png;base64,/g) ?? []).length, 4, 'the flagged query and its 3 neighbours');
    assert.ok(html.includes('copy of &lt;004&gt; &amp; co.png'));
    assert.ok(!html.includes('<004>'));
  });

  it('a lower threshold flags more; the human output names the flagged pairs', async () => {
    const { error, stdout } = await dalle(['evaluate', 'overlap', '--clip', clip, '--train', train, '--images', queries, '--threshold', '-1']);
    assert.equal(error, undefined, error?.message);
    assert.match(stdout, /^4 of 4 query images flagged .* among 12 training images/m);
    assert.match(stdout, /copy of <004> & co\.png ~ 004\.png \(cos 1\.0000\)/);
  });

  it('refuses a threshold outside [-1, 1] and a missing folder', async () => {
    const bad = await dalle(['evaluate', 'overlap', '--clip', clip, '--train', train, '--images', queries, '--threshold', '1.5']);
    assert.match(bad.error?.message ?? '', /--threshold must be a cosine similarity in \[-1, 1\]/);
    assert.equal(bad.error?.oclif?.exit, 2);
    const missing = await dalle(['evaluate', 'overlap', '--clip', clip, '--train', path.join(work, 'nope'), '--images', queries]);
    assert.ok(missing.error, 'a missing training folder is an error');
    assert.equal(missing.error?.name, 'DataError');
  });

  it('nearestNeighbours equals a full sort of the float64 cosines', () => {
    const dim = 5;
    let s = 99;
    const rand = (): number => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
    const train = Float32Array.from({ length: 37 * dim }, rand);
    const queries = Float32Array.from({ length: 6 * dim }, rand);
    const got = nearestNeighbours(queries, train, dim, 4);
    for (let q = 0; q < 6; q++) {
      const all = Array.from({ length: 37 }, (_, t) => {
        let dot = 0, a = 0, b = 0;
        for (let e = 0; e < dim; e++) {
          dot += queries[q * dim + e] * train[t * dim + e];
          a += queries[q * dim + e] ** 2;
          b += train[t * dim + e] ** 2;
        }
        return { index: t, similarity: dot / Math.sqrt(a * b) };
      }).sort((x, y) => y.similarity - x.similarity);
      assert.deepEqual(got[q].map((n) => n.index), all.slice(0, 4).map((n) => n.index));
      got[q].forEach((n, k) => assert.ok(Math.abs(n.similarity - all[k].similarity) < 1e-12));
    }
    assert.equal(nearestNeighbours(queries, train.subarray(0, 2 * dim), dim, 4)[0].length, 2, 'K is capped at the training set');
  });
});
