/** `dalle dataset emoji` and `dalle dataset inspect`, run as a user runs them; the split rule on its own. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import sharp from 'sharp';
import { EmojiDatasetResult } from '../../src/core/data/emoji/build';
import { EMOJI_SETS, loadEmojiSet } from '../../src/core/data/emoji/sets';
import { splitEmojiPairs } from '../../src/core/data/emoji/split';
import { DataError } from '../../src/core/data/errors';
import { InspectReport } from '../../src/core/data/inspect';
import { badImages, solidPng, temporaryDir } from './helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');

interface ManifestLine {
  image: string;
  caption: string;
  emoji: string;
  style: string;
}

function readManifest(dir: string, split: string): ManifestLine[] {
  return fs
    .readFileSync(path.join(dir, split, 'manifest.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as ManifestLine);
}

function dalleProcess(args: string[]) {
  return spawnSync(process.execPath, [path.join(ROOT, 'bin', 'run.js'), ...args], { cwd: ROOT, encoding: 'utf8' });
}

describe('data: the emoji split rule', () => {
  const styles = ['noto', 'twemoji', 'openmoji', 'fluent'];
  // 300 emoji: a quarter in one style only, the rest in two to four styles.
  const stylesByName = new Map<string, string[]>(
    Array.from({ length: 300 }, (_, i) => [`emoji-${i}`, styles.slice(0, 1 + (i % 4))]),
  );

  it('is deterministic in the seed and holds out whole emoji (val) and single styles (zeroshot)', () => {
    const pairs = splitEmojiPairs(stylesByName, { seed: 0, size: 0 });
    assert.deepEqual(pairs, splitEmojiPairs(stylesByName, { seed: 0, size: 0 }));
    assert.notDeepEqual(pairs, splitEmojiPairs(stylesByName, { seed: 1, size: 0 }));
    assert.equal(pairs.length, [...stylesByName.values()].reduce((sum, s) => sum + s.length, 0));

    const emojiIn = (split: string) => new Set(pairs.filter((p) => p.split === split).map((p) => p.name));
    const [train, val, zeroshot] = [emojiIn('train'), emojiIn('val'), emojiIn('zeroshot')];
    assert.equal(val.size, Math.ceil(0.05 * 300));
    for (const name of val) assert.ok(!train.has(name), `${name} is held out whole`);
    assert.ok(zeroshot.size > 0);
    for (const name of zeroshot) {
      const ofName = pairs.filter((p) => p.name === name);
      assert.equal(ofName.filter((p) => p.split === 'zeroshot').length, 1, `${name}: one held-out style`);
      assert.equal(ofName.filter((p) => p.split === 'train').length, ofName.length - 1, `${name}: others in train`);
    }
  });

  it('--size takes whole emoji up to the cap and still holds some out', () => {
    const pairs = splitEmojiPairs(stylesByName, { seed: 5, size: 40 });
    assert.equal(pairs.length, 40);
    for (const name of new Set(pairs.map((p) => p.name))) {
      assert.equal(pairs.filter((p) => p.name === name).length, stylesByName.get(name)?.length);
    }
    assert.ok(pairs.some((p) => p.split === 'val'));
    assert.ok(pairs.some((p) => p.split === 'zeroshot'));
  });

  it('a missing emoji package is a DataError naming the package and the npm command', () => {
    assert.throws(
      () => loadEmojiSet(EMOJI_SETS[0], temporaryDir()),
      (error: unknown) =>
        error instanceof DataError &&
        error.message.includes('@iconify-json/noto') &&
        (error.hint ?? '').includes('npm install --save-dev @iconify-json/noto'),
    );
  });
});

describe('cli: dalle dataset emoji', () => {
  let out: string;
  let result: EmojiDatasetResult;

  before(async () => {
    out = path.join(temporaryDir(), 'emoji');
    const run = await runCommand(['dataset', 'emoji', '--out', out, '--size', '40', '--resolution', '32'], {
      root: ROOT,
    });
    assert.equal(run.error, undefined, run.error?.stack);
    result = run.result as EmojiDatasetResult;
  });

  it('writes 40 image + caption pairs split into train, val and zeroshot, with manifests', async () => {
    const { train, val, zeroshot } = result.pairs;
    assert.equal(train + val + zeroshot, 40);
    assert.ok(val > 0 && zeroshot > 0 && train > val);
    for (const split of ['train', 'val', 'zeroshot'] as const) {
      const lines = readManifest(out, split);
      assert.equal(lines.length, result.pairs[split]);
      for (const line of lines) {
        assert.match(line.caption, /^[a-z0-9 ]+, (noto|twemoji|openmoji|fluent) style$/);
        assert.equal(line.caption, `${line.emoji.replace(/-/g, ' ')}, ${line.style} style`);
        const base = path.join(out, split, line.image.replace('.png', ''));
        assert.equal(fs.readFileSync(`${base}.txt`, 'utf8'), `${line.caption}\n`);
      }
      const first = await sharp(path.join(out, split, lines[0].image)).metadata();
      assert.deepEqual([first.width, first.height, first.channels, first.hasAlpha], [32, 32, 3, false]);
    }
  });

  it('zero-shot pairs are absent from train while their emoji appear there in other styles', () => {
    const train = readManifest(out, 'train');
    const trainPairs = new Set(train.map((line) => `${line.emoji}/${line.style}`));
    const trainEmoji = new Set(train.map((line) => line.emoji));
    for (const line of readManifest(out, 'zeroshot')) {
      assert.ok(!trainPairs.has(`${line.emoji}/${line.style}`), `${line.caption} is held out`);
      assert.ok(trainEmoji.has(line.emoji), `${line.emoji} is seen in another style`);
    }
    for (const line of readManifest(out, 'val')) assert.ok(!trainEmoji.has(line.emoji), `${line.emoji} unseen`);
  });

  it('records each set, its version and licence in dataset.json and LICENSES.md', () => {
    const description = JSON.parse(fs.readFileSync(path.join(out, 'dataset.json'), 'utf8')) as {
      sets: { style: string; package: string; version: string; license: { spdx: string }; images: number }[];
      splits: Record<string, { images: number }>;
      split_rule: { text: string };
    };
    assert.deepEqual(
      description.sets.map((set) => [set.style, set.package, set.license.spdx]),
      [
        ['noto', '@iconify-json/noto', 'Apache-2.0'],
        ['twemoji', '@iconify-json/twemoji', 'CC-BY-4.0'],
        ['openmoji', '@iconify-json/openmoji', 'CC-BY-SA-4.0'],
        ['fluent', '@iconify-json/fluent-emoji-flat', 'MIT'],
      ],
    );
    assert.equal(description.splits.zeroshot.images, result.pairs.zeroshot);
    assert.equal(description.sets.reduce((sum, set) => sum + set.images, 0), 40);
    assert.match(description.split_rule.text, /sha256/);
    const licenses = fs.readFileSync(path.join(out, 'LICENSES.md'), 'utf8');
    for (const set of description.sets) assert.ok(licenses.includes(`${set.package}@${set.version}`), set.package);
    assert.match(licenses, /CC BY-SA 4\.0/);
    assert.match(licenses, /ShareAlike/);
  });

  it('in a child process: --json ends with the result, the same files again, and an existing --out exits 4', () => {
    const again = path.join(temporaryDir(), 'emoji');
    const child = dalleProcess(['dataset', 'emoji', '--out', again, '--size', '40', '--resolution', '32', '--json']);
    assert.equal(child.status, 0, child.stderr);
    const lines = child.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    assert.ok(lines.some((line) => line.type === 'progress' && line.task === 'render'));
    assert.deepEqual((lines[lines.length - 1] as unknown as EmojiDatasetResult).pairs, result.pairs);
    for (const split of ['train', 'val', 'zeroshot']) {
      assert.deepEqual(readManifest(again, split), readManifest(out, split), `${split} is the same`);
    }
    const exists = dalleProcess(['dataset', 'emoji', '--out', again, '--size', '4']);
    assert.equal(exists.status, 4);
    assert.match(exists.stderr.replace(/\s+/g, ' '), /DataError: .* already exists.*--force/);
  });
});

describe('cli: dalle dataset inspect', () => {
  it('counts records and captions, and reports bad files with their reasons', async () => {
    const dir = temporaryDir();
    fs.writeFileSync(path.join(dir, 'a.png'), await solidPng(8, 8, { r: 1, g: 2, b: 3 }));
    fs.writeFileSync(path.join(dir, 'a.txt'), 'first\nsecond\n');
    fs.writeFileSync(path.join(dir, 'b.png'), (await badImages()).truncated);
    fs.writeFileSync(path.join(dir, 'c.bin'), 'junk');
    const { result, stdout, error } = await runCommand(['dataset', 'inspect', dir], { root: ROOT });
    assert.equal(error, undefined);
    const report = result as InspectReport;
    assert.equal(report.kind, 'folder');
    assert.deepEqual([report.records, report.withCaptions, report.captions], [2, 1, 2]);
    assert.deepEqual(report.decodeCheck, { checked: 2, failed: 1 });
    assert.deepEqual(report.skipped.byReason, { 'not-an-image': 1, truncated: 1 });
    assert.match(stdout, /truncated: b\.png/);
    assert.match(stdout, /"first"/);
  });

  it('a path that is not a data set exits 4 with a hint', async () => {
    const { error } = await runCommand(['dataset', 'inspect', path.join(temporaryDir(), 'absent')], { root: ROOT });
    assert.equal(error?.name, 'DataError');
    assert.equal(error?.oclif?.exit, 4);
  });

  it('a data set where nothing decodes exits 4 after the report, naming the reasons', async () => {
    const dir = temporaryDir();
    const bad = await badImages();
    fs.writeFileSync(path.join(dir, 'a.png'), bad.corrupt);
    fs.writeFileSync(path.join(dir, 'b.png'), bad.truncated);
    const { error, stdout } = await runCommand(['dataset', 'inspect', dir], { root: ROOT });
    assert.equal(error?.name, 'DataError');
    assert.equal(error?.oclif?.exit, 4);
    assert.equal(error?.message, `${dir}: nothing decodable: none of its 2 images could be decoded as an image (skipped: corrupt 1, truncated 1)`);
    assert.match(stdout, /decoded 2: 2 failed/); // the report comes first
  });

  it('only the records decoded are claimed: --decode 1 of 2 says "the first 1 of its 2 records"', async () => {
    const dir = temporaryDir();
    fs.writeFileSync(path.join(dir, 'a.png'), (await badImages()).corrupt);
    fs.writeFileSync(path.join(dir, 'b.png'), await solidPng(8, 8, { r: 1, g: 2, b: 3 }));
    const one = await runCommand(['dataset', 'inspect', dir, '--decode', '1'], { root: ROOT });
    assert.match(one.error?.message ?? '', /nothing decodable: none of the first 1 of its 2 records could be decoded/);
    const both = await runCommand(['dataset', 'inspect', dir], { root: ROOT });
    assert.equal(both.error, undefined, 'one good image is enough');
  });

  it('an empty data set exits 4; under --json the error carries the report', () => {
    const dir = temporaryDir();
    fs.writeFileSync(path.join(dir, 'notes.bin'), 'junk');
    const child = dalleProcess(['dataset', 'inspect', dir, '--json']);
    assert.equal(child.status, 4, child.stderr);
    const { error } = JSON.parse(child.stdout.trim().split('\n').pop()!) as { error: { name: string; message: string; report: InspectReport } };
    assert.equal(error.name, 'DataError');
    assert.equal(error.message, `${dir}: nothing in it can be used: no usable images (skipped: not-an-image 1)`);
    assert.deepEqual(error.report.skipped.byReason, { 'not-an-image': 1 });
  });
});
