/**
 * `dalle generate` as a user runs it: a tiny dVAE trained by `dalle train-dvae`, a tiny random prior run directory
 * (config.yaml, tokenizer.json, checkpoints/step-0, latest: what `dalle train-prior` writes), captions from arguments
 * and a file; PNGs, results.jsonl, index.html; batch size and shards do not change the images; reruns skip finished
 * images and redo damaged ones; image prompts; the errors a user meets.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import sharp from 'sharp';
import { readResults } from '../../src/core/sample/output';
import { makeImages, temporaryDir, writeTinyConfig } from './helpers';
import { writeRandomPriorRun } from '../harness/random-prior-run';

const ROOT = path.resolve(__dirname, '..', '..', '..');

function dalle(args: string[]) {
  return runCommand(args, { root: ROOT });
}

/** runCommand joins its arguments and splits them again on spaces, keeping "quoted strings": quote captions. */
function generate(args: string[]) {
  return dalle(['generate', ...args.map((a) => (/\s/.test(a) ? `"${a}"` : a))]);
}

const CAPTIONS = ['red apple, noto style', 'a GREEN <square> & "friends"', 'blue sky, twemoji style'];

/** A prior run directory with random weights for the tiny dVAE's 8x8 grids of 16 codes. */
async function makePriorRun(dir: string): Promise<string> {
  return writeRandomPriorRun(dir, { captions: [...CAPTIONS, 'red green blue apple square sky', 'noto twemoji style'], vocabSize: 280, layers: 2, sets: ['runtime.seed=3'] });
}

function lastJson(stdout: string): Record<string, unknown> {
  return JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

function pngs(dir: string): string[] {
  return fs.readdirSync(dir).filter((f) => f.endsWith('.png')).sort();
}

describe('commands: generate', function () {
  this.timeout(120000);
  let work: string;
  let dvae: string;
  let prior: string;
  let captionsFile: string;
  let base: string[];
  let first: string;

  before(async () => {
    work = temporaryDir('dalle-gen-');
    const images = await makeImages(path.join(work, 'images'), 8);
    dvae = path.join(work, 'runs', 'dvae');
    const trained = await dalle(['train-dvae', '--config', writeTinyConfig(work), '--data', images, '--out', dvae]);
    assert.equal(trained.error, undefined, trained.error?.message);
    prior = await makePriorRun(path.join(work, 'runs', 'prior'));
    captionsFile = path.join(work, 'captions.txt');
    fs.writeFileSync(captionsFile, `${CAPTIONS[1]}\r\n\n   \n${CAPTIONS[2]}\n`);
    base = [CAPTIONS[0], '--captions', captionsFile, '--prior', prior, '--dvae', dvae, '--samples', '2', '--seed', '5', '--top-k', '12', '--top-p', '0.95', '--cond-scale', '1.5'];
    first = path.join(work, 'first');
    const { error, stdout } = await generate([...base, '--out', first, '--batch', '4', '--json']);
    assert.equal(error, undefined, error?.message);
    const lines = stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.ok(lines.some((l) => l.type === 'progress' && l.task === 'generate'), 'progress events under --json');
    const result = lines[lines.length - 1];
    assert.equal(result.generated, 6);
    assert.equal(result.skipped, 0);
    assert.ok((result.tokensPerSecond as number) > 0);
  });

  afterEach(() => {
    process.exitCode = undefined;
  });

  it('writes one 16x16 PNG per (caption, sample), named by index, results.jsonl and an escaped gallery', async () => {
    assert.deepEqual(pngs(first), ['c00000-s000.png', 'c00000-s001.png', 'c00001-s000.png', 'c00001-s001.png', 'c00002-s000.png', 'c00002-s001.png']);
    const meta = await sharp(path.join(first, 'c00002-s001.png')).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['png', 16, 16]);
    const records = readResults(first);
    assert.deepEqual(records.map((r) => [r.caption_index, r.caption, r.sample, r.seed, r.tokens]), [
      [0, CAPTIONS[0], 0, 5, 64], [0, CAPTIONS[0], 1, 5, 64], [1, CAPTIONS[1], 0, 5, 64], [1, CAPTIONS[1], 1, 5, 64], [2, CAPTIONS[2], 0, 5, 64], [2, CAPTIONS[2], 1, 5, 64],
    ]);
    for (const r of records) assert.ok(Number.isFinite(r.log_likelihood) && r.log_likelihood < 0 && r.log_likelihood > -64 * 10, `ll ${r.log_likelihood}`);
    const html = fs.readFileSync(path.join(first, 'index.html'), 'utf8');
    assert.ok(html.includes('a GREEN &lt;square&gt; &amp; &quot;friends&quot;'));
    assert.ok(html.includes('src="c00001-s001.png"'));
    assert.equal((html.match(/<tr><th class="caption">/g) ?? []).length, 3);
    // Different samples of a caption are different images.
    assert.notDeepEqual(fs.readFileSync(path.join(first, 'c00000-s000.png')), fs.readFileSync(path.join(first, 'c00000-s001.png')));
  });

  it('batch size and shards do not change the images; shards merge into one results.jsonl and gallery', async () => {
    const single = path.join(work, 'batch1');
    const one = await generate([...base, '--out', single, '--batch', '1']);
    assert.equal(one.error, undefined, one.error?.message);
    const sharded = path.join(work, 'sharded');
    for (const k of [1, 0]) {
      const part = await generate([...base, '--out', sharded, '--batch', '3', '--shard', `${k}/2`]);
      assert.equal(part.error, undefined, part.error?.message);
      assert.match(part.stdout, /3 images generated/);
    }
    for (const dir of [single, sharded]) {
      assert.deepEqual(pngs(dir), pngs(first));
      for (const f of pngs(first)) assert.ok(fs.readFileSync(path.join(dir, f)).equals(fs.readFileSync(path.join(first, f))), `${dir}/${f}`);
      const ll = readResults(dir).map((r) => r.log_likelihood);
      readResults(first).forEach((r, i) => assert.ok(Math.abs(r.log_likelihood - ll[i]) < 1e-6));
      assert.equal((fs.readFileSync(path.join(dir, 'index.html'), 'utf8').match(/<img /g) ?? []).length, 6);
    }
  });

  it('--shard auto reads the Slurm array environment', async () => {
    const out = path.join(work, 'slurm');
    process.env.SLURM_ARRAY_TASK_ID = '2';
    process.env.SLURM_ARRAY_TASK_COUNT = '3';
    try {
      const { error, stdout } = await generate([...base, '--out', out, '--shard', 'auto', '--json']);
      assert.equal(error, undefined, error?.message);
      const result = lastJson(stdout) as { shard: { index: number; count: number }; generated: number };
      assert.deepEqual([result.shard.index, result.shard.count, result.generated], [2, 3, 2]);
      assert.deepEqual(pngs(out), ['c00001-s000.png', 'c00002-s001.png']); // units 2 and 5 of 0..5
      for (const f of pngs(out)) assert.ok(fs.readFileSync(path.join(out, f)).equals(fs.readFileSync(path.join(first, f))));
    } finally {
      delete process.env.SLURM_ARRAY_TASK_ID;
      delete process.env.SLURM_ARRAY_TASK_COUNT;
    }
  });

  it('a rerun skips finished images, redoes missing or damaged ones identically, and refuses other settings', async () => {
    const out = path.join(work, 'rerun');
    fs.cpSync(first, out, { recursive: true });
    const again = await generate([...base, '--out', out, '--json']);
    assert.equal(again.error, undefined, again.error?.message);
    assert.deepEqual([lastJson(again.stdout).generated, lastJson(again.stdout).skipped], [0, 6]);
    fs.rmSync(path.join(out, 'c00001-s000.png'));
    const bytes = fs.readFileSync(path.join(out, 'c00002-s001.png'));
    fs.writeFileSync(path.join(out, 'c00002-s001.png'), bytes.subarray(0, bytes.length - 20)); // a torn file
    const redo = await generate([...base, '--out', out, '--json']);
    assert.equal(redo.error, undefined, redo.error?.message);
    assert.deepEqual([lastJson(redo.stdout).generated, lastJson(redo.stdout).skipped], [2, 4]);
    for (const f of pngs(first)) assert.ok(fs.readFileSync(path.join(out, f)).equals(fs.readFileSync(path.join(first, f))), f);
    assert.equal(readResults(out).length, 6);

    const other = await generate([...base, '--out', out, '--temperature', '0.5']);
    assert.equal(other.error?.name, 'OutputDirError');
    assert.equal(other.error?.oclif?.exit, 4);
    assert.match(other.error?.message ?? '', /other settings \(temperature: 1 there, 0\.5 now\)/);
  });

  /** Runs `args`, sending `signal` in-process as soon as the first PNG exists (the command awaits its file writes then). */
  async function generateSignalled(out: string, signal: NodeJS.Signals, args: string[]): Promise<Awaited<ReturnType<typeof generate>>> {
    const poll = setInterval(() => {
      if (fs.existsSync(out) && pngs(out).length > 0) {
        clearInterval(poll);
        process.emit(signal);
      }
    }, 1);
    try {
      return await generate(args);
    } finally {
      clearInterval(poll);
    }
  }

  it('Ctrl-C stops after the batch being sampled (exit 130); the same command then finishes identically', async () => {
    const out = path.join(work, 'interrupted');
    const stopped = await generateSignalled(out, 'SIGINT', [...base, '--out', out, '--batch', '2', '--json']);
    assert.equal(stopped.error, undefined, stopped.error?.message);
    assert.equal(process.exitCode, 130);
    const result = lastJson(stopped.stdout) as { stopped: boolean; generated: number };
    assert.deepEqual([result.stopped, result.generated], [true, 2]);
    assert.equal(readResults(out).length, 2);
    assert.ok(fs.existsSync(path.join(out, 'index.html')));
    process.exitCode = undefined;
    const rest = await generate([...base, '--out', out, '--batch', '2', '--json']);
    assert.equal(rest.error, undefined, rest.error?.message);
    assert.deepEqual([lastJson(rest.stdout).generated, lastJson(rest.stdout).skipped, lastJson(rest.stdout).stopped], [4, 2, false]);
    for (const f of pngs(first)) assert.ok(fs.readFileSync(path.join(out, f)).equals(fs.readFileSync(path.join(first, f))), f);
  });

  it('SIGTERM (what Slurm and Kubernetes send) stops after the batch being sampled too, with exit 143', async () => {
    const out = path.join(work, 'terminated');
    const stopped = await generateSignalled(out, 'SIGTERM', [...base, '--out', out, '--batch', '2', '--json']);
    assert.equal(stopped.error, undefined, stopped.error?.message);
    assert.equal(process.exitCode, 143);
    process.exitCode = undefined;
    const result = lastJson(stopped.stdout) as { stopped: boolean; generated: number };
    assert.deepEqual([result.stopped, result.generated], [true, 2]);
    assert.equal(readResults(out).length, 2);
  });

  it('an image prompt keeps the top rows and completes the rest', async () => {
    const out = path.join(work, 'prompted');
    const image = path.join(work, 'images', '002.png');
    const { error, stdout } = await generate([CAPTIONS[0], '--prior', prior, '--dvae', dvae, '--out', out, '--samples', '3', '--image', image, '--keep-rows', '3', '--json']);
    assert.equal(error, undefined, error?.message);
    assert.equal(lastJson(stdout).generated, 3);
    assert.deepEqual(readResults(out).map((r) => r.tokens), [40, 40, 40]); // 64 - 3 rows of 8
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(out, 'generation.json'), 'utf8')).prompt.keep_rows, 3);
  });

  it('--keep-rows out of the grid (8 of 8 rows, or 0) is a usage error naming the range, before anything is encoded', async () => {
    const image = path.join(work, 'images', '002.png');
    for (const rows of ['8', '99', '0']) {
      const out = path.join(work, `rows-${rows}`);
      const bad = await generate([CAPTIONS[0], '--prior', prior, '--dvae', dvae, '--out', out, '--image', image, '--keep-rows', rows]);
      assert.equal(bad.error?.name, 'SamplingError', rows);
      assert.equal(bad.error?.oclif?.exit, 2);
      assert.equal(bad.error?.message, `--keep-rows must be in 1..7 (the dVAE's token grid has 8 rows), got ${rows}`);
      assert.doesNotMatch(bad.stderr, /encode/, 'nothing was encoded');
      assert.ok(!fs.existsSync(path.join(out, 'results.jsonl')));
    }
  });

  it('--image takes one image file: a folder or a manifest is refused (exit 2), a missing or unreadable image is exit 4', async () => {
    const out = path.join(work, 'image-errors');
    const run = (image: string) => generate([CAPTIONS[0], '--prior', prior, '--dvae', dvae, '--out', out, '--image', image]);
    const folder = await run(path.join(work, 'images'));
    assert.equal(folder.error?.oclif?.exit, 2);
    assert.match(folder.error?.message ?? '', /^--image takes one image file \(\.png, .*\), but .*images is a folder; to prompt with several images, run generate once per image$/);
    assert.doesNotMatch(folder.stderr, /encode/);
    const manifest = path.join(work, 'prompts.jsonl');
    fs.writeFileSync(manifest, '{"image": "images/002.png"}\n');
    const listed = await run(manifest);
    assert.equal(listed.error?.oclif?.exit, 2);
    assert.match(listed.error?.message ?? '', /prompts\.jsonl is not an image file \(by its extension\)/);
    const missing = await run(path.join(work, 'absent.png'));
    assert.equal(missing.error?.oclif?.exit, 4);
    assert.match(missing.error?.message ?? '', /^--image .*absent\.png: no such file$/);
    const broken = path.join(work, 'broken.png');
    fs.writeFileSync(broken, 'not a picture');
    const unreadable = await run(broken);
    assert.equal(unreadable.error?.oclif?.exit, 4);
    assert.match(unreadable.error?.message ?? '', /^no image could be encoded from .*broken\.png .*not-an-image/);
    assert.ok(!fs.existsSync(path.join(out, 'results.jsonl')));
  });

  it('cuts captions longer than text_len with a warning', async () => {
    const out = path.join(work, 'long');
    const long = 'red apple red apple red apple red apple blue sky blue sky';
    const { error, stdout } = await generate([long, '--prior', prior, '--dvae', dvae, '--out', out, '--samples', '1', '--json']);
    assert.equal(error, undefined, error?.message);
    const lines = stdout.trim().split('\n').map((l) => JSON.parse(l) as { type?: string; level?: string; message?: string; truncated?: number[] });
    assert.ok(lines.some((l) => l.type === 'log' && l.level === 'warn' && /caption 0 has \d+ tokens; the prior reads 6, so it was cut/.test(l.message ?? '')));
    assert.deepEqual(lines[lines.length - 1].truncated, [0]);
  });

  it('clear errors: no captions, an empty caption file, bad shards and sampling flags, missing models', async () => {
    const out = path.join(work, 'errors');
    const models = ['--prior', prior, '--dvae', dvae, '--out', out];
    const none = await generate(models);
    assert.equal(none.error?.name, 'CaptionError');
    assert.equal(none.error?.oclif?.exit, 4);
    const empty = path.join(work, 'empty.txt');
    fs.writeFileSync(empty, '\n  \n');
    const blank = await generate(['--captions', empty, ...models]);
    assert.equal(blank.error?.name, 'CaptionError');
    assert.match(blank.error?.message ?? '', /empty\.txt has no captions/);
    for (const [flags, name, pattern] of [
      [['--shard', '2/2'], 'ShardError', /shard index must be in 0\.\.1/],
      [['--shard', 'half'], 'ShardError', /is not K\/N or auto/],
      [['--temperature', '0'], 'SamplingError', /--temperature must be a number > 0/],
      [['--top-p', '1.5'], 'SamplingError', /--top-p must be in \(0, 1\]/],
      [['--cond-scale', 'x'], 'SamplingError', /--cond-scale must be a number/],
    ] as const) {
      const r = await generate([CAPTIONS[0], ...models, ...flags]);
      assert.equal(r.error?.name, name, flags.join(' '));
      assert.equal(r.error?.oclif?.exit, 2);
      assert.match(r.error?.message ?? '', pattern);
    }
    const noPrior = await generate([CAPTIONS[0], '--dvae', dvae, '--out', out]);
    if (!fs.existsSync(path.join(ROOT, 'models', 'default', 'prior'))) {
      assert.equal(noPrior.error?.name, 'CheckpointError');
      assert.match(noPrior.error?.message ?? '', /no --prior given, and there is no bundled default prior at .*models\/default\/prior/);
    }
    const swapped = await generate([CAPTIONS[0], '--prior', dvae, '--dvae', dvae, '--out', out]);
    assert.equal(swapped.error?.name, 'CheckpointError');
    assert.match(swapped.error?.message ?? '', /is a dvae checkpoint, not a prior/);
    assert.ok(!fs.existsSync(out) || pngs(out).length === 0);
  });

  it('writes only into a new, empty or own folder: another program\'s gallery, PNGs and results.jsonl are refused untouched', async () => {
    const foreign = path.join(work, 'foreign');
    fs.mkdirSync(foreign);
    const theirs: Record<string, string> = {
      'index.html': '<p>my gallery</p>\n',
      'c00000-s000.png': 'my picture',
      'results.jsonl': '{"caption_index":0,"caption":"mine","sample":0,"file":"c00000-s000.png"}\n',
    };
    for (const [name, text] of Object.entries(theirs)) fs.writeFileSync(path.join(foreign, name), text);
    const r = await generate([...base, '--out', foreign]);
    assert.equal(r.error?.name, 'OutputPathError');
    assert.equal(r.error?.oclif?.exit, 4);
    assert.match(r.error?.message ?? '', /--out .*foreign is not empty and was not written by dalle generate \(it has no generation\.json\): it holds c00000-s000\.png, index\.html, results\.jsonl/);
    assert.match(((r.error as { suggestions?: string[] }).suggestions ?? []).join(' '), /choose another --out/);
    assert.deepEqual(fs.readdirSync(foreign).sort(), Object.keys(theirs).sort(), 'nothing added');
    for (const [name, text] of Object.entries(theirs)) assert.equal(fs.readFileSync(path.join(foreign, name), 'utf8'), text, name);
    // Refused before any model is loaded: a missing --prior is not even looked at.
    const early = await generate([CAPTIONS[0], '--prior', path.join(work, 'no-such-prior'), '--dvae', dvae, '--out', foreign]);
    assert.equal(early.error?.name, 'OutputPathError');

    // An empty folder, or one with hidden files only, is fine; and a rerun into generate's own folder still resumes.
    const empty = path.join(work, 'empty-but-hidden');
    fs.mkdirSync(empty);
    fs.writeFileSync(path.join(empty, '.gitkeep'), '');
    const ok = await generate([...base, '--out', empty, '--json']);
    assert.equal(ok.error, undefined, ok.error?.message);
    assert.equal(lastJson(ok.stdout).generated, 6);
    const rerun = await generate([...base, '--out', empty, '--json']);
    assert.equal(rerun.error, undefined, rerun.error?.message);
    assert.deepEqual([lastJson(rerun.stdout).generated, lastJson(rerun.stdout).skipped], [0, 6]);
  });
});
