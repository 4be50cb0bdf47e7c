// What the Gloo worker (gloo-worker.ts) reduces and the test (gloo.test.ts) checks: every rank's input is drawn from
// (seed, rank, case), so the test recomputes each rank's data and the float64 reference without asking the workers.
import { makeRandom } from '../harness/random';

export type CaseDType = 'f32' | 'f64';
export type CaseOp = 'sum' | 'max' | 'min';

export interface ReduceCase {
  index: number;
  dtype: CaseDType;
  op: CaseOp;
  size: number;
}

/** Odd sizes: one value, fewer values than ranks, and more than one Gloo segment (1 MiB) per rank. */
export const REDUCE_SIZES = [1, 7, 1_000_003];

export const REDUCE_CASES: ReduceCase[] = (['f32', 'f64'] as const).flatMap((dtype) =>
  (['sum', 'max', 'min'] as const).flatMap((op) => REDUCE_SIZES.map((size) => ({ dtype, op, size }))),
).map((c, index) => ({ index, ...c }));

/** allReduceBuffers' tensors: odd sizes; the third is a window inside a larger tensor (see BUFFER_WINDOW). */
export const BUFFER_SIZES = [1, 7, 100, 1000, 4099];
/** Elements [start, start + count) of the 100-element tensor are reduced; the rest must stay as they were. */
export const BUFFER_WINDOW = { tensor: 2, start: 10, count: 50 };

export const BROADCAST_BYTES = 4097;

function stream(seed: number, rank: number, salt: number): ReturnType<typeof makeRandom> {
  return makeRandom((seed ^ Math.imul(rank + 1, 0x9e3779b1) ^ Math.imul(salt + 1, 0x85ebca6b)) >>> 0);
}

/** Rank `rank`'s input of case `salt`: normals times scales from 0.01 to 100 (so sums round in f32). */
export function rankValues(seed: number, rank: number, salt: number, size: number, dtype: CaseDType): Float32Array | Float64Array {
  const rng = stream(seed, rank, salt);
  const out = dtype === 'f32' ? new Float32Array(size) : new Float64Array(size);
  for (let i = 0; i < size; i++) out[i] = rng.normal() * 10 ** rng.int(-2, 3);
  return out;
}

/** Small integers, so that sums are exact in any order (the order test tells max-then-sum from sum-then-max). */
export function rankIntegers(seed: number, rank: number, salt: number, size: number): Float64Array {
  const rng = stream(seed, rank, salt);
  return Float64Array.from({ length: size }, () => rng.int(-1000, 1001));
}

export function rankBytes(seed: number, rank: number, salt: number, size: number): Uint8Array {
  const rng = stream(seed, rank, salt);
  return Uint8Array.from({ length: size }, () => rng.int(0, 256));
}
