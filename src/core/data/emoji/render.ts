/** One emoji as a PNG: its SVG body inside an <svg> of the icon's viewBox, rendered by sharp (librsvg) on white. */
import sharp from 'sharp';
import { EmojiIcon } from './sets';

/**
 * The standalone SVG document of an icon at `side` x `side` pixels. A non-square viewBox is centred (the SVG
 * default, xMidYMid meet), leaving transparent margins that rendering fills with white.
 */
export function iconSvg(icon: EmojiIcon, side: number): string {
  const viewBox = `${icon.left} ${icon.top} ${icon.width} ${icon.height}`;
  return (
    '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" ' +
    `width="${side}" height="${side}" viewBox="${viewBox}">${icon.body}</svg>`
  );
}

/** An RGB PNG of the icon, `side` pixels square, alpha flattened onto white. Rejects if librsvg cannot draw it. */
export async function renderIconPng(icon: EmojiIcon, side: number): Promise<Buffer> {
  return sharp(Buffer.from(iconSvg(icon, side)), { failOn: 'warning' })
    .flatten({ background: { r: 255, g: 255, b: 255 } })
    .resize(side, side, { fit: 'fill' }) // librsvg already drew at side x side; this only guards against rounding
    .png()
    .toBuffer();
}

/** "red-apple" in the noto set -> "red apple, noto style". */
export function emojiCaption(name: string, style: string): string {
  return `${name.replace(/-/g, ' ')}, ${style} style`;
}
