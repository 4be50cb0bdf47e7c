/**
 * Images for the feature metrics, optionally Gaussian-blurred first (the DALL-E paper's Figure 9: FID and IS of MS-COCO
 * samples and validation images as a function of the blur radius, both sets blurred alike).
 *
 * Radius -> sigma: sigma = radius. The paper's radii are Pillow's ImageFilter.GaussianBlur(radius), whose `radius` is
 * the standard deviation of the Gaussian; sharp's blur(sigma) takes the standard deviation too, so the numbers pass
 * through unchanged. (Pillow approximates the Gaussian with three box blurs; libvips, under sharp, convolves with a
 * sampled Gaussian kernel, so the two differ slightly at the same sigma.) Radius 0 means no blur; libvips needs
 * sigma >= 0.3, so radii in (0, 0.3) are refused.
 *
 * The blur runs at the image's own resolution (what the paper blurred: its 256 px images), then the image is resized so
 * the short side is the model's input size and the centre square is cropped, like the training loader.
 */
import sharp from 'sharp';
import { SkipError } from '../data/errors';
import { classifyDecodeFailure } from '../data/image';

/** The smallest sigma libvips accepts. */
export const MIN_BLUR_SIGMA = 0.3;

/** The Gaussian standard deviation for a blur radius (see the module comment); 0 = no blur. */
export function blurSigma(radius: number): number {
  if (!Number.isFinite(radius) || radius < 0) throw new RangeError(`dalle: blur radius ${radius} is not a number >= 0`);
  if (radius > 0 && radius < MIN_BLUR_SIGMA) {
    throw new RangeError(`dalle: blur radius ${radius} is below ${MIN_BLUR_SIGMA}, the smallest sigma libvips can blur with (use 0 for none)`);
  }
  return radius;
}

/** Parses "0,1,2,4,8" into radii (ascending order kept as given; duplicates refused). */
export function parseBlurRadii(text: string): number[] {
  const parts = text.split(',').map((s) => s.trim());
  if (parts.some((p) => p === '')) throw new RangeError(`dalle: --blur "${text}" has an empty entry; give radii like 0,1,2,4,8`);
  const radii = parts.map((p) => {
    const r = Number(p);
    if (!/^\d+(\.\d+)?$/.test(p) || !Number.isFinite(r)) throw new RangeError(`dalle: --blur entry "${p}" is not a radius; give radii like 0,1,2,4,8`);
    blurSigma(r);
    return r;
  });
  if (new Set(radii).size !== radii.length) throw new RangeError(`dalle: --blur "${text}" repeats a radius`);
  return radii;
}

const WHITE = { r: 255, g: 255, b: 255 };

/**
 * Decodes one image (path or bytes), blurs it with Gaussian `sigma` (0 = none) at its own resolution, resizes it to
 * `size` x `size` (cover + centre crop), and returns interleaved 8-bit RGB (HWC). Throws SkipError for bad input.
 */
export async function loadBlurredRgb(input: string | Uint8Array, size: number, sigma: number, maxInputPixels = 50_000_000): Promise<Uint8Array> {
  try {
    let decoded = sharp(input, { limitInputPixels: maxInputPixels, failOn: 'warning', autoOrient: true })
      .flatten({ background: WHITE })
      .toColourspace('srgb')
      .removeAlpha();
    if (sigma > 0) {
      // Blur in its own pipeline: sharp would otherwise resize first, whatever the call order.
      decoded = decoded.blur(sigma);
      const { data, info } = await decoded.raw().toBuffer({ resolveWithObject: true });
      decoded = sharp(data, { raw: { width: info.width, height: info.height, channels: info.channels as 3 } });
    }
    const { data, info } = await decoded
      .resize(size, size, { fit: 'cover', position: 'centre' })
      .raw()
      .toBuffer({ resolveWithObject: true });
    if (info.width !== size || info.height !== size || info.channels !== 3) {
      throw new SkipError('corrupt', `decoded to ${info.width}x${info.height}x${info.channels}, expected ${size}x${size}x3`);
    }
    return data;
  } catch (error) {
    if (error instanceof SkipError) throw error;
    const message = (error instanceof Error ? error.message : String(error)).split('\n', 1)[0];
    const bytes = typeof input === 'string' ? new Uint8Array() : input;
    throw new SkipError(typeof input === 'string' ? 'corrupt' : classifyDecodeFailure(message, bytes), message);
  }
}
