// The native stridedCopy (native/cpu/copy.cc) against a plain element-by-element reference: random shapes of odd sizes
// (size-1 dimensions included), random permutations and steps on the source, strided destinations (slice's backward
// scatters), every item size, 1 and 2 threads; dimensions that coalesce into one run (a contiguous copy, rows of a
// wider matrix), runs longer than a thread's piece, 32-wide rows (the heads split and merge of attention), and
// transposing copies in whole and partial 32 x 32 tiles.
import * as assert from 'node:assert';
import { native } from '../../src/core/native';
import { Philox } from '../../src/core/tensor';
import { contiguousStrides } from '../../src/core/tensor/tensor';

type Case = { shape: number[]; dst: number[]; src: number[]; dstSpan: number; srcSpan: number };

/** Elements a view with these strides reaches, +1 (strides >= 0). */
function span(shape: readonly number[], strides: readonly number[]): number {
  return shape.reduce((acc, d, i) => acc + (d - 1) * strides[i], 0) + 1;
}


/** Source: a contiguous buffer of a bigger shape, permuted, every dimension stepped by 1 or 2. Destination: contiguous
 * or every dimension padded (a slice of a bigger buffer). */
function randomCase(rng: Philox, rank: number, maxDim: number): Case {
  const int = (n: number): number => Math.floor(rng.uniform() * n);
  const shape = Array.from({ length: rank }, () => (int(4) === 0 ? 1 : 1 + int(maxDim)));
  const steps = shape.map(() => 1 + int(2));
  const perm = Array.from({ length: rank }, (_, i) => i);
  for (let i = rank - 1; i > 0; i--) {
    const j = int(i + 1);
    [perm[i], perm[j]] = [perm[j], perm[i]];
  }
  // The source buffer is laid out in `perm` order of (shape * step); the copy reads every step-th element.
  const bufShape = perm.map((d) => shape[d] * steps[d]);
  const bufStrides = contiguousStrides(bufShape);
  const src = shape.map((_, d) => bufStrides[perm.indexOf(d)] * steps[d]);
  const spread = 1 + int(2); // 2: the destination's last dimension is strided too
  const dst = int(2) === 0 ? contiguousStrides(shape) : contiguousStrides(shape.map((d) => d + int(3))).map((st) => st * spread);
  return { shape, dst, src, dstSpan: span(shape, dst), srcSpan: span(shape, src) };
}

/** Runs the native copy on item-sized elements and returns the destination, which starts as a known pattern. */
function nativeCopy(c: Case, item: number, srcBytes: Uint8Array): Uint8Array {
  const dstBytes = c.dstSpan * item;
  const s = native.alloc(Math.max(srcBytes.length, 8));
  const d = native.alloc(Math.max(dstBytes, 8));
  try {
    native.copyIn(s, srcBytes);
    native.copyIn(d, new Uint8Array(dstBytes).fill(0xa5));
    native.stridedCopy(d, s, item, c.shape, c.dst, c.src);
    const out = new Uint8Array(dstBytes);
    native.copyOut(d, out);
    return out;
  } finally {
    native.free(s, Math.max(srcBytes.length, 8));
    native.free(d, Math.max(dstBytes, 8));
  }
}

function referenceCopy(c: Case, item: number, srcBytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(c.dstSpan * item).fill(0xa5);
  const n = c.shape.reduce((a, b) => a * b, 1);
  const idx = new Array<number>(c.shape.length).fill(0);
  for (let k = 0; k < n; k++) {
    let rem = k;
    for (let d = c.shape.length - 1; d >= 0; d--) {
      idx[d] = rem % c.shape[d];
      rem = Math.floor(rem / c.shape[d]);
    }
    const so = idx.reduce((acc, i, d) => acc + i * c.src[d], 0) * item;
    const dO = idx.reduce((acc, i, d) => acc + i * c.dst[d], 0) * item;
    for (let b = 0; b < item; b++) out[dO + b] = srcBytes[so + b];
  }
  return out;
}

function check(c: Case, item: number, rng: Philox, what: string): void {
  const srcBytes = Uint8Array.from({ length: c.srcSpan * item }, () => Math.floor(rng.uniform() * 256));
  const got = nativeCopy(c, item, srcBytes);
  const want = referenceCopy(c, item, srcBytes);
  const bad = got.findIndex((v, i) => v !== want[i]);
  if (bad >= 0) {
    assert.fail(`${what}: item ${item}, shape [${c.shape}] dst [${c.dst}] src [${c.src}]: byte ${bad} is ${got[bad]}, want ${want[bad]}`);
  }
}

describe('native stridedCopy', () => {
  const before = native.numThreads();
  after(() => native.setThreads(before));

  it('equals the element-by-element reference on random permuted, stepped and padded views (seed 1717)', () => {
    const rng = new Philox(1717);
    for (const threads of [1, 2]) {
      native.setThreads(threads);
      for (let trial = 0; trial < 60; trial++) {
        const rank = 1 + (trial % 5);
        const c = randomCase(rng, rank, rank <= 2 ? 67 : 11);
        check(c, [1, 2, 4, 8][trial % 4], rng, `trial ${trial}, ${threads} threads`);
      }
    }
  });

  it('copies coalescing dimensions, long runs, 32-wide head rows and scalars exactly', () => {
    const rng = new Philox(1718);
    const cases: Case[] = [];
    const add = (shape: number[], dst: number[], src: number[]): void => {
      cases.push({ shape, dst, src, dstSpan: span(shape, dst), srcSpan: span(shape, src) });
    };
    add([3, 5, 7001], contiguousStrides([3, 5, 7001]), contiguousStrides([3, 5, 7001])); // one run of 105015 (pieces)
    add([1, 40003, 1], [40003, 1, 1], [40003, 1, 1]); // size-1 dimensions around one long run
    add([5, 31, 33], contiguousStrides([5, 31, 33]), [31 * 40, 40, 1]); // rows of a wider matrix on the source
    add([5, 31, 33], [31 * 37, 37, 1], contiguousStrides([5, 31, 33])); // ... and on the destination (slice backward)
    add([3, 29, 5, 32], contiguousStrides([3, 29, 5, 32]), [29 * 5 * 32, 32, 29 * 32, 1]); // heads merge (B, T, H, D)
    add([3, 5, 29, 32], contiguousStrides([3, 5, 29, 32]), [29 * 5 * 32, 32, 5 * 32, 1]); // heads split (B, H, T, D)
    add([], [], []); // a scalar
    add([7, 1, 9], [1, 63, 7], [9, 9, 1]); // a transposing copy (tiled path) with a size-1 dimension
    // Transposing copies with whole 32 x 32 tiles (16 x 16 register blocks for 4-byte items on AVX-512) and partial
    // ones: odd sizes, a padded destination, and the dVAE's code logits (B, h*w, V) -> (B, V, h*w).
    add([2, 70, 45], contiguousStrides([2, 70, 45]), [70 * 45, 1, 70]);
    add([64, 96], [101, 1], [1, 64]);
    add([2, 96, 256], contiguousStrides([2, 96, 256]), [96 * 256, 1, 96]);
    for (const threads of [1, 2]) {
      native.setThreads(threads);
      for (const c of cases) for (const item of [1, 2, 4, 8]) check(c, item, rng, `${threads} threads`);
    }
  });
});
