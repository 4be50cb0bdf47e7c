// The CLIP's training augmentation (train/clip-trainer.ts): a random scale and shift per image, drawn from the run's
// augmentation stream in update order, so a resumed run draws the same warps.
import type { Philox } from '../tensor/rng';

/**
 * A random affine warp of each image (B, 3, R, R) in [0, 1]: scale by exp(u * ln(1 + strength)) about the centre and
 * shift by up to strength * R pixels on each axis, bilinear, white outside (the emoji background). No flips or colour
 * changes: captions name directions and colours. Returns a new array.
 */
export function augmentImages(images: Float32Array, B: number, R: number, strength: number, rng: Philox): Float32Array {
  const out = new Float32Array(images.length);
  const draws = rng.fillUniform(new Float32Array(3 * B));
  const plane = R * R;
  const c0 = (R - 1) / 2;
  for (let b = 0; b < B; b++) {
    const scale = Math.exp((2 * draws[3 * b] - 1) * Math.log(1 + strength));
    const dx = (2 * draws[3 * b + 1] - 1) * strength * R;
    const dy = (2 * draws[3 * b + 2] - 1) * strength * R;
    for (let y = 0; y < R; y++) {
      // Output pixel (x, y) reads the source at ((x - c0 - dx) / scale + c0, (y - c0 - dy) / scale + c0).
      const sy = (y - c0 - dy) / scale + c0;
      const y0 = Math.floor(sy);
      const fy = sy - y0;
      for (let x = 0; x < R; x++) {
        const sx = (x - c0 - dx) / scale + c0;
        const x0 = Math.floor(sx);
        const fx = sx - x0;
        for (let c = 0; c < 3; c++) {
          const base = (b * 3 + c) * plane;
          const at = (yy: number, xx: number): number => (yy < 0 || yy >= R || xx < 0 || xx >= R ? 1 : images[base + yy * R + xx]);
          out[base + y * R + x] = (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1)) + fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
        }
      }
    }
  }
  return out;
}

