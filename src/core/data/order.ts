/**
 * The order in which the loader visits records, and the caption it draws for each: functions of (seed, epoch) only,
 * so a run resumed from (epoch, position) sees exactly the records and captions an uninterrupted run would.
 *
 * Random numbers come from Philox (src/core/tensor/rng.ts) under a key of their own: new Philox(seed).fork(DATA),
 * so data order never shares numbers with weight init or dropout drawn from the same seed. Under that key,
 * fork(2e) shuffles epoch e and fork(2e + 1) draws epoch e's captions.
 */
import { Philox } from '../tensor/rng';

/** 'data' in ASCII: the fork id of the loader's random numbers under the run's seed. */
export const DATA_STREAM_ID = 0x64617461;

export function dataRandom(seed: number): Philox {
  return new Philox(seed).fork(DATA_STREAM_ID);
}

/**
 * The record indices of epoch `epoch` in visiting order: a Fisher-Yates shuffle of 0..n-1 driven by n uniform f64
 * values u_i (swap i with floor(u_i * (i + 1)), i from n-1 down), or 0..n-1 itself when `shuffle` is false.
 */
export function epochOrder(data: Philox, epoch: number, n: number, shuffle: boolean): Uint32Array {
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  if (!shuffle) return order;
  const u = data.fork(2 * epoch).fillUniform(new Float64Array(n));
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(u[i] * (i + 1));
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return order;
}

/** One uniform value per record for epoch `epoch`: record r shows caption floor(u[r] * its caption count). */
export function captionDraws(data: Philox, epoch: number, n: number): Float64Array {
  return data.fork(2 * epoch + 1).fillUniform(new Float64Array(n));
}

export function pickCaption(captions: readonly string[], draw: number): string {
  return captions.length === 0 ? '' : captions[Math.floor(draw * captions.length)];
}
