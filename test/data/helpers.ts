/** Test images made with sharp itself, and temporary folders removed after the suite. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';

const temporaryDirs: string[] = [];
after(() => {
  for (const dir of temporaryDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

export function temporaryDir(prefix = 'dalle-data-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  temporaryDirs.push(dir);
  return dir;
}

export interface Rgba {
  r: number;
  g: number;
  b: number;
  alpha?: number;
}

/** A PNG of one colour (alpha in [0, 1]; 1 when omitted). */
export function solidPng(width: number, height: number, colour: Rgba): Promise<Buffer> {
  const channels = colour.alpha === undefined ? 3 : 4;
  return sharp({ create: { width, height, channels, background: { alpha: 1, ...colour } } })
    .png()
    .toBuffer();
}

/** A PNG of pseudo-random pixels: compresses badly, so cutting it short cuts pixel data. */
export function noisePng(width: number, height: number, seed = 1): Promise<Buffer> {
  const pixels = Buffer.alloc(width * height * 3);
  let state = seed >>> 0 || 1;
  for (let i = 0; i < pixels.length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    pixels[i] = state >>> 24;
  }
  return sharp(pixels, { raw: { width, height, channels: 3 } }).png().toBuffer();
}

/** The file bytes of a few kinds of bad input, named by the reason they should be skipped for. */
export async function badImages(): Promise<Record<'truncated' | 'corrupt' | 'not-an-image' | 'empty', Buffer>> {
  const png = await noisePng(64, 64);
  const corrupt = Buffer.from(png);
  for (let i = 100; i < 400; i++) corrupt[i] ^= 0x5a; // damage the pixel data, keep the IEND trailer
  return {
    truncated: png.subarray(0, Math.floor(png.length / 2)),
    corrupt,
    'not-an-image': Buffer.from('this is a caption, not a picture\n'),
    empty: Buffer.alloc(0),
  };
}
