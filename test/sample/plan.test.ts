/** Shards, unit streams and file names (plan.ts); the output folder (output.ts). */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { ShardError, parseShard, shardUnits, unitFileName, unitRng } from '../../src/core/sample/plan';
import {
  OutputDirError,
  appendResult,
  claimOutputDir,
  escapeHtml,
  isCompletePng,
  readResults,
  writeGallery,
  GenerationSettings,
  ResultRecord,
} from '../../src/core/sample/output';

describe('sample: shards and seeds', () => {
  it('parses K/N (0-based) and rejects bad strings with a hint', () => {
    assert.deepEqual(parseShard('2/5'), { index: 2, count: 5, source: '--shard 2/5' });
    assert.equal(parseShard(undefined).count, 1);
    for (const bad of ['5/5', '1/0', '-1/3', 'a/b', '1', '1/2/3', '', '1.5/4']) {
      assert.throws(() => parseShard(bad, {}), (e: unknown) => e instanceof ShardError && e.hint !== undefined, bad);
    }
  });

  it('auto reads Slurm (COUNT or MIN/MAX/STEP) and Kubernetes (JOB_COMPLETION_INDEX + DALLE_SHARD_COUNT)', () => {
    assert.deepEqual(
      [parseShard('auto', { SLURM_ARRAY_TASK_ID: '3', SLURM_ARRAY_TASK_COUNT: '8' })].map((s) => [s.index, s.count]),
      [[3, 8]],
    );
    const minMax = parseShard('auto', { SLURM_ARRAY_TASK_ID: '7', SLURM_ARRAY_TASK_MIN: '1', SLURM_ARRAY_TASK_MAX: '10' });
    assert.deepEqual([minMax.index, minMax.count], [6, 10]);
    const stepped = parseShard('auto', { SLURM_ARRAY_TASK_ID: '5', SLURM_ARRAY_TASK_MIN: '1', SLURM_ARRAY_TASK_MAX: '9', SLURM_ARRAY_TASK_STEP: '2' });
    assert.deepEqual([stepped.index, stepped.count], [2, 5]);
    const withMin = parseShard('auto', { SLURM_ARRAY_TASK_ID: '4', SLURM_ARRAY_TASK_MIN: '1', SLURM_ARRAY_TASK_COUNT: '4' });
    assert.deepEqual([withMin.index, withMin.count], [3, 4]);
    const k8s = parseShard('auto', { JOB_COMPLETION_INDEX: '0', DALLE_SHARD_COUNT: '3' });
    assert.deepEqual([k8s.index, k8s.count], [0, 3]);
    assert.throws(() => parseShard('auto', {}), /no array-job environment/);
    assert.throws(() => parseShard('auto', { JOB_COMPLETION_INDEX: '1' }), /DALLE_SHARD_COUNT is not/);
    assert.throws(() => parseShard('auto', { SLURM_ARRAY_TASK_ID: 'x', SLURM_ARRAY_TASK_COUNT: '2' }), /not a non-negative integer/);
    assert.throws(() => parseShard('auto', { SLURM_ARRAY_TASK_ID: '9', SLURM_ARRAY_TASK_COUNT: '4' }), /0\.\.3/);
  });

  it('the shards of a job cover every unit exactly once, evenly', () => {
    for (const [captions, samples, count] of [[7, 3, 4], [1, 1, 3], [5, 8, 1], [13, 2, 5]]) {
      const seen = new Map<string, number>();
      const sizes: number[] = [];
      for (let k = 0; k < count; k++) {
        const units = shardUnits(captions, samples, { index: k, count, source: 'test' });
        sizes.push(units.length);
        for (const u of units) seen.set(`${u.caption}/${u.sample}`, (seen.get(`${u.caption}/${u.sample}`) ?? 0) + 1);
      }
      assert.equal(seen.size, captions * samples);
      assert.ok([...seen.values()].every((n) => n === 1));
      assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1, `sizes ${sizes}`);
    }
  });

  it('unit streams depend only on (seed, caption, sample)', () => {
    const a = unitRng(7, { caption: 3, sample: 1 }).uniform();
    assert.equal(unitRng(7, { caption: 3, sample: 1 }).uniform(), a);
    const others = [unitRng(8, { caption: 3, sample: 1 }), unitRng(7, { caption: 1, sample: 3 }), unitRng(7, { caption: 3, sample: 2 })];
    for (const r of others) assert.notEqual(r.uniform(), a);
  });

  it('file names carry indices, never captions', () => {
    assert.equal(unitFileName({ caption: 12, sample: 3 }, 100, 8), 'c00012-s003.png');
    assert.equal(unitFileName({ caption: 5, sample: 1234 }, 200000, 2000), 'c000005-s1234.png');
  });
});

describe('sample: output folder', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dalle-out-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const record = (i: number, j: number, ll = -1.5): ResultRecord => ({ caption_index: i, caption: `cap ${i} <b>&"'`, sample: j, seed: 1, file: unitFileName({ caption: i, sample: j }, 10, 10), log_likelihood: ll, tokens: 4 });

  it('isCompletePng accepts a PNG of the right size and rejects truncated, wrong-size and non-PNG files', async () => {
    const file = path.join(dir, 'a.png');
    await sharp(Buffer.alloc(8 * 6 * 3, 128), { raw: { width: 8, height: 6, channels: 3 } }).png().toFile(file);
    assert.ok(isCompletePng(file, 8, 6));
    assert.ok(!isCompletePng(file, 8, 8));
    const bytes = fs.readFileSync(file);
    fs.writeFileSync(path.join(dir, 'cut.png'), bytes.subarray(0, bytes.length - 5));
    assert.ok(!isCompletePng(path.join(dir, 'cut.png'), 8, 6));
    fs.writeFileSync(path.join(dir, 'text.png'), 'hello');
    assert.ok(!isCompletePng(path.join(dir, 'text.png')));
    assert.ok(!isCompletePng(path.join(dir, 'missing.png')));
  });

  it('results.jsonl: appended lines, a torn last line skipped, the last record of a unit wins, sorted', () => {
    appendResult(dir, record(2, 0));
    appendResult(dir, record(0, 1));
    appendResult(dir, record(2, 0, -9));
    fs.appendFileSync(path.join(dir, 'results.jsonl'), '{"caption_index": 1, "capt');
    const rows = readResults(dir);
    assert.deepEqual(rows.map((r) => [r.caption_index, r.sample, r.log_likelihood]), [[0, 1, -1.5], [2, 0, -9]]);
  });

  it('claimOutputDir refuses a folder made with other settings, naming what differs', () => {
    const settings: GenerationSettings = { prior: 'p', dvae: 'd', seed: 1, samples: 2, temperature: 1, top_k: 0, top_p: 1, cond_scale: 1, captions_sha256: 'x', captions: 2, prompt: null, runtime: 'engine' };
    claimOutputDir(dir, settings);
    claimOutputDir(dir, settings);
    assert.throws(() => claimOutputDir(dir, { ...settings, seed: 2, top_k: 5 }), (e: unknown) => e instanceof OutputDirError && /seed: 1 there, 2 now; top_k: 0 there, 5 now/.test(e.message));
    assert.throws(() => claimOutputDir(dir, { ...settings, runtime: 'onnx' }), (e: unknown) => e instanceof OutputDirError && /runtime: "engine" there, "onnx" now/.test(e.message));
  });

  it('claimOutputDir counts a folder from before the runtime was recorded as the engine\'s', () => {
    const settings: GenerationSettings = { prior: 'p', dvae: 'd', seed: 1, samples: 2, temperature: 1, top_k: 0, top_p: 1, cond_scale: 1, captions_sha256: 'x', captions: 2, prompt: null, runtime: 'engine' };
    const old = path.join(dir, 'old');
    fs.mkdirSync(old, { recursive: true });
    const { runtime: _runtime, ...before } = settings;
    fs.writeFileSync(path.join(old, 'generation.json'), JSON.stringify(before));
    claimOutputDir(old, settings);
    assert.throws(() => claimOutputDir(old, { ...settings, runtime: 'onnx' }), /runtime: "engine" there, "onnx" now/);
  });

  it('the gallery has one row per caption, one column per sample, escaped text and relative links', () => {
    const file = writeGallery(dir, [record(0, 0), record(0, 2), record(3, 1)], { title: 'a <title>' });
    const html = fs.readFileSync(file, 'utf8');
    assert.equal((html.match(/<tr><th class="caption">/g) ?? []).length, 2);
    assert.equal((html.match(/<th>sample \d<\/th>/g) ?? []).length, 3);
    assert.ok(html.includes('cap 3 &lt;b&gt;&amp;&quot;&#39;'));
    assert.ok(!html.includes('<b>&'));
    assert.ok(html.includes('src="c00000-s002.png"'));
    assert.ok(html.includes('<title>a &lt;title&gt;</title>'));
    assert.equal((html.match(/class="missing"/g) ?? []).length, 3); // (0, 1), (3, 0), (3, 2)
    assert.equal(escapeHtml(`<&>"'`), '&lt;&amp;&gt;&quot;&#39;');
  });
});
