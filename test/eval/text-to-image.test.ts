/**
 * CLIP R-precision and the CLIP score of generated samples (src/core/eval/text-to-image/r-precision.ts) against
 * direct float64 computations on the same embeddings; the distractor pools (deterministic, keyed by the sample, never
 * the own caption text); the samples folder reader (generate's results.jsonl, strictly).
 */
import * as assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DataError } from '../../src/core/data/errors';
import { clipScoreStats, distinctCaptions, drawPools, rPrecision, SampleKey } from '../../src/core/eval/text-to-image/r-precision';
import { readSampleFolder } from '../../src/core/eval/text-to-image/samples';
import { Philox } from '../../src/core/tensor/rng';
import { temporaryDir } from '../commands/helpers';

/** (n, E) rows of unit length, float32, from seeded normals. */
function unitRows(n: number, E: number, seed: number): Float32Array {
  const out = new Philox(seed).fillNormal(new Float32Array(n * E));
  for (let i = 0; i < n; i++) {
    let norm = 0;
    for (let e = 0; e < E; e++) norm += out[i * E + e] ** 2;
    for (let e = 0; e < E; e++) out[i * E + e] /= Math.sqrt(norm);
  }
  return out;
}

/** Images near their caption's embedding: text[own[i]] + noise * random direction, normalised. */
function noisyImages(texts: Float32Array, own: Int32Array, E: number, noise: number, seed: number): Float32Array {
  const jitter = unitRows(own.length, E, seed);
  const out = new Float32Array(own.length * E);
  for (let i = 0; i < own.length; i++) {
    let norm = 0;
    for (let e = 0; e < E; e++) {
      out[i * E + e] = texts[own[i] * E + e] + noise * jitter[i * E + e];
      norm += out[i * E + e] ** 2;
    }
    for (let e = 0; e < E; e++) out[i * E + e] /= Math.sqrt(norm);
  }
  return out;
}

function keysOf(n: number, perCaption = 1): SampleKey[] {
  return Array.from({ length: n }, (_, i) => ({ captionIndex: Math.floor(i / perCaption), sample: i % perCaption }));
}

/** float64 cosine of row i of a and row j of b (both (., E)). */
function cos64(a: Float32Array, i: number, b: Float32Array, j: number, E: number): number {
  let s = 0;
  for (let e = 0; e < E; e++) s += Number(a[i * E + e]) * Number(b[j * E + e]);
  return s;
}

describe('eval: text-to-image R-precision and CLIP score', () => {
  const E = 12;

  it('draws pools: own caption first, distinct distractors of other captions, the same for the same seed and sample', () => {
    const C = 40;
    const own = Int32Array.from({ length: 30 }, (_, i) => (i * 7) % C);
    const keys = keysOf(30, 3);
    const a = drawPools(own, keys, C, 10, 5);
    const b = drawPools(own, keys, C, 10, 5);
    const c = drawPools(own, keys, C, 10, 6);
    assert.equal(a.size, 10);
    assert.deepEqual(a.pools, b.pools);
    assert.notDeepEqual(a.pools, c.pools);
    for (let i = 0; i < own.length; i++) {
      const row = Array.from(a.pools.subarray(i * 10, (i + 1) * 10));
      assert.equal(row[0], own[i]);
      assert.equal(new Set(row).size, 10, `pool ${i} repeats a caption: ${row}`);
      for (const d of row) assert.ok(d >= 0 && d < C);
    }
    // A sample's pool depends on which sample it is, not on the others: the pools of a subset are the same rows.
    const subset = [4, 17, 29];
    const sub = drawPools(Int32Array.from(subset, (i) => own[i]), subset.map((i) => keys[i]), C, 10, 5);
    subset.forEach((i, k) => assert.deepEqual(sub.pools.subarray(k * 10, (k + 1) * 10), a.pools.subarray(i * 10, (i + 1) * 10)));
    // Every other caption is drawn about equally often (uniform draws): 3,000 pools of 9 from 39.
    const many = drawPools(new Int32Array(3000), keysOf(3000), C, 10, 1);
    const counts = new Array(C).fill(0);
    for (let i = 0; i < 3000; i++) for (let j = 1; j < 10; j++) counts[many.pools[i * 10 + j]]++;
    assert.equal(counts[0], 0);
    const expected = (3000 * 9) / 39;
    for (let d = 1; d < C; d++) assert.ok(Math.abs(counts[d] - expected) < 5 * Math.sqrt(expected), `caption ${d} drawn ${counts[d]} times, expected ~${expected.toFixed(0)}`);
  });

  it('with fewer distinct captions than the pool, the pool is all of them', () => {
    const { pools, size } = drawPools(Int32Array.from([0, 2, 1]), keysOf(3), 3, 100, 0);
    assert.equal(size, 3);
    for (let i = 0; i < 3; i++) assert.deepEqual([...pools.subarray(i * 3, i * 3 + 3)].sort(), [0, 1, 2]);
    assert.throws(() => drawPools(Int32Array.from([0]), keysOf(1), 1, 100, 0), /at least 2 distinct captions/);
  });

  it('R-precision equals a float64 ranking of the same embeddings: all captions, and drawn pools smaller than that', () => {
    const C = 30;
    const texts = unitRows(C, E, 1);
    const captions = Array.from({ length: 60 }, (_, i) => `caption ${i % C}`);
    const set = distinctCaptions(captions);
    assert.equal(set.texts.length, C);
    const images = noisyImages(texts, set.own, E, 1.1, 2); // noisy enough that some images fail
    const keys = keysOf(60, 2);

    // Pool >= C: every image ranks every distinct caption; no draw is involved.
    const all = rPrecision(images, texts, set.own, keys, { pool: 100, seed: 0 });
    let first = 0;
    let top5 = 0;
    for (let i = 0; i < 60; i++) {
      const mine = cos64(images, i, texts, set.own[i], E);
      const above = Array.from({ length: C }, (_, c) => c).filter((c) => c !== set.own[i] && cos64(images, i, texts, c, E) >= mine).length;
      if (above === 0) first++;
      if (above < 5) top5++;
    }
    assert.equal(all.pool, C);
    assert.equal(all.poolRequested, 100);
    assert.equal(all.top1, first / 60);
    assert.equal(all.top5, top5 / 60);
    assert.ok(all.top1 > 0.1 && all.top1 < 0.95, `the case should be neither trivial nor hopeless: ${all.top1}`);
    assert.ok(Math.abs(all.top1StdErr - Math.sqrt((all.top1 * (1 - all.top1)) / 60)) < 1e-15);

    // Pool 8 < C: the reference ranks each image's drawn pool itself.
    const small = rPrecision(images, texts, set.own, keys, { pool: 8, seed: 3 });
    const { pools } = drawPools(set.own, keys, C, 8, 3);
    let hits = 0;
    for (let i = 0; i < 60; i++) {
      const mine = cos64(images, i, texts, pools[i * 8], E);
      const rank = 1 + Array.from(pools.subarray(i * 8 + 1, i * 8 + 8)).filter((c) => cos64(images, i, texts, c, E) >= mine).length;
      assert.equal(small.ranks[i], rank, `image ${i}`);
      if (rank === 1) hits++;
    }
    assert.equal(small.pool, 8);
    assert.equal(small.chance, 1 / 8);
    assert.equal(small.top1, hits / 60);
    assert.ok(small.top1 > all.top1, 'fewer distractors retrieve more often');
  });

  it('a caption given to several samples is never its own distractor', () => {
    // Each image is exactly its caption's embedding: ranked against every other distinct caption it comes first.
    // Were another sample's copy of the same text a distractor, it would tie (cos 1) and rank the image second.
    const texts = unitRows(5, E, 4);
    const captions = ['a', 'b', 'a', 'c', 'a', 'd', 'e', 'b'];
    const set = distinctCaptions(captions);
    assert.deepEqual(set.texts, ['a', 'b', 'c', 'd', 'e']);
    assert.deepEqual([...set.own], [0, 1, 0, 2, 0, 3, 4, 1]);
    const images = new Float32Array(captions.length * E);
    captions.forEach((_, i) => images.set(texts.subarray(set.own[i] * E, (set.own[i] + 1) * E), i * E));
    for (const pool of [3, 100]) {
      const r = rPrecision(images, texts, set.own, keysOf(captions.length), { pool, seed: 9 });
      assert.equal(r.top1, 1, `pool ${pool}: ranks ${r.ranks}`);
      assert.equal(r.captions, 5);
    }
    // A distinct text with the same embedding does tie, and a tie is not credited.
    const twin = new Float32Array(6 * E);
    twin.set(texts);
    twin.set(texts.subarray(0, E), 5 * E); // caption 5 embeds like caption 0
    const tied = rPrecision(images, twin, set.own, keysOf(captions.length), { pool: 100, seed: 9 });
    assert.deepEqual([...tied.ranks], [2, 1, 2, 1, 2, 1, 1, 1]);
  });

  it('the CLIP score is 100 max(cos, 0) per image, its mean and standard error', () => {
    const texts = unitRows(6, E, 7);
    const own = Int32Array.from([0, 1, 2, 3, 4, 5, 0, 1, 2]);
    const images = unitRows(9, E, 8); // random directions: some cosines are negative
    const s = clipScoreStats(images, texts, own);
    const ref = Array.from(own, (c, i) => 100 * Math.max(cos64(images, i, texts, c, E), 0));
    assert.ok(ref.some((v) => v === 0) && ref.some((v) => v > 0), 'the case should hold clamped and positive scores');
    const mean = ref.reduce((a, b) => a + b, 0) / 9;
    const std = Math.sqrt(ref.reduce((a, v) => a + (v - mean) ** 2, 0) / 8);
    assert.ok(Math.abs(s.mean - mean) < 1e-12);
    assert.ok(Math.abs(s.std! - std) < 1e-12);
    assert.ok(Math.abs(s.stdErr! - std / 3) < 1e-12);
    ref.forEach((v, i) => assert.ok(Math.abs(s.scores[i] - v) < 1e-12));
    assert.equal(clipScoreStats(images.subarray(0, E), texts, own.subarray(0, 1)).stdErr, null);
  });
});

describe('eval: text-to-image samples folder', () => {
  let dir: string;
  const png = Buffer.from('89504e470d0a1a0a', 'hex'); // only existence is checked when reading the folder

  beforeEach(() => {
    dir = temporaryDir('dalle-t2i-');
  });

  function write(lines: string[]): void {
    fs.writeFileSync(path.join(dir, 'results.jsonl'), lines.join('\n') + '\n');
  }
  const rec = (c: number, s: number, caption: string, extra: Record<string, unknown> = {}) =>
    JSON.stringify({ caption_index: c, caption, sample: s, seed: 0, file: `c${c}-s${s}.png`, log_likelihood: -1, tokens: 4, ...extra });

  it('reads the last record of each image, sorted, passing over torn lines; kept images with --kept', () => {
    for (const f of ['c0-s0.png', 'c0-s1.png', 'c1-s0.png']) fs.writeFileSync(path.join(dir, f), png);
    fs.writeFileSync(path.join(dir, 'generation.json'), JSON.stringify({ seed: 4, cond_scale: 3 }));
    write([rec(1, 0, 'blue', { kept: true }), rec(0, 1, 'red', { kept: false }), '{"caption_ind', rec(0, 0, 'old'), rec(0, 0, 'red', { kept: true })]);
    const folder = readSampleFolder(dir);
    assert.deepEqual(folder.samples.map((s) => [s.captionIndex, s.sample, s.caption, path.basename(s.file)]), [[0, 0, 'red', 'c0-s0.png'], [0, 1, 'red', 'c0-s1.png'], [1, 0, 'blue', 'c1-s0.png']]);
    assert.equal(folder.tornLines, 1);
    assert.deepEqual(folder.generation, { seed: 4, cond_scale: 3 });
    assert.deepEqual(readSampleFolder(dir, { keptOnly: true }).samples.map((s) => path.basename(s.file)), ['c0-s0.png', 'c1-s0.png']);
  });

  it('refuses what is not a generate folder: no results, a file outside, a missing image, no caption, not reranked', () => {
    assert.throws(() => readSampleFolder(path.join(dir, 'none')), (e: Error) => e instanceof DataError && /does not exist/.test(e.message));
    assert.throws(() => readSampleFolder(dir), /has no results\.jsonl/);
    write([rec(0, 0, 'red', { file: '../x.png' })]);
    assert.throws(() => readSampleFolder(dir), /line 1: file "\.\.\/x\.png" is not the name of a file in the folder/);
    write([rec(0, 0, 'red')]);
    assert.throws(() => readSampleFolder(dir), /1 image\(s\) that .* lists are missing: c0-s0\.png/);
    fs.writeFileSync(path.join(dir, 'c0-s0.png'), png);
    write([rec(0, 0, 'red'), JSON.stringify({ caption_index: 1, sample: 0, file: 'c1-s0.png' })]);
    assert.throws(() => readSampleFolder(dir), /line 2: caption undefined is not a non-empty string/);
    write([rec(0, 0, 'red')]);
    assert.equal(readSampleFolder(dir).samples.length, 1);
    assert.throws(() => readSampleFolder(dir, { keptOnly: true }), /has not been reranked/);
  });
});
