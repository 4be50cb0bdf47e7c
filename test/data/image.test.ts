/** Image decoding: sharp in, (3, R, R) floats out; alpha onto white, centre crop, and bad inputs as typed skips. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { decodeImage, loadImageChw, rgbToChw } from '../../src/core/data/image';
import { SkipError } from '../../src/core/data/errors';
import { badImages, noisePng, solidPng, temporaryDir } from './helpers';

const OPTIONS = { resolution: 16, maxInputPixels: 1_000_000 };

/** The value of channel c at (x, y) of a (3, R, R) image. */
function at(chw: Float32Array, side: number, c: number, x: number, y: number): number {
  return chw[c * side * side + y * side + x];
}

async function skipReason(input: Uint8Array | string, options = OPTIONS): Promise<string> {
  try {
    await decodeImage(input, options);
  } catch (error) {
    assert.ok(error instanceof SkipError, `expected a SkipError, got ${String(error)}`);
    return error.reason;
  }
  assert.fail('decoding should have failed');
}

describe('data: image decoding', () => {
  it('gives (3, R, R) floats in [0, 1], channel planes in RGB order', async () => {
    const chw = await loadImageChw(await solidPng(20, 20, { r: 255, g: 51, b: 0 }), OPTIONS);
    assert.equal(chw.length, 3 * 16 * 16);
    assert.equal(at(chw, 16, 0, 5, 7), 1);
    assert.equal(at(chw, 16, 1, 5, 7), Math.fround(51 / 255));
    assert.equal(at(chw, 16, 2, 5, 7), 0);
  });

  it('flattens alpha onto white: transparent is white, half-transparent red is pink', async () => {
    const transparent = await loadImageChw(await solidPng(16, 16, { r: 0, g: 0, b: 0, alpha: 0 }), OPTIONS);
    assert.ok(transparent.every((value) => value === 1));
    const pink = await loadImageChw(await solidPng(16, 16, { r: 255, g: 0, b: 0, alpha: 0.5 }), OPTIONS);
    assert.equal(at(pink, 16, 0, 3, 3), 1);
    assert.ok(Math.abs(at(pink, 16, 1, 3, 3) - 0.5) < 0.01);
    assert.ok(Math.abs(at(pink, 16, 2, 3, 3) - 0.5) < 0.01);
  });

  it('resizes the short side to R and keeps the centre: a wide red|green|blue image becomes green', async () => {
    // 60 x 20, thirds red, green, blue: scaled to 48 x 16, the centre 16 columns are the green third.
    const thirds = Buffer.alloc(60 * 20 * 3);
    for (let y = 0; y < 20; y++) {
      for (let x = 0; x < 60; x++) thirds[(y * 60 + x) * 3 + Math.floor(x / 20)] = 255;
    }
    const png = await sharp(thirds, { raw: { width: 60, height: 20, channels: 3 } }).png().toBuffer();
    const chw = await loadImageChw(png, OPTIONS);
    for (let x = 2; x < 14; x++) {
      assert.deepEqual([0, 1, 2].map((c) => Math.round(at(chw, 16, c, x, 8) * 255)), [0, 255, 0], `column ${x}`);
    }
    // A tall image keeps its vertical centre the same way.
    const tall = await sharp(thirds, { raw: { width: 60, height: 20, channels: 3 } }).rotate(90).png().toBuffer();
    const tallChw = await loadImageChw(tall, OPTIONS);
    assert.equal(Math.round(at(tallChw, 16, 1, 8, 8) * 255), 255);
  });

  it('turns greyscale and 16-bit images into 8-bit RGB', async () => {
    const grey = await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 80, g: 80, b: 80 } } })
      .greyscale()
      .png()
      .toBuffer();
    const rgb = await decodeImage(grey, OPTIONS);
    assert.equal(rgb.length, 16 * 16 * 3);
    assert.ok(rgb.every((value) => value === 80));
    const deep = await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 0, g: 0, b: 255 } } })
      .toColourspace('rgb16')
      .png()
      .toBuffer();
    const blue = await loadImageChw(deep, OPTIONS);
    assert.equal(at(blue, 16, 2, 0, 0), 1);
    assert.equal(at(blue, 16, 0, 0, 0), 0);
  });

  it('refuses images over the pixel cap before decoding them (too-large)', async () => {
    const png = await solidPng(200, 100, { r: 1, g: 2, b: 3 });
    assert.equal(await skipReason(png, { resolution: 16, maxInputPixels: 200 * 100 - 1 }), 'too-large');
    assert.equal((await decodeImage(png, { resolution: 16, maxInputPixels: 200 * 100 })).length, 16 * 16 * 3);
  });

  it('names why bad bytes cannot be used: truncated, corrupt, not-an-image, empty', async () => {
    for (const [reason, bytes] of Object.entries(await badImages())) {
      assert.equal(await skipReason(bytes), reason, reason);
    }
    const jpeg = await sharp(await noisePng(64, 64)).jpeg().toBuffer();
    assert.equal(await skipReason(jpeg.subarray(0, jpeg.length - 200)), 'truncated');
  });

  it('decodes from a file path the same as from bytes, and classifies bad files the same', async () => {
    const dir = temporaryDir();
    const png = await noisePng(40, 30);
    fs.writeFileSync(path.join(dir, 'ok.png'), png);
    assert.deepEqual(await decodeImage(path.join(dir, 'ok.png'), OPTIONS), await decodeImage(png, OPTIONS));
    for (const [reason, bytes] of Object.entries(await badImages())) {
      fs.writeFileSync(path.join(dir, `${reason}.png`), bytes);
      assert.equal(await skipReason(path.join(dir, `${reason}.png`)), reason, reason);
    }
    assert.equal(await skipReason(path.join(dir, 'absent.png')), 'missing-file');
  });

  it('rgbToChw writes planes at an offset and checks its sizes', () => {
    const rgb = Uint8Array.from([255, 0, 51, 0, 255, 102, 0, 0, 0, 255, 255, 255]); // 2 x 2
    const out = new Float32Array(1 + 12).fill(-1);
    rgbToChw(rgb, 2, out, 1);
    assert.equal(out[0], -1);
    assert.deepEqual([...out.subarray(1, 5)].map((v) => v * 255), [255, 0, 0, 255]); // red plane
    assert.deepEqual([...out.subarray(9, 13)].map((v) => Math.round(v * 255)), [51, 102, 0, 255]); // blue plane
    assert.throws(() => rgbToChw(rgb, 3, out), RangeError);
    assert.throws(() => rgbToChw(rgb, 2, out, 2), RangeError);
  });
});
