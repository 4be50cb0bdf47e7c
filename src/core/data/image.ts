/**
 * Image decoding for training: bytes -> sharp (libvips) -> a square RGB crop -> float32 CHW in [0, 1].
 *
 * Every image goes through the same steps, so data sets made of PNGs with alpha, greyscale JPEGs, CMYK scans, SVGs
 * and rotated phone photos all come out alike:
 *   1. refuse more than `maxInputPixels` before decoding (sharp's limitInputPixels reads the header only);
 *   2. decode, failing on warnings too, so a truncated file is skipped rather than trained on half grey;
 *   3. apply the EXIF orientation, flatten alpha onto white (emoji and icons are drawn for a white page);
 *   4. resize so the short side is `resolution` ("cover") and crop the centre square; convert to 8-bit sRGB.
 * sharp runs each decode on libuv's thread pool, so awaiting decodeImage never blocks the JavaScript thread. Given a
 * file path rather than bytes, sharp also reads the file in that worker thread: reading and decoding are then one
 * task that completes while the JavaScript thread is busy with a training step (bytes would need a JavaScript turn
 * between the read and the decode).
 */
import * as fs from 'node:fs';
import sharp, { type OutputInfo } from 'sharp';
import { SkipError, SkipReason } from './errors';

export interface DecodeOptions {
  /** Side of the square output in pixels. */
  readonly resolution: number;
  /** Images with more pixels (width x height) than this are skipped as 'too-large' without being decoded. */
  readonly maxInputPixels: number;
}

/** 50 megapixels: a large camera frame (about 200 MB as RGBA in libvips); bigger is rarely training data. */
export const DEFAULT_MAX_INPUT_PIXELS = 50_000_000;

const WHITE = { r: 255, g: 255, b: 255 };
const RGB_CHANNELS = 3;

/**
 * Decodes `input` (the bytes of an image, or the path of an image file) into a `resolution` x `resolution` RGB image,
 * 8 bits per channel, interleaved (HWC): what sharp produces and the compact form to keep while batches wait.
 * Throws SkipError (with a reason) for any bad input.
 */
export async function decodeImage(input: Uint8Array | string, options: DecodeOptions): Promise<Uint8Array> {
  const { resolution } = options;
  if (typeof input !== 'string' && input.byteLength === 0) throw new SkipError('empty', 'the file has no bytes');
  let output: { data: Buffer; info: OutputInfo };
  try {
    output = await sharp(input, { limitInputPixels: options.maxInputPixels, failOn: 'warning', autoOrient: true })
      .flatten({ background: WHITE })
      .resize(resolution, resolution, { fit: 'cover', position: 'centre' })
      .toColourspace('srgb')
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
  } catch (error) {
    const message = firstLine(error instanceof Error ? error.message : String(error));
    if (typeof input !== 'string') throw new SkipError(classifyDecodeFailure(message, input), message);
    throw await classifyFileFailure(message, input);
  }
  const { info, data } = output;
  if (info.width !== resolution || info.height !== resolution || info.channels !== RGB_CHANNELS) {
    throw new SkipError(
      'corrupt',
      `decoded to ${info.width}x${info.height}x${info.channels}, expected ${resolution}x${resolution}x3`,
    );
  }
  return data;
}

/**
 * Writes an interleaved RGB image (HWC, 8-bit) into `out` as planes (CHW) of floats in [0, 1], starting at `offset`:
 * out[offset + c * side^2 + y * side + x] = rgb[(y * side + x) * 3 + c] / 255.
 */
export function rgbToChw(rgb: Uint8Array, side: number, out: Float32Array, offset = 0): void {
  const plane = side * side;
  if (rgb.length !== plane * RGB_CHANNELS) {
    throw new RangeError(`rgbToChw: ${rgb.length} bytes is not a ${side}x${side} RGB image`);
  }
  if (offset < 0 || offset + RGB_CHANNELS * plane > out.length) {
    throw new RangeError(`rgbToChw: ${RGB_CHANNELS * plane} values at offset ${offset} overflow ${out.length}`);
  }
  const red = offset;
  const green = offset + plane;
  const blue = offset + 2 * plane;
  for (let p = 0; p < plane; p++) {
    out[red + p] = rgb[3 * p] / 255;
    out[green + p] = rgb[3 * p + 1] / 255;
    out[blue + p] = rgb[3 * p + 2] / 255;
  }
}

/** decodeImage then rgbToChw: one image as a (3, R, R) float array in [0, 1]. */
export async function loadImageChw(input: Uint8Array | string, options: DecodeOptions): Promise<Float32Array> {
  const rgb = await decodeImage(input, options);
  const out = new Float32Array(RGB_CHANNELS * options.resolution * options.resolution);
  rgbToChw(rgb, options.resolution, out);
  return out;
}

/** Maps sharp's message (and a look at the bytes) to a reason. libpng says "read error" for damage and cuts alike. */
export function classifyDecodeFailure(message: string, bytes: Uint8Array): SkipReason {
  if (/pixel limit/i.test(message)) return 'too-large';
  if (/unsupported image format/i.test(message)) return 'not-an-image';
  if (/is empty/i.test(message)) return 'empty';
  if (endsEarly(bytes) || /premature end|unexpected end|truncated|end of (file|data)/i.test(message)) {
    return 'truncated';
  }
  return 'corrupt';
}

/** The reason a file failed: its bytes are read again only now, on the rare failure path, to tell a cut from damage. */
async function classifyFileFailure(message: string, file: string): Promise<SkipError> {
  if (/pixel limit/i.test(message)) return new SkipError('too-large', message);
  let bytes: Buffer;
  try {
    bytes = await fs.promises.readFile(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return new SkipError(code === 'ENOENT' ? 'missing-file' : 'unreadable', (error as Error).message);
  }
  if (bytes.byteLength === 0) return new SkipError('empty', 'the file has no bytes');
  return new SkipError(classifyDecodeFailure(message, bytes), message);
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47];
const PNG_IEND = [0x49, 0x45, 0x4e, 0x44]; // 'IEND', followed by its 4-byte CRC at the very end of the file
const JPEG_START = [0xff, 0xd8];
const GIF_SIGNATURE = [0x47, 0x49, 0x46]; // 'GIF'
const GIF_TRAILER = 0x3b;

/** True when the bytes start like a PNG, JPEG or GIF but lack the end marker that every complete file has. */
function endsEarly(bytes: Uint8Array): boolean {
  const n = bytes.length;
  if (startsWith(bytes, PNG_SIGNATURE)) return n < 12 || !PNG_IEND.every((b, i) => bytes[n - 8 + i] === b);
  if (startsWith(bytes, JPEG_START)) {
    let end = n; // some writers pad after the end-of-image marker (FF D9)
    while (end > 2 && bytes[end - 1] === 0) end--;
    return !(bytes[end - 2] === 0xff && bytes[end - 1] === 0xd9);
  }
  if (startsWith(bytes, GIF_SIGNATURE)) return bytes[n - 1] !== GIF_TRAILER;
  return false;
}

function startsWith(bytes: Uint8Array, prefix: readonly number[]): boolean {
  return bytes.length >= prefix.length && prefix.every((b, i) => bytes[i] === b);
}

function firstLine(message: string): string {
  return message.split('\n', 1)[0].trim();
}
