/**
 * Image tiles and PNG writing for sample grids, decoded images and contact sheets.
 * Images come as the engine holds them: float32 planes (N, C, H, W) in [0, 1], C = 3 (RGB) or 1 (grey).
 * PNGs are encoded by sharp and written atomically (a reader never sees half a PNG).
 */
import sharp from 'sharp';
import { writeFileAtomicSync } from '../io/atomic';

/** An interleaved 8-bit RGB image (HWC). */
export interface RgbImage {
  readonly width: number;
  readonly height: number;
  readonly data: Uint8Array;
}

/** Image n of a (N, C, H, W) float array in [0, 1] as 8-bit RGB (grey repeated; values clamped and rounded). */
export function planesToRgb(images: Float32Array, shape: readonly number[], n: number): RgbImage {
  const [N, C, H, W] = shape;
  if (shape.length !== 4 || (C !== 3 && C !== 1)) throw new RangeError(`images must be (N, 3 or 1, H, W), got (${shape.join(', ')})`);
  if (n < 0 || n >= N) throw new RangeError(`image ${n} is outside [0, ${N})`);
  const plane = H * W;
  const base = n * C * plane;
  const data = new Uint8Array(plane * 3);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) {
      const v = images[base + (C === 3 ? c : 0) * plane + p];
      data[3 * p + c] = Math.round(255 * Math.min(1, Math.max(0, Number.isFinite(v) ? v : 0)));
    }
  }
  return { width: W, height: H, data };
}

export interface TileOptions {
  /** Images per row (default: ceil(sqrt(count))). */
  readonly columns?: number;
  /** Pixels between and around tiles (default 2). */
  readonly padding?: number;
  /** Padding colour, 0-255 grey (default 255: white). */
  readonly background?: number;
}

/** Tiles equal-sized RGB images row by row into one image. */
export function tileImages(tiles: readonly RgbImage[], options: TileOptions = {}): RgbImage {
  if (tiles.length === 0) throw new RangeError('tileImages: no images');
  const { width: w, height: h } = tiles[0];
  for (const t of tiles) if (t.width !== w || t.height !== h) throw new RangeError(`tileImages: tiles differ in size (${w}x${h} vs ${t.width}x${t.height})`);
  const columns = Math.max(1, Math.min(tiles.length, options.columns ?? Math.ceil(Math.sqrt(tiles.length))));
  const rows = Math.ceil(tiles.length / columns);
  const pad = options.padding ?? 2;
  const width = columns * w + (columns + 1) * pad;
  const height = rows * h + (rows + 1) * pad;
  const data = new Uint8Array(width * height * 3).fill(options.background ?? 255);
  tiles.forEach((tile, i) => {
    const x0 = pad + (i % columns) * (w + pad);
    const y0 = pad + Math.floor(i / columns) * (h + pad);
    for (let y = 0; y < h; y++) {
      data.set(tile.data.subarray(y * w * 3, (y + 1) * w * 3), ((y0 + y) * width + x0) * 3);
    }
  });
  return { width, height, data };
}

/** Encodes an RGB image as PNG bytes. */
export async function encodePng(image: RgbImage): Promise<Buffer> {
  return sharp(Buffer.from(image.data.buffer, image.data.byteOffset, image.data.byteLength), {
    raw: { width: image.width, height: image.height, channels: 3 },
  })
    .png()
    .toBuffer();
}

/** Writes an RGB image as a PNG file, atomically. */
export async function writePng(file: string, image: RgbImage): Promise<void> {
  writeFileAtomicSync(file, await encodePng(image));
}
