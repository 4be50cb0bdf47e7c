// The native sum / mean over the middle axis of an (outer, R, inner) block (native/cpu/reduce.cc) against a float64
// reference that adds in the order reduce.cc documents: each column from zero over its rows in order, and, where R is
// cut into blocks (few (outer, column-block) tasks and long columns), the block partials in block order. Both sum
// float32 inputs in float64, so the results must agree bit for bit (a float64 sum of a few hundred float32 values is
// nearly always exact, so this checks every element and column is counted once, not the order itself).
// Shapes are odd so that the 16-column strips, the 4-column vectors and the scalar tails all run, on both paths (R
// split or not), at 1 and 2 threads. Fresh random inputs each run (seed in every message; DALLE_TEST_SEED replays).
import * as assert from 'node:assert';
import { native } from '../../src/core/native';
import { makeRandom, TEST_SEED } from '../harness/random';

interface Addon {
  alloc(bytes: number): number;
  free(address: number, bytes: number): void;
  copyIn(address: number, data: ArrayBufferView): void;
  copyOut(address: number, data: ArrayBufferView): void;
  setThreads(n: number): number;
  reduce(code: number, x: number, outer: number, R: number, inner: number, out: number, idx: number | null,
    scale: number): void;
}
const addon: Addon = native as unknown as Addon; // loaded by the engine (DALLE_ADDON honoured)

// reduce.cc's geometry constants: columns per task, when R is split, and the R block length.
const COL_BLOCK = 256, MIN_TASKS = 32, SPLIT_WORK = 1 << 16, BLOCK_WORK = 1 << 15;

/** float32(scale * sum) per (o, c), summed in reduce.cc's documented order (inner > 1). */
function sumRef(x: Float32Array, outer: number, R: number, inner: number, scale: number): Float32Array {
  const cb = Math.min(inner, COL_BLOCK), ncb = Math.ceil(inner / cb);
  const split = outer * ncb < MIN_TASKS && R * cb > SPLIT_WORK;
  const rb = split ? Math.max(1, Math.floor(BLOCK_WORK / cb)) : R;
  const out = new Float32Array(outer * inner);
  for (let o = 0; o < outer; o++)
    for (let c = 0; c < inner; c++) {
      let total = 0;
      for (let r0 = 0; r0 < R; r0 += rb) {
        let s = 0;
        for (let r = r0; r < Math.min(R, r0 + rb); r++) s += x[(o * R + r) * inner + c];
        total += s;
      }
      out[o * inner + c] = total * scale;
    }
  return out;
}

// [outer, R, inner]: split with one column block and a 5-column tail; split over 3 column blocks (the dVAE's code
// usage mean is (1, 4096, 1024)); not split, with strips and tails; not split, inner below one strip.
const CASES: Array<[number, number, number]> = [
  [3, 301, 253], [1, 1001, 517], [2, 37, 45], [5, 9, 7],
];

describe(`native reduce: sum and mean over the middle axis, bitwise against the documented order (seed ${TEST_SEED})`, () => {
  after(() => addon.setThreads(0));
  CASES.forEach(([outer, R, inner], index) => {
    it(`(${outer}, ${R}, ${inner})`, () => {
      const seed = TEST_SEED + 17 * index;
      const rnd = makeRandom(seed);
      const x = new Float32Array(outer * R * inner);
      for (let i = 0; i < x.length; i++) x[i] = rnd.normal() * 3;
      const scale = 1 / R;  // a mean
      const want = sumRef(x, outer, R, inner, scale);
      const px = addon.alloc(4 * x.length), pout = addon.alloc(4 * outer * inner);
      try {
        addon.copyIn(px, x);
        for (const threads of [1, 2]) {
          addon.setThreads(threads);
          addon.copyIn(pout, new Float32Array(outer * inner).fill(NaN));
          addon.reduce(0, px, outer, R, inner, pout, null, scale);
          const got = new Float32Array(outer * inner);
          addon.copyOut(pout, got);
          for (let i = 0; i < got.length; i++) {
            assert.ok(Object.is(got[i], want[i]),
              `seed ${seed}, ${threads} threads, (o, c) = (${Math.floor(i / inner)}, ${i % inner}): ${got[i]} != ${want[i]}`);
          }
        }
      } finally {
        addon.free(px, 4 * x.length);
        addon.free(pout, 4 * outer * inner);
      }
    });
  });
});
