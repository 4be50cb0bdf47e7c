/**
 * Pieces of CLIP training: the random affine augmentation (identity at strength 0, white outside, shifts pixels,
 * seeded) and pooled retrieval (against a direct float64 count on random embeddings, odd sizes, a partial pool).
 */
import * as assert from 'node:assert/strict';
import { augmentImages } from '../../src/core/train/clip-augment';
import { poolRetrieval } from '../../src/core/models/clip/retrieval';
import { Philox } from '../../src/core/tensor/rng';

function randomImages(B: number, R: number, seed: number): Float32Array {
  return new Philox(seed).fillUniform(new Float32Array(B * 3 * R * R));
}

describe('eval: CLIP training pieces', () => {
  it('augmentImages: strength 0 is the identity; seeded; values stay in [0, 1]; a dark square moves', () => {
    const B = 3;
    const R = 9; // odd on purpose
    const x = randomImages(B, R, 4);
    assert.deepEqual(Array.from(augmentImages(x, B, R, 0, new Philox(1))), Array.from(x));
    const a = augmentImages(x, B, R, 0.2, new Philox(7));
    const b = augmentImages(x, B, R, 0.2, new Philox(7));
    assert.deepEqual(Array.from(a), Array.from(b));
    assert.notDeepEqual(Array.from(a), Array.from(x));
    assert.ok(a.every((v) => v >= 0 && v <= 1 + 1e-6));
    // One image, white with a black 3x3 square in the middle: after a strong warp the dark mass has moved or changed
    // size, and whatever came from outside the image is white.
    const S = 16;
    const img = new Float32Array(3 * S * S).fill(1);
    for (let c = 0; c < 3; c++) for (let y = 6; y < 9; y++) for (let x0 = 6; x0 < 9; x0++) img[c * S * S + y * S + x0] = 0;
    const centroid = (p: Float32Array) => {
      let m = 0;
      let cx = 0;
      let cy = 0;
      for (let y = 0; y < S; y++) for (let x0 = 0; x0 < S; x0++) {
        const w = 1 - p[y * S + x0];
        m += w;
        cx += w * x0;
        cy += w * y;
      }
      return { m, cx: cx / m, cy: cy / m };
    };
    const before = centroid(img);
    let moved = 0;
    for (let seed = 0; seed < 8; seed++) {
      const out = augmentImages(img, 1, S, 0.25, new Philox(seed));
      const after = centroid(out);
      if (Math.hypot(after.cx - before.cx, after.cy - before.cy) > 0.5 || Math.abs(after.m - before.m) > 1) moved++;
      assert.equal(out[0], 1, 'a corner pixel (white, or white from outside) stays white');
    }
    assert.ok(moved >= 6, `only ${moved} of 8 warps moved the square`);
  });

  it('poolRetrieval: top-1 within consecutive pools and the mean CLIP score, as a direct count', () => {
    const N = 23;
    const E = 5;
    const pool = 7; // 3 pools, 2 pairs left out of retrieval (not of the score)
    const rnd = new Philox(11).fillUniform(new Float64Array(2 * N * E));
    const unit = (offset: number) => {
      const out = new Float32Array(N * E);
      for (let i = 0; i < N; i++) {
        let s = 0;
        for (let e = 0; e < E; e++) s += (rnd[offset + i * E + e] - 0.5) ** 2;
        for (let e = 0; e < E; e++) out[i * E + e] = (rnd[offset + i * E + e] - 0.5) / Math.sqrt(s);
      }
      return out;
    };
    const img = unit(0);
    const txt = unit(N * E);
    // Make a few pairs match well so the count is not trivially zero.
    for (const i of [0, 3, 8, 15]) txt.set(img.subarray(i * E, (i + 1) * E), i * E);
    const r = poolRetrieval(img, txt, N, pool);
    const dot = (a: Float32Array, i: number, b: Float32Array, j: number) => {
      let s = 0;
      for (let e = 0; e < E; e++) s += a[i * E + e] * b[j * E + e];
      return s;
    };
    let t2i = 0;
    let i2t = 0;
    for (let p = 0; p < 3; p++) {
      for (let a = p * pool; a < (p + 1) * pool; a++) {
        const others = Array.from({ length: pool }, (_, k) => p * pool + k);
        if (others.every((b) => b === a || dot(img, b, txt, a) < dot(img, a, txt, a))) t2i++;
        if (others.every((b) => b === a || dot(img, a, txt, b) < dot(img, a, txt, a))) i2t++;
      }
    }
    let score = 0;
    for (let i = 0; i < N; i++) score += 100 * Math.max(0, dot(img, i, txt, i));
    assert.equal(r.pools, 3);
    assert.equal(r.textToImageTop1, t2i / 21);
    assert.equal(r.imageToTextTop1, i2t / 21);
    assert.ok(t2i >= 4, `${t2i} hits`);
    assert.ok(Math.abs(r.clipScore - score / N) < 1e-4);
  });
});
