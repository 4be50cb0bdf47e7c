import * as assert from 'node:assert/strict';

import { mulhi32, Philox, philox4x32, philoxStreamWords } from '../src/core/tensor/rng';

/**
 * Known-answer vectors of Philox4x32 from the Random123 distribution (tests/kat_vectors):
 * "philox4x32 R ctr[4] key[2] -> out[4]".
 */
const KNOWN_ANSWERS: [number, number[], number[], number[]][] = [
  [10, [0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]],
  [
    10,
    [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff],
    [0xffffffff, 0xffffffff],
    [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
  ],
  [
    10,
    [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
    [0xa4093822, 0x299f31d0],
    [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
  ],
  [7, [0, 0, 0, 0], [0, 0], [0x5f6fb709, 0x0d893f64, 0x4f121f81, 0x4f730a48]],
  [
    7,
    [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff],
    [0xffffffff, 0xffffffff],
    [0x5207ddc2, 0x45165e59, 0x4d8ee751, 0x8c52f662],
  ],
  [
    7,
    [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
    [0xa4093822, 0x299f31d0],
    [0x4dfccaba, 0x190a87f0, 0xc47362ba, 0xb6b5242a],
  ],
];

const SEED = 0x0123456789abcdefn;
const KEY: [number, number] = [0x89abcdef, 0x01234567];

/** Word w of the stream of KEY, straight from the definition (module comment of rng.ts). */
function word(w: bigint): number {
  const block = w >> 2n;
  return philox4x32([Number(block & 0xffffffffn), Number(block >> 32n), 0, 0], KEY)[Number(w & 3n)];
}

function mean(values: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i];
  return sum / values.length;
}

function variance(values: ArrayLike<number>): number {
  const m = mean(values);
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += (values[i] - m) ** 2;
  return sum / (values.length - 1);
}

/** Pearson's chi-square statistic of counts against equal expected counts. */
function chiSquare(counts: number[]): number {
  const total = counts.reduce((a, b) => a + b, 0);
  const expected = total / counts.length;
  return counts.reduce((sum, c) => sum + (c - expected) ** 2 / expected, 0);
}

/** 99.9% quantile of chi-square with 15 degrees of freedom: 16 equiprobable bins fail this 1 time in 1000. */
const CHI_SQUARE_15_P999 = 37.7;

describe('rng (Philox4x32-10)', () => {
  describe('the block function', () => {
    it('matches the Random123 known-answer vectors', () => {
      for (const [rounds, counter, key, expected] of KNOWN_ANSWERS) {
        const out = philox4x32(counter as [number, number, number, number], key as [number, number], rounds);
        assert.deepEqual(out, expected, `philox4x32-${rounds} ${counter.map((x) => x.toString(16))}`);
      }
    });

    it('computes exact 32x32 -> high 32 bit products', () => {
      const cases = [0, 1, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, 0xd2511f53, 0xcd9e8d57];
      let state = 12345;
      for (let i = 0; i < 200; i++) {
        state = (Math.imul(state, 1103515245) + 12345) >>> 0;
        cases.push(state);
      }
      for (const a of cases) {
        for (const b of cases.slice(0, 40)) {
          assert.equal(mulhi32(a, b), Number((BigInt(a) * BigInt(b)) >> 32n), `${a} * ${b}`);
        }
      }
    });
  });

  describe('the stream', () => {
    it('starts, for seed 0, with the Random123 vector for counter 0 and key 0', () => {
      assert.deepEqual(Array.from(new Philox(0).fillUint32(new Uint32Array(4))), KNOWN_ANSWERS[0][3]);
    });

    it('maps word w to lane w % 4 of the block with counter floor(w / 4) under key = seed', () => {
      const words = new Philox(SEED).fillUint32(new Uint32Array(11));
      for (let w = 0; w < 11; w++) assert.equal(words[w], word(BigInt(w)), `word ${w}`);
      const late = new Philox(SEED, 2n ** 34n - 3n).fillUint32(new Uint32Array(6)); // crosses the low counter word's wrap
      for (let j = 0; j < 6; j++) assert.equal(late[j], word(2n ** 34n - 3n + BigInt(j)), `late word ${j}`);
    });

    it('defines uniform, normal, gumbel and randint values exactly as documented', () => {
      const o = 5n;
      const w = (j: number) => word(o + BigInt(j));
      const f32 = new Philox(SEED, o).fillUniform(new Float32Array(3));
      for (let i = 0; i < 3; i++) assert.equal(f32[i], (w(i) >>> 8) / 2 ** 24);
      const f64 = new Philox(SEED, o).fillUniform(new Float64Array(3));
      for (let i = 0; i < 3; i++) assert.equal(f64[i], ((w(2 * i) >>> 5) * 2 ** 26 + (w(2 * i + 1) >>> 6)) / 2 ** 53);
      assert.equal(new Philox(SEED, o).uniform(), f64[0]);
      const normal = new Philox(SEED, o).fillNormal(new Float64Array(3), 1, 2);
      for (let i = 0; i < 3; i++) {
        const p = Math.floor(i / 2);
        const r = Math.sqrt(-2 * Math.log((w(2 * p) + 1) / 2 ** 32));
        const t = 2 * Math.PI * (w(2 * p + 1) / 2 ** 32);
        assert.equal(normal[i], 1 + 2 * r * (i % 2 === 0 ? Math.cos(t) : Math.sin(t)));
      }
      const gumbel = new Philox(SEED, o).fillGumbel(new Float64Array(3));
      for (let i = 0; i < 3; i++) assert.equal(gumbel[i], -Math.log(-Math.log((w(i) + 0.5) / 2 ** 32)));
      const m = 1000003;
      const ints = new Philox(SEED, o).randint(3, m);
      for (let i = 0; i < 3; i++) {
        const x = (BigInt(w(2 * i)) << 32n) | BigInt(w(2 * i + 1));
        assert.equal(ints[i], Number((x * BigInt(m)) >> 64n));
      }
    });

    it('advances the offset by the words used', () => {
      const rng = new Philox(1);
      rng.fillUniform(new Float32Array(5));
      assert.equal(rng.offset, 5n);
      rng.fillUniform(new Float64Array(5));
      assert.equal(rng.offset, 15n);
      rng.fillNormal(new Float32Array(5));
      assert.equal(rng.offset, 21n);
      rng.fillGumbel(new Float32Array(2));
      rng.randint(3, 10);
      rng.uniform();
      assert.equal(rng.offset, 31n);
    });

    it('gives the same values in one request or in several', () => {
      const fills: [string, (rng: Philox, n: number) => ArrayLike<number>][] = [
        ['uint32', (rng, n) => rng.fillUint32(new Uint32Array(n))],
        ['uniform f32', (rng, n) => rng.fillUniform(new Float32Array(n))],
        ['uniform f64', (rng, n) => rng.fillUniform(new Float64Array(n))],
        ['normal', (rng, n) => rng.fillNormal(new Float32Array(n))],
        ['gumbel', (rng, n) => rng.fillGumbel(new Float64Array(n))],
        ['randint', (rng, n) => rng.randint(n, 7)],
      ];
      for (const [name, fill] of fills) {
        const split = new Philox(SEED);
        const pieces = [...Array.from(fill(split, 10)), ...Array.from(fill(split, 20))];
        assert.deepEqual(pieces, Array.from(fill(new Philox(SEED), 30)), name);
      }
      // across the generator's internal chunks (16384 words) too
      const big = new Philox(7).fillUniform(new Float32Array(40000));
      const small = new Philox(7);
      const parts = [1, 16383, 3, 23613].flatMap((n) => Array.from(small.fillUniform(new Float32Array(n))));
      assert.deepEqual(parts, Array.from(big));
    });

    it('makes value i depend only on (seed, offset + i)', () => {
      const all = new Philox(SEED).fillUniform(new Float32Array(100));
      const tail = new Philox(SEED, 37).fillUniform(new Float32Array(63));
      assert.deepEqual(Array.from(tail), Array.from(all.subarray(37)));
      const words = new Uint32Array(50);
      philoxStreamWords(KEY, 1000n, words);
      assert.deepEqual(words, new Philox(SEED, 1000).fillUint32(new Uint32Array(50)));
    });

    it('is deterministic and depends on the seed', () => {
      const a = new Philox(42).fillNormal(new Float32Array(64));
      assert.deepEqual(a, new Philox(42).fillNormal(new Float32Array(64)));
      assert.notDeepEqual(a, new Philox(43).fillNormal(new Float32Array(64)));
      assert.notDeepEqual(a, new Philox(42n + 2n ** 32n).fillNormal(new Float32Array(64)));
    });
  });

  describe('state, forks and reservations', () => {
    it('saves and restores its state through JSON', () => {
      const rng = new Philox(2n ** 64n - 1n);
      rng.fillNormal(new Float32Array(13));
      const saved = JSON.parse(JSON.stringify(rng.state()));
      assert.deepEqual(saved, { seed: '18446744073709551615', offset: '14' });
      const next = rng.fillUniform(new Float64Array(20));
      assert.deepEqual(Philox.fromState(saved).fillUniform(new Float64Array(20)), next);
      assert.deepEqual(rng.clone().fillUint32(new Uint32Array(4)), rng.fillUint32(new Uint32Array(4)));
    });

    it('rejects invalid seeds, offsets and states', () => {
      assert.throws(() => new Philox(-1), RangeError);
      assert.throws(() => new Philox(1.5), RangeError);
      assert.throws(() => new Philox(2n ** 64n), RangeError);
      assert.throws(() => new Philox(1, -1n), RangeError);
      assert.throws(() => Philox.fromState({ seed: '1e3', offset: '0' }), RangeError);
      assert.throws(() => Philox.fromState({ seed: '1', offset: '-2' }), RangeError);
      assert.throws(() => new Philox(1).randint(1, 0), RangeError);
      assert.throws(() => new Philox(1).randint(1, 2 ** 31 + 1), RangeError);
    });

    it('forks independent, reproducible generators without moving the parent', () => {
      const parent = new Philox(5);
      parent.uniform();
      const a = parent.fork(1);
      const b = parent.fork(2);
      assert.equal(parent.offset, 2n);
      assert.deepEqual(new Philox(5).fork(1).state(), a.state());
      const draw = (rng: Philox) => Array.from(rng.fillUint32(new Uint32Array(8)));
      assert.notDeepEqual(draw(a.clone()), draw(b.clone()));
      assert.notDeepEqual(draw(a.clone()), draw(new Philox(5)));
      assert.notDeepEqual(draw(a.fork(1)), draw(a.clone()));
      assert.equal(a.offset, 0n);
    });

    it('reserves words for native kernels', () => {
      const rng = new Philox(SEED, 3);
      const { key, offset } = rng.reserve(10);
      assert.deepEqual(key, KEY);
      assert.equal(offset, 3n);
      assert.equal(rng.offset, 13n);
      const words = new Uint32Array(10);
      philoxStreamWords(key, offset, words);
      assert.deepEqual(words, new Philox(SEED, 3).fillUint32(new Uint32Array(10)));
    });
  });

  describe('statistics of 10^6 samples', function () {
    this.timeout(30_000);
    const n = 1_000_000;

    it('uniform f32: mean, variance, 16-bin chi-square, range', () => {
      const u = new Philox(2024).fillUniform(new Float32Array(n));
      assert.ok(Math.abs(mean(u) - 0.5) < 5 * Math.sqrt(1 / 12 / n), `mean ${mean(u)}`);
      assert.ok(Math.abs(variance(u) - 1 / 12) < 5e-4, `variance ${variance(u)}`);
      const counts = new Array<number>(16).fill(0);
      for (const x of u) {
        assert.ok(x >= 0 && x < 1);
        counts[Math.floor(x * 16)]++;
      }
      assert.ok(chiSquare(counts) < CHI_SQUARE_15_P999, `chi-square ${chiSquare(counts)}`);
    });

    it('uniform f64: mean, variance, chi-square', () => {
      const u = new Philox(2025).fillUniform(new Float64Array(n));
      assert.ok(Math.abs(mean(u) - 0.5) < 5 * Math.sqrt(1 / 12 / n));
      assert.ok(Math.abs(variance(u) - 1 / 12) < 5e-4);
      const counts = new Array<number>(16).fill(0);
      for (const x of u) counts[Math.floor(x * 16)]++;
      assert.ok(chiSquare(counts) < CHI_SQUARE_15_P999, `chi-square ${chiSquare(counts)}`);
    });

    it('normal: mean, variance, the 1-sigma fraction, shifted and scaled', () => {
      const z = new Philox(7).fillNormal(new Float32Array(n));
      assert.ok(Math.abs(mean(z)) < 5 / Math.sqrt(n), `mean ${mean(z)}`);
      assert.ok(Math.abs(variance(z) - 1) < 5 * Math.sqrt(2 / n), `variance ${variance(z)}`);
      let inside = 0;
      for (const x of z) if (Math.abs(x) < 1) inside++;
      assert.ok(Math.abs(inside / n - 0.682689) < 0.003, `1-sigma fraction ${inside / n}`);
      const shifted = new Philox(8).fillNormal(new Float64Array(n), 3, 0.5);
      assert.ok(Math.abs(mean(shifted) - 3) < 0.005 && Math.abs(variance(shifted) - 0.25) < 0.005);
    });

    it('gumbel: mean (Euler-Mascheroni) and variance (pi^2 / 6)', () => {
      const g = new Philox(9).fillGumbel(new Float64Array(n));
      assert.ok(Math.abs(mean(g) - 0.5772157) < 0.01, `mean ${mean(g)}`);
      assert.ok(Math.abs(variance(g) - Math.PI ** 2 / 6) < 0.02, `variance ${variance(g)}`);
      assert.ok(g.every(Number.isFinite));
    });

    it('randint: range and chi-square', () => {
      const ints = new Philox(10).randint(n, 16);
      const counts = new Array<number>(16).fill(0);
      for (const k of ints) counts[k]++;
      assert.ok(chiSquare(counts) < CHI_SQUARE_15_P999, `chi-square ${chiSquare(counts)}`);
      const wide = new Philox(11).randint(10000, 2 ** 31);
      assert.ok(wide.every((k) => k >= 0 && k < 2 ** 31));
      assert.ok(mean(wide) > 0.45 * 2 ** 31 && mean(wide) < 0.55 * 2 ** 31);
      assert.ok(new Philox(12).randint(1000, 1).every((k) => k === 0));
    });
  });
});
