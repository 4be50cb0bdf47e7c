/**
 * `dalle evaluate fid | kid | is` as a user runs them: tiny image folders and a tiny ONNX model built here (mean colour
 * per channel as the features, a fixed linear layer on it as the logits), so the expected numbers can be computed
 * independently from the PNGs' own pixels.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import sharp from 'sharp';
import { featureStats, frechetDistance } from '../../src/core/eval/fid';
import { inceptionScore, softmaxRows } from '../../src/core/eval/inception-score';
import { kid } from '../../src/core/eval/kid';
import { GraphBuilder } from '../../src/core/onnx/graph';
import { encodeModel } from '../../src/core/onnx/proto';
import { temporaryDir } from './helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const SIDE = 16;
const CLASSES = 5;
/** The logits layer: (3, 5) weights and (5) bias. */
const W = Float32Array.from({ length: 3 * CLASSES }, (_, i) => Math.sin(i * 1.7) * 4);
const B = Float32Array.from({ length: CLASSES }, (_, i) => 0.1 * i);

function dalle(args: string[]) {
  return runCommand(args, { root: ROOT });
}

/** Writes the tiny model: pixels (N, 3, 16, 16) or (N, 16, 16, 3) -> features = mean colour (N, 3), logits (N, 5). */
function writeTinyModel(file: string, layout: 'nchw' | 'nhwc'): void {
  const g = new GraphBuilder('tiny-features');
  let x = g.input('pixels', 'FLOAT', layout === 'nchw' ? ['N', 3, SIDE, SIDE] : ['N', SIDE, SIDE, 3]);
  if (layout === 'nhwc') x = g.node('Transpose', [x], { perm: { ints: [0, 3, 1, 2] } });
  const pooled = g.node('GlobalAveragePool', [x]); // (N, 3, 1, 1)
  const features = g.node('Flatten', [pooled], { axis: { int: 1 } }); // (N, 3)
  const logits = g.node('Gemm', [features, g.constant('w', W, [3, CLASSES]), g.constant('b', B, [CLASSES])]);
  g.output(features, 'features', 'FLOAT', ['N', 3]);
  g.output(logits, 'logits', 'FLOAT', ['N', CLASSES]);
  fs.writeFileSync(file, encodeModel(g.toModel({})));
}

/** `count` 16x16 PNGs of random blocks; `bias` shifts the colours so two folders differ. Returns their pixels. */
async function makeFolder(dir: string, count: number, seed: number, bias: number): Promise<Uint8Array[]> {
  fs.mkdirSync(dir, { recursive: true });
  let state = seed >>> 0;
  const next = (): number => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
  const images: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const pixels = Buffer.alloc(SIDE * SIDE * 3);
    for (let by = 0; by < SIDE; by += 4) {
      for (let bx = 0; bx < SIDE; bx += 4) {
        const colour = [0, 1, 2].map((c) => Math.min(255, Math.floor(next() * 200 + (c === 0 ? bias : 0))));
        for (let y = by; y < by + 4; y++) for (let x = bx; x < bx + 4; x++) for (let c = 0; c < 3; c++) pixels[(y * SIDE + x) * 3 + c] = colour[c];
      }
    }
    images.push(new Uint8Array(pixels));
    await sharp(pixels, { raw: { width: SIDE, height: SIDE, channels: 3 } }).png().toFile(path.join(dir, `${String(i).padStart(3, '0')}.png`));
  }
  return images;
}

/** The tiny model's features, computed here from the pixels: mean of each channel in [0, 1]. (N, 3) */
function meanColours(images: Uint8Array[]): Float64Array {
  const out = new Float64Array(images.length * 3);
  images.forEach((img, n) => {
    for (let p = 0; p < SIDE * SIDE; p++) for (let c = 0; c < 3; c++) out[n * 3 + c] += img[p * 3 + c] / 255 / (SIDE * SIDE);
  });
  return out;
}

function lastJson(stdout: string): any {
  return JSON.parse(stdout.trim().split('\n').pop()!);
}

describe('commands: evaluate fid / kid / is', function () {
  this.timeout(60000);
  let work: string;
  let real: string;
  let fake: string;
  let realPixels: Uint8Array[];
  let fakePixels: Uint8Array[];
  let model: string;
  let modelNhwc: string;

  before(async () => {
    work = temporaryDir('dalle-eval-');
    real = path.join(work, 'real');
    fake = path.join(work, 'fake');
    realPixels = await makeFolder(real, 12, 1, 0);
    fakePixels = await makeFolder(fake, 10, 2, 50);
    fs.writeFileSync(path.join(fake, 'broken.png'), 'not a png');
    model = path.join(work, 'tiny.onnx');
    modelNhwc = path.join(work, 'tiny-nhwc.onnx');
    writeTinyModel(model, 'nchw');
    writeTinyModel(modelNhwc, 'nhwc');
  });

  afterEach(() => {
    process.exitCode = undefined;
  });

  it('fid matches FID of the features computed from the pixels, writes JSON + HTML with the blur curve', async () => {
    const out = path.join(work, 'reports', 'fid');
    const { error, stdout } = await dalle(['evaluate', 'fid', '--real', real, '--fake', fake, '--model', model, '--blur', '0,1,2,4', '--out', out, '--json']);
    assert.equal(error, undefined, error?.message);
    const result = lastJson(stdout);
    const expected = frechetDistance(featureStats(meanColours(realPixels), 12, 3), featureStats(meanColours(fakePixels), 10, 3)).fid;
    assert.deepEqual(result.points.map((p: any) => p.radius), [0, 1, 2, 4]);
    assert.deepEqual(result.points.map((p: any) => p.sigma), [0, 1, 2, 4]);
    const fid0 = result.points[0].value;
    // The pixels pass through PNG, sharp and float32 ONNX: agreement to float32 rounding of the mean colours.
    assert.ok(Math.abs(fid0 - expected) <= 1e-4 * expected, `FID ${fid0} vs ${expected} from the pixels`);
    assert.equal(result.extractor.name, 'onnx:tiny.onnx');
    assert.equal(result.extractor.output, 'features');
    assert.equal(result.extractor.dim, 3);
    assert.equal(result.real.images, 12);
    assert.equal(result.fake.images, 10);
    assert.equal(result.fake.skipped.total, 1, 'broken.png is skipped and counted');
    // Blurring mixes the blocks: the mean colour stays but the images no longer differ the same way, so the values move.
    const values = result.points.map((p: any) => p.value);
    assert.ok(values.every((v: number) => Number.isFinite(v) && v >= 0));
    assert.notEqual(values[3], values[0]);
    const json = JSON.parse(fs.readFileSync(`${out}.json`, 'utf8'));
    assert.deepEqual(json.points, result.points);
    const html = fs.readFileSync(`${out}.html`, 'utf8');
    assert.match(html, /<svg[^>]*>/);
    assert.equal((html.match(/<circle /g) ?? []).length, 4, 'one point per radius');
    assert.doesNotMatch(html, /<script|https?:\/\/(?!www\.w3\.org\/2000\/svg)/, 'no scripts, nothing external');
    assert.match(html, /onnx:tiny\.onnx/);
  });

  it('fid of a folder against itself is 0; NHWC models are detected and give the same features', async () => {
    const same = await dalle(['evaluate', 'fid', '--real', real, '--fake', real, '--model', model, '--json']);
    assert.equal(same.error, undefined, same.error?.message);
    assert.ok(Math.abs(lastJson(same.stdout).points[0].value) < 1e-6);
    const a = await dalle(['evaluate', 'fid', '--real', real, '--fake', fake, '--model', model, '--json']);
    const b = await dalle(['evaluate', 'fid', '--real', real, '--fake', fake, '--model', modelNhwc, '--json']);
    assert.equal(b.error, undefined, b.error?.message);
    assert.equal(lastJson(a.stdout).points[0].value, lastJson(b.stdout).points[0].value);
    assert.match(a.stdout, /"fid"/);
  });

  it('kid matches the unbiased MMD^2 of the pixel features (one subset of all images)', async () => {
    const { error, stdout } = await dalle(['evaluate', 'kid', '--real', real, '--fake', fake, '--model', model, '--subsets', '1', '--subset-size', '10', '--limit', '10', '--json']);
    assert.equal(error, undefined, error?.message);
    const result = lastJson(stdout);
    const expected = kid(meanColours(realPixels.slice(0, 10)), 10, meanColours(fakePixels), 10, 3, { subsets: 1, subsetSize: 10 }).kid;
    assert.ok(Math.abs(result.points[0].value - expected) <= 1e-4 * Math.abs(expected), `KID ${result.points[0].value} vs ${expected}`);
    assert.equal(result.settings.subsetSize, 10);
  });

  it('is scores the logits output with splits, and prints a line per radius', async () => {
    const { error, stdout } = await dalle(['evaluate', 'is', '--images', fake, '--model', model, '--logits-output', 'logits', '--splits', '2', '--blur', '0,2']);
    assert.equal(error, undefined, error?.message);
    const lines = stdout.trim().split('\n').filter((l) => l.startsWith('IS '));
    assert.equal(lines.length, 2, stdout);
    const feats = meanColours(fakePixels);
    const logits = new Float64Array(10 * CLASSES);
    for (let n = 0; n < 10; n++) {
      for (let k = 0; k < CLASSES; k++) {
        let s = B[k];
        for (let c = 0; c < 3; c++) s += feats[n * 3 + c] * W[c * CLASSES + k];
        logits[n * CLASSES + k] = s;
      }
    }
    const expected = inceptionScore(softmaxRows(logits, 10, CLASSES), 10, CLASSES, 2).score;
    const measured = Number(/^IS ([0-9.]+)/.exec(lines[0])![1]);
    assert.ok(Math.abs(measured - expected) <= 1e-4 * expected, `IS ${measured} vs ${expected}`);
  });

  it('refuses bad input with errors that say what to do', async () => {
    const noModel = await dalle(['evaluate', 'fid', '--real', real, '--fake', fake]);
    assert.match(noModel.error?.message ?? '', /no feature model/);
    assert.equal(noModel.error?.oclif?.exit, 4);
    const badOutput = await dalle(['evaluate', 'fid', '--real', real, '--fake', fake, '--model', model, '--features-output', 'pool3']);
    assert.match(badOutput.error?.message ?? '', /no output named "pool3" \(its outputs: features, logits\)/);
    const badBlur = await dalle(['evaluate', 'fid', '--real', real, '--fake', fake, '--model', model, '--blur', '0,0.1']);
    assert.match(badBlur.error?.message ?? '', /below 0.3/);
    const wrongSize = await dalle(['evaluate', 'fid', '--real', real, '--fake', fake, '--model', model, '--input-size', '32']);
    assert.match(wrongSize.error?.message ?? '', /takes 16x16 images, not --input-size 32/);
    const notOnnx = path.join(work, 'not.onnx');
    fs.writeFileSync(notOnnx, 'hello');
    const bad = await dalle(['evaluate', 'fid', '--real', real, '--fake', fake, '--model', notOnnx]);
    assert.match(bad.error?.message ?? '', /not an ONNX model/);
    assert.equal(bad.error?.oclif?.exit, 4);
    const missing = await dalle(['evaluate', 'kid', '--real', path.join(work, 'nope'), '--fake', fake, '--model', model]);
    assert.match(missing.error?.message ?? '', /does not exist/);
  });
});
