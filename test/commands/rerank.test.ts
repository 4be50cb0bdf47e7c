/**
 * `dalle rerank` and `dalle generate --rerank K --clip RUN` as a user runs them: a tiny dVAE trained by
 * `dalle train-dvae`, a tiny random prior run, a tiny CLIP trained by `dalle train-clip` (a few updates: the checks are
 * about the bookkeeping, not about quality): scores equal a direct scorer call, ranks are a permutation per caption,
 * the kept ones are the top scores, reruns neither duplicate records nor rescore, and bad inputs fail clearly.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import sharp from 'sharp';
import { clipScoreOf, openClipScorer } from '../../src/core/models/clip/scorer';
import { loadImagePlanes, rankWithinCaptions } from '../../src/core/sample/rerank';
import { makeImages, temporaryDir, writeTinyConfig } from './helpers';
import { writeRandomPriorRun } from '../harness/random-prior-run';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const CAPTIONS = ['a big red square', 'a small blue square', 'a big green square'];

/** runCommand joins its arguments and splits them again on spaces, keeping "quoted strings": quote what has spaces. */
function dalle(args: string[]) {
  return runCommand(args.map((a) => (/\s/.test(a) ? `"${a}"` : a)), { root: ROOT });
}

function lastJson(stdout: string): Record<string, any> {
  return JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, any>;
}

function resultLines(dir: string): Record<string, any>[] {
  return fs.readFileSync(path.join(dir, 'results.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
}

/** A prior run directory with random weights for the tiny dVAE's 8x8 grids of 16 codes. */
async function makePriorRun(dir: string): Promise<string> {
  return writeRandomPriorRun(dir, { captions: [...CAPTIONS, 'red green blue big small square'], vocabSize: 270, layers: 1 });
}

/** 6 captioned 20x20 images (a coloured square on white) to train the CLIP on. */
async function makeCaptioned(dir: string): Promise<string> {
  fs.mkdirSync(dir, { recursive: true });
  const colours: Record<string, number[]> = { red: [230, 20, 20], green: [20, 200, 40], blue: [30, 40, 220] };
  let i = 0;
  for (const [name, rgb] of Object.entries(colours)) {
    for (const size of [6, 14]) {
      const pixels = Buffer.alloc(20 * 20 * 3, 255);
      for (let y = 3; y < 3 + size; y++) for (let x = 3; x < 3 + size; x++) for (let c = 0; c < 3; c++) pixels[(y * 20 + x) * 3 + c] = rgb[c];
      const id = String(i++).padStart(3, '0');
      await sharp(pixels, { raw: { width: 20, height: 20, channels: 3 } }).png().toFile(path.join(dir, `${id}.png`));
      fs.writeFileSync(path.join(dir, `${id}.txt`), `a ${size > 10 ? 'big' : 'small'} ${name} square\n`);
    }
  }
  return dir;
}

/** Checks the ranking invariants of a folder's records and returns them grouped by caption. */
function checkRanked(records: Record<string, any>[], keep: number): Map<number, Record<string, any>[]> {
  const groups = new Map<number, Record<string, any>[]>();
  for (const r of records) {
    if (!groups.has(r.caption_index)) groups.set(r.caption_index, []);
    groups.get(r.caption_index)!.push(r);
  }
  for (const [caption, list] of groups) {
    assert.deepEqual(list.map((r) => r.rank).sort((a, b) => a - b), list.map((_, i) => i + 1), `ranks of caption ${caption} are a permutation`);
    for (const r of list) {
      assert.ok(Number.isFinite(r.clip_score) && r.clip_score >= 0 && r.clip_score <= 100, `score ${r.clip_score}`);
      assert.equal(r.kept, r.rank <= keep);
      for (const o of list) if (r.rank < o.rank) assert.ok(r.clip_score >= o.clip_score, `rank ${r.rank} scores ${r.clip_score} < rank ${o.rank} ${o.clip_score}`);
    }
  }
  return groups;
}

describe('commands: rerank and generate --rerank', function () {
  this.timeout(300000);
  let work: string;
  let dvae: string;
  let prior: string;
  let clip: string;
  let captionsFile: string;
  let base: string[];
  let out: string;

  before(async () => {
    work = temporaryDir('dalle-rerank-');
    const images = await makeImages(path.join(work, 'images'), 8);
    dvae = path.join(work, 'runs', 'dvae');
    const trained = await dalle(['train-dvae', '--config', writeTinyConfig(work), '--data', images, '--out', dvae]);
    assert.equal(trained.error, undefined, trained.error?.message);
    prior = await makePriorRun(path.join(work, 'runs', 'prior'));
    clip = path.join(work, 'runs', 'clip');
    const data = await makeCaptioned(path.join(work, 'pairs'));
    const c = await dalle(['train-clip', '--data', data, '--out', clip, '--steps', '2', '--batch-size', '6', '--vocab', '270', '--resolution', '16', '--threads', '1']);
    assert.equal(c.error, undefined, c.error?.message);
    captionsFile = path.join(work, 'captions.txt');
    fs.writeFileSync(captionsFile, `${CAPTIONS.join('\n')}\n`);
    base = ['generate', '--captions', captionsFile, '--prior', prior, '--dvae', dvae, '--samples', '4', '--seed', '5', '--threads', '1'];
    out = path.join(work, 'gen');
    const { error, stdout } = await dalle([...base, '--out', out, '--rerank', '2', '--clip', clip, '--json']);
    assert.equal(error, undefined, error?.message);
    const lines = stdout.trim().split('\n').map((l) => JSON.parse(l));
    assert.ok(lines.some((l) => l.type === 'progress' && l.task === 'rerank'), 'rerank progress events under --json');
    const result = lines[lines.length - 1];
    assert.equal(result.generated, 12);
    assert.equal(result.rerank.candidates, 12);
    assert.equal(result.rerank.scored, 12);
    assert.equal(result.rerank.kept, 6);
  });

  afterEach(() => {
    process.exitCode = undefined;
  });

  it('rankWithinCaptions ranks by score per caption, ties to the lower sample', () => {
    const items = [
      { caption_index: 0, sample: 0, clip_score: 1 },
      { caption_index: 0, sample: 1, clip_score: 3 },
      { caption_index: 1, sample: 0, clip_score: 2 },
      { caption_index: 0, sample: 2, clip_score: 3 },
      { caption_index: 1, sample: 1, clip_score: 5 },
    ];
    assert.deepEqual(rankWithinCaptions(items), [3, 1, 2, 2, 1]);
  });

  it('generate --rerank scores every candidate, ranks them per caption, keeps the best K in best/', async () => {
    const records = resultLines(out);
    assert.equal(records.length, 12);
    const groups = checkRanked(records, 2);
    assert.equal(groups.size, 3);
    const kept = records.filter((r) => r.kept).map((r) => r.file).sort();
    assert.deepEqual(fs.readdirSync(path.join(out, 'best')).sort(), kept);
    for (const f of kept) assert.deepEqual(fs.readFileSync(path.join(out, 'best', f)), fs.readFileSync(path.join(out, f)));
    for (const r of records) assert.ok(Number.isFinite(r.log_likelihood), 'generate fields are kept');
    const summary = JSON.parse(fs.readFileSync(path.join(out, 'rerank.json'), 'utf8'));
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    assert.ok(Math.abs(summary.mean_clip_score - mean(records.map((r) => r.clip_score))) < 1e-9);
    assert.ok(Math.abs(summary.mean_kept_clip_score - mean(records.filter((r) => r.kept).map((r) => r.clip_score))) < 1e-9);
    assert.ok(summary.mean_kept_clip_score >= summary.mean_clip_score);
    const html = fs.readFileSync(path.join(out, 'index.html'), 'utf8');
    assert.match(html, /<th>rank 1<\/th><th>rank 2<\/th><th>rank 3<\/th><th>rank 4<\/th>/);
    const first = records.find((r) => r.caption_index === 0 && r.rank === 1)!;
    const second = records.find((r) => r.caption_index === 0 && r.rank === 2)!;
    const row = html.split('\n').find((l) => l.includes(CAPTIONS[0]) && l.startsWith('<tr>'))!;
    assert.ok(row.indexOf(`src="${first.file}"`) < row.indexOf(`src="${second.file}"`), 'row sorted by rank');
    assert.ok(row.includes(`>${first.clip_score.toFixed(2)}<`), 'score shown');
  });

  it('the scores equal a direct call of the scorer', async () => {
    const scorer = await openClipScorer(clip);
    try {
      const [text] = await scorer.embedTexts([CAPTIONS[1]]);
      for (const r of resultLines(out).filter((x) => x.caption_index === 1)) {
        const img = await loadImagePlanes(path.join(out, r.file));
        const [embedding] = await scorer.embedImages({ pixels: img.pixels, shape: [1, 3, img.height, img.width] });
        assert.ok(Math.abs(clipScoreOf(text, embedding) - r.clip_score) < 1e-4, `${r.file}: ${clipScoreOf(text, embedding)} vs ${r.clip_score}`);
      }
    } finally {
      await scorer.dispose();
    }
  });

  it('a rerun generates nothing, rescores nothing and duplicates no record', async () => {
    const before = resultLines(out);
    const { error, stdout } = await dalle([...base, '--out', out, '--rerank', '2', '--clip', clip, '--json']);
    assert.equal(error, undefined, error?.message);
    const r = lastJson(stdout);
    assert.equal(r.generated, 0);
    assert.equal(r.rerank.scored, 0);
    assert.equal(r.rerank.reused, 12);
    assert.deepEqual(resultLines(out), before);
  });

  it('dalle rerank DIR changes K, rescores on request, and needs every image', async () => {
    const one = await dalle(['rerank', '--clip', clip, out, '--keep', '1']);
    assert.equal(one.error, undefined, one.error?.message);
    assert.match(one.stdout, /reranked 12 images of 3 captions \(0 scored, 12 scored before\): mean CLIP score \d+\.\d\d of all, \d+\.\d\d of the best 1 per caption/);
    checkRanked(resultLines(out), 1);
    assert.equal(fs.readdirSync(path.join(out, 'best')).length, 3);
    const again = await dalle(['rerank', '--clip', clip, out, '--keep', '1', '--rescore', '--json']);
    assert.equal(lastJson(again.stdout).scored, 12);

    // A lost image: reranking refuses; the same generate command regenerates it and scores only it.
    const lost = resultLines(out).find((x) => x.caption_index === 2 && x.sample === 3)!;
    const bytes = fs.readFileSync(path.join(out, lost.file));
    fs.rmSync(path.join(out, lost.file));
    const refused = await dalle(['rerank', '--clip', clip, out]);
    assert.match(refused.error?.message ?? '', /missing or incomplete: c00002-s003\.png/);
    assert.equal(refused.error?.oclif?.exit, 4);
    const redo = await dalle([...base, '--out', out, '--rerank', '1', '--clip', clip, '--json']);
    assert.equal(redo.error, undefined, redo.error?.message);
    const r = lastJson(redo.stdout);
    assert.equal(r.generated, 1);
    assert.equal(r.rerank.scored, 1);
    assert.deepEqual(fs.readFileSync(path.join(out, lost.file)), bytes);
    assert.equal(resultLines(out).length, 12);
  });

  it('a sharded job reranks when its last shard completes the folder', async () => {
    const sharded = path.join(work, 'sharded');
    const s0 = await dalle([...base, '--out', sharded, '--shard', '0/2', '--rerank', '1', '--clip', clip]);
    assert.equal(s0.error, undefined, s0.error?.message);
    assert.match(s0.stdout, /not reranked yet: 6 of 12 images/);
    const early = await dalle(['rerank', '--clip', clip, sharded]);
    assert.match(early.error?.message ?? '', /holds 6 of the 12 images/);
    const partial = await dalle(['rerank', '--clip', clip, sharded, '--partial', '--json']);
    assert.equal(lastJson(partial.stdout).candidates, 6);
    const s1 = await dalle([...base, '--out', sharded, '--shard', '1/2', '--rerank', '1', '--clip', clip, '--json']);
    assert.equal(s1.error, undefined, s1.error?.message);
    const r = lastJson(s1.stdout);
    assert.equal(r.rerank.candidates, 12);
    assert.equal(r.rerank.scored, 6, 'the first shard\'s scores (same CLIP) are reused');
    // The same images and scores as the unsharded job.
    const plain = new Map(resultLines(out).map((x) => [x.file, x.clip_score]));
    for (const x of resultLines(sharded)) assert.ok(Math.abs(x.clip_score - plain.get(x.file)!) < 1e-4, x.file);
  });

  it('reranks a plain folder of images against a captions file (resized to the CLIP side)', async () => {
    const folder = path.join(work, 'plain');
    fs.mkdirSync(folder);
    const pairs = path.join(work, 'pairs');
    const names = fs.readdirSync(pairs).filter((f) => f.endsWith('.png')).sort(); // 20x20 images; the CLIP sees 16x16
    names.forEach((f, i) => fs.copyFileSync(path.join(pairs, f), path.join(folder, `c${String(i % 3).padStart(5, '0')}-s${String(Math.floor(i / 3)).padStart(3, '0')}.png`)));
    const { error, stdout } = await dalle(['rerank', '--clip', clip, '--captions', captionsFile, '--images', folder, '--keep', '1', '--json']);
    assert.equal(error, undefined, error?.message);
    const r = lastJson(stdout);
    assert.deepEqual([r.captions, r.candidates, r.kept], [3, 6, 3]);
    const records = resultLines(folder);
    checkRanked(records, 1);
    assert.deepEqual(records.map((x) => x.caption), [0, 0, 1, 1, 2, 2].map((i) => CAPTIONS[i]));
    assert.equal(fs.readdirSync(path.join(folder, 'best')).length, 3);
    // Again: same scores, nothing added.
    const again = await dalle(['rerank', '--clip', clip, '--captions', captionsFile, '--images', folder, '--keep', '1']);
    assert.equal(again.error, undefined, again.error?.message);
    assert.deepEqual(resultLines(folder).map((x) => x.clip_score), records.map((x) => x.clip_score));

    // Caption count mismatches and misnamed files.
    const short = path.join(work, 'short.txt');
    fs.writeFileSync(short, `${CAPTIONS[0]}\n${CAPTIONS[1]}\n`);
    const few = await dalle(['rerank', '--clip', clip, '--captions', short, '--images', folder]);
    assert.match(few.error?.message ?? '', /c00002-s000\.png is an image of caption 2 \(0-based\), but the captions file has 2 caption\(s\)/);
    assert.equal(few.error?.oclif?.exit, 4);
    const long = path.join(work, 'long.txt');
    fs.writeFileSync(long, `${CAPTIONS.join('\n')}\na fourth caption\n`);
    const many = await dalle(['rerank', '--clip', clip, '--captions', long, '--images', folder]);
    assert.match(many.error?.message ?? '', /1 of 4 caption\(s\) have no image .*line\(s\) 4/);
    fs.copyFileSync(path.join(pairs, names[0]), path.join(folder, 'extra.png'));
    const misnamed = await dalle(['rerank', '--clip', clip, '--captions', captionsFile, '--images', folder]);
    assert.match(misnamed.error?.message ?? '', /not named c\{caption\}-s\{sample\}\.png: extra\.png/);
    const genAsPlain = await dalle(['rerank', '--clip', clip, '--captions', captionsFile, '--images', out]);
    assert.match(genAsPlain.error?.message ?? '', /is a `dalle generate` folder/);
  });

  it('writes only into folders it may: a results.jsonl of another program, or a gallery and best/ beside the images, are refused untouched', async () => {
    // A folder with generate's layout but no generation.json or rerank.json: not ours to rewrite.
    const foreign = path.join(work, 'foreign-gen');
    fs.cpSync(out, foreign, { recursive: true });
    for (const mark of ['generation.json', 'rerank.json']) fs.rmSync(path.join(foreign, mark));
    const results = fs.readFileSync(path.join(foreign, 'results.jsonl'), 'utf8');
    const r = await dalle(['rerank', '--clip', clip, foreign, '--keep', '1']);
    assert.equal(r.error?.name, 'OutputPathError');
    assert.equal(r.error?.oclif?.exit, 4);
    assert.match(r.error?.message ?? '', /DIR .*foreign-gen is not empty and was not written by `dalle generate` \(it has no generation\.json or rerank\.json\): it holds /);
    assert.equal(fs.readFileSync(path.join(foreign, 'results.jsonl'), 'utf8'), results, 'results.jsonl untouched');

    // A plain folder of images that also holds the user's own gallery and best/ picks.
    const mine = path.join(work, 'mine');
    fs.mkdirSync(path.join(mine, 'best'), { recursive: true });
    const pairs = path.join(work, 'pairs');
    const names = fs.readdirSync(pairs).filter((f) => f.endsWith('.png')).sort();
    names.slice(0, 3).forEach((f, i) => fs.copyFileSync(path.join(pairs, f), path.join(mine, `c${String(i).padStart(5, '0')}-s000.png`)));
    fs.writeFileSync(path.join(mine, 'index.html'), '<p>my own page</p>\n');
    fs.copyFileSync(path.join(pairs, names[5]), path.join(mine, 'best', 'favourite.png'));
    const p = await dalle(['rerank', '--clip', clip, '--captions', captionsFile, '--images', mine]);
    assert.equal(p.error?.name, 'OutputPathError');
    assert.equal(p.error?.oclif?.exit, 4);
    assert.match(p.error?.message ?? '', /dalle rerank writes results\.jsonl, rerank\.json, index\.html, best into --images .*mine, which already holds index\.html, best not written by it/);
    assert.equal(fs.readFileSync(path.join(mine, 'index.html'), 'utf8'), '<p>my own page</p>\n');
    assert.deepEqual(fs.readdirSync(path.join(mine, 'best')), ['favourite.png']);
    assert.ok(!fs.existsSync(path.join(mine, 'results.jsonl')));
  });

  it('refuses unusable flags and inputs clearly', async () => {
    const both = await dalle(['rerank', '--clip', clip, out, '--captions', captionsFile, '--images', out]);
    assert.match(both.error?.message ?? '', /either a generate folder DIR, or --captions FILE with --images DIR/);
    const neither = await dalle(['rerank', '--clip', clip]);
    assert.match(neither.error?.message ?? '', /nothing to rerank/);
    const empty = temporaryDir('dalle-rerank-empty-');
    const none = await dalle(['rerank', '--clip', clip, empty]);
    assert.match(none.error?.message ?? '', /has no results\.jsonl records/);
    const noClip = await dalle(['rerank', '--clip', path.join(work, 'nope'), out]);
    assert.match(noClip.error?.message ?? '', /does not exist/);
    const notClip = await dalle(['rerank', '--clip', dvae, out]);
    assert.match(notClip.error?.message ?? '', /not a CLIP one/);
    const g1 = await dalle([...base, '--out', path.join(work, 'g1'), '--rerank', '2']);
    assert.match(g1.error?.message ?? '', /--rerank needs --clip RUN/);
    const g2 = await dalle([...base, '--out', path.join(work, 'g2'), '--rerank', '5', '--clip', clip]);
    assert.match(g2.error?.message ?? '', /--rerank 5 keeps more than the --samples 4/);
    const g3 = await dalle([...base, '--out', path.join(work, 'g3'), '--rerank', '1', '--clip', path.join(work, 'nope')]);
    assert.match(g3.error?.message ?? '', /does not exist/);
    assert.ok(!fs.existsSync(path.join(work, 'g3', 'results.jsonl')), 'a bad --clip fails before sampling');
  });
});
