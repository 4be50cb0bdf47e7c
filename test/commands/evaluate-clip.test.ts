/**
 * `dalle train-clip`, `dalle evaluate clip-score` and `dalle evaluate fid --clip` as a user runs them, on a tiny folder
 * of captioned images (a few updates: checks the files, the numbers' ranges and the errors, not quality).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import sharp from 'sharp';
import { temporaryDir } from './helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const COLOURS: Record<string, [number, number, number]> = { red: [230, 20, 20], green: [20, 200, 40], blue: [30, 40, 220], yellow: [240, 220, 30] };

function dalle(args: string[]) {
  return runCommand(args, { root: ROOT });
}

/** 8 captioned 20x20 images: a coloured square on white, 'a red square' etc. */
async function makeCaptioned(dir: string): Promise<string> {
  fs.mkdirSync(dir, { recursive: true });
  let i = 0;
  for (const [name, rgb] of Object.entries(COLOURS)) {
    for (const size of [8, 14]) {
      const pixels = Buffer.alloc(20 * 20 * 3, 255);
      for (let y = 3; y < 3 + size; y++) for (let x = 3; x < 3 + size; x++) for (let c = 0; c < 3; c++) pixels[(y * 20 + x) * 3 + c] = rgb[c];
      const id = String(i++).padStart(3, '0');
      await sharp(pixels, { raw: { width: 20, height: 20, channels: 3 } }).png().toFile(path.join(dir, `${id}.png`));
      fs.writeFileSync(path.join(dir, `${id}.txt`), `a ${size > 10 ? 'big' : 'small'} ${name} square\n`);
    }
  }
  return dir;
}

describe('commands: train-clip -> evaluate clip-score / fid --clip', function () {
  this.timeout(120000);
  let work: string;
  let data: string;
  let run: string;

  before(async () => {
    work = temporaryDir('dalle-clip-');
    data = await makeCaptioned(path.join(work, 'pairs'));
    run = path.join(work, 'runs', 'clip');
    const { error, stdout } = await dalle(['train-clip', '--data', data, '--out', run, '--steps', '3', '--batch-size', '4', '--vocab', '270', '--resolution', '16', '--checkpoint-every', '2', '--threads', '1']);
    assert.equal(error, undefined, error?.message);
    assert.match(stdout, /trained 3 updates .* loss \d+\.\d+, batch top-1 \d+\.\d%; checkpoint .*step-3/);
  });

  afterEach(() => {
    process.exitCode = undefined;
  });

  it('train-clip writes clip.json, tokenizer.json, metrics.jsonl and checkpoints', () => {
    const info = JSON.parse(fs.readFileSync(path.join(run, 'clip.json'), 'utf8'));
    assert.equal(info.format, 'dalle-clip-1');
    assert.equal(info.arch.resolution, 16);
    assert.equal(info.arch.vocab, 270);
    assert.ok(fs.existsSync(path.join(run, 'tokenizer.json')));
    const metrics = fs.readFileSync(path.join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(metrics.map((m) => m.step), [3]);
    assert.ok(Number.isFinite(metrics[0].loss) && metrics[0].loss > 0);
    assert.deepEqual(fs.readdirSync(path.join(run, 'checkpoints')).sort(), ['step-2', 'step-3']);
  });

  it('evaluate clip-score reports the CLIP score and pooled retrieval', async () => {
    const { error, stdout } = await dalle(['evaluate', 'clip-score', '--clip', run, '--data', data, '--pool', '4', '--json']);
    assert.equal(error, undefined, error?.message);
    const r = JSON.parse(stdout.trim().split('\n').pop()!);
    assert.equal(r.pairs, 8);
    assert.equal(r.pools, 2);
    assert.equal(r.step, 3);
    assert.ok(r.clipScore >= 0 && r.clipScore <= 100, `CLIP score ${r.clipScore}`);
    for (const v of [r.textToImageTop1, r.imageToTextTop1]) assert.ok(v >= 0 && v <= 1 && Number.isInteger(v * 8), `top-1 ${v}`);
    const human = await dalle(['evaluate', 'clip-score', '--clip', path.join(run, 'checkpoints', 'step-2'), '--data', data, '--pool', '100']);
    assert.equal(human.error, undefined, human.error?.message);
    assert.match(human.stdout, /8 pairs, CLIP .*step-2 \(update 2\): CLIP score \d+\.\d\d; top-1 in 0 pool\(s\) of 100: text->image n\/a/);
  });

  it('evaluate fid --clip uses the CLIP image tower, named in the report', async () => {
    const { error, stdout } = await dalle(['evaluate', 'fid', '--real', data, '--fake', data, '--clip', run, '--json']);
    assert.equal(error, undefined, error?.message);
    const r = JSON.parse(stdout.trim().split('\n').pop()!);
    assert.match(r.extractor.name, /^dalle-clip:.* \(step 3\)$/);
    assert.equal(r.extractor.output, 'image_embedding');
    assert.equal(r.extractor.dim, 128);
    assert.ok(Math.abs(r.points[0].value) < 1e-6, `FID of a set with itself ${r.points[0].value}`);
  });

  it('refuses what is not a CLIP run', async () => {
    const none = await dalle(['evaluate', 'clip-score', '--clip', path.join(work, 'nope'), '--data', data]);
    assert.match(none.error?.message ?? '', /does not exist/);
    const noCaptions = path.join(work, 'bare');
    fs.mkdirSync(noCaptions);
    fs.copyFileSync(path.join(data, '000.png'), path.join(noCaptions, '000.png'));
    const bare = await dalle(['train-clip', '--data', noCaptions, '--out', path.join(work, 'runs', 'bare'), '--steps', '1']);
    assert.match(bare.error?.message ?? '', /0 images with captions|no-caption|caption/i);
  });
});
