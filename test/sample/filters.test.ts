/**
 * Sampling filters against a naive float64 reference written from the rules in filters.ts (sort values, thresholds,
 * a CDF searched by bisection), on fresh random logits of odd sizes, with ties and -Infinity logits.
 */
import assert from 'node:assert/strict';
import {
  SamplingError,
  checkSamplingOptions,
  filteredProbs,
  guideLogits,
  sampleFromProbs,
  sampleToken,
  tokenLogProb,
  SamplingOptions,
} from '../../src/core/sample/filters';
import { Philox } from '../../src/core/tensor/rng';

const SEED = Number(process.env.DALLE_TEST_SEED ?? 20261125);

/** The reference: kept set by value thresholds, softmax, nucleus by a sorted probability list. */
function refProbs(logits: readonly number[], { temperature, topK, topP }: SamplingOptions): number[] {
  const V = logits.length;
  const z = logits.map((v) => v / temperature);
  let keep = z.map(() => true);
  if (topK > 0 && topK < V) {
    const sorted = [...z].sort((a, b) => b - a);
    const threshold = sorted[topK - 1];
    const above = z.filter((v) => v > threshold).length;
    let tiesLeft = topK - above; // ties at the threshold go to the lowest ids
    keep = z.map((v) => {
      if (v > threshold) return true;
      if (v === threshold && tiesLeft > 0) {
        tiesLeft--;
        return true;
      }
      return false;
    });
  }
  const m = Math.max(...z.filter((_, i) => keep[i]));
  let p = z.map((v, i) => (keep[i] ? Math.exp(v - m) : 0));
  let s = p.reduce((a, b) => a + b, 0);
  p = p.map((v) => v / s);
  if (topP < 1) {
    const ranked = p.map((v, i) => [z[i], i, v] as const).filter(([, i]) => keep[i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
    let c = 0;
    const nucleus = new Set<number>();
    for (const [, i, v] of ranked) {
      nucleus.add(i);
      c += v;
      if (c >= topP) break;
    }
    p = p.map((v, i) => (nucleus.has(i) ? v : 0));
    s = p.reduce((a, b) => a + b, 0);
    p = p.map((v) => v / s);
  }
  return p;
}

/** Reference sampling: bisection on the CDF of the positive-probability tokens in id order. */
function refSample(p: readonly number[], u: number): number {
  const ids = p.map((v, i) => [v, i] as const).filter(([v]) => v > 0).map(([, i]) => i);
  const cdf: number[] = [];
  let c = 0;
  for (const i of ids) cdf.push((c += p[i]));
  let lo = 0;
  let hi = ids.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (u < cdf[mid]) hi = mid;
    else lo = mid + 1;
  }
  return ids[lo];
}

function randomLogits(rng: Philox, V: number, ties: boolean): number[] {
  const x = Array.from(rng.fillNormal(new Float64Array(V), 0, 3));
  return Array.from(Float32Array.from(ties ? x.map((v) => Math.round(v)) : x)); // f32 values, as the model gives
}

describe('sample: filters', () => {
  const rng = new Philox(SEED);
  const settings: SamplingOptions[] = [
    { temperature: 1, topK: 0, topP: 1 },
    { temperature: 0.7, topK: 0, topP: 1 },
    { temperature: 1.3, topK: 5, topP: 1 },
    { temperature: 1, topK: 1, topP: 1 },
    { temperature: 1, topK: 0, topP: 0.9 },
    { temperature: 0.5, topK: 17, topP: 0.6 },
    { temperature: 2, topK: 3, topP: 0.999 },
    { temperature: 1, topK: 50, topP: 1e-9 },
  ];

  for (const V of [1, 2, 7, 33, 1001]) {
    for (const ties of [false, true]) {
      it(`match the float64 reference, V = ${V}${ties ? ', with ties' : ''}`, () => {
        for (const options of settings) {
          const logits = randomLogits(rng, V, ties);
          if (V > 3) logits[V - 2] = -Infinity; // a token the model rules out
          const ours = filteredProbs(Float32Array.from(logits), options);
          const ref = refProbs(logits, options);
          for (let i = 0; i < V; i++) {
            assert.ok(Math.abs(ours[i] - ref[i]) <= 1e-12 + 1e-12 * ref[i], `V ${V} ${JSON.stringify(options)} token ${i}: ${ours[i]} vs ${ref[i]}`);
            assert.equal(ours[i] === 0, ref[i] === 0, `token ${i} kept differently`);
          }
          const kept = ours.filter((v) => v > 0).length;
          if (options.topK > 0) assert.ok(kept <= options.topK);
          assert.ok(kept >= 1);
          const u = new Float64Array(64);
          rng.fillUniform(u);
          for (const x of [...u, 0, 1 - 2 ** -53]) assert.equal(sampleToken(logits, options, x), refSample(ref, x), `u = ${x}`);
        }
      });
    }
  }

  it('top-k 1 and a tiny top-p pick the argmax (lowest id among ties)', () => {
    const logits = [0.5, 3, -1, 3, 2];
    for (const options of [{ temperature: 1, topK: 1, topP: 1 }, { temperature: 1, topK: 0, topP: 1e-6 }]) {
      const p = filteredProbs(logits, options);
      assert.deepEqual(Array.from(p), [0, 1, 0, 0, 0]);
      for (const u of [0, 0.5, 0.999]) assert.equal(sampleToken(logits, options, u), 1);
    }
  });

  it('sampled frequencies follow the filtered distribution (chi-square, 20k draws)', () => {
    const logits = [1, 0, 2, -1, 0.5, 1.5];
    const options = { temperature: 0.8, topK: 4, topP: 0.95 };
    const p = filteredProbs(logits, options);
    const draws = 20000;
    const counts = new Array<number>(logits.length).fill(0);
    const u = new Philox(SEED + 1).fillUniform(new Float64Array(draws));
    for (const x of u) counts[sampleFromProbs(p, x)]++;
    let chi2 = 0;
    let dof = -1;
    for (let i = 0; i < p.length; i++) {
      if (p[i] === 0) {
        assert.equal(counts[i], 0, `token ${i} is filtered out but was drawn`);
        continue;
      }
      chi2 += (counts[i] - draws * p[i]) ** 2 / (draws * p[i]);
      dof++;
    }
    assert.ok(dof >= 1 && chi2 < 20, `chi2 ${chi2} with ${dof} degrees of freedom`);
  });

  it('guidance is u + s (c - u): s = 1 gives cond, s = 0 uncond', () => {
    const c = [1, -2, 0.5];
    const u = [0.25, 1, -1];
    assert.deepEqual(Array.from(guideLogits(c, u, 1)), c);
    assert.deepEqual(Array.from(guideLogits(c, u, 0)), u);
    assert.deepEqual(Array.from(guideLogits(c, u, 3)), [0.25 + 3 * 0.75, 1 + 3 * -3, -1 + 3 * 1.5]);
  });

  it('tokenLogProb is log softmax in float64', () => {
    const logits = [1000, 1001, 999];
    const lse = 1001 + Math.log(Math.exp(-1) + 1 + Math.exp(-2));
    assert.ok(Math.abs(tokenLogProb(logits, 2) - (999 - lse)) < 1e-12);
  });

  it('rejects a temperature of 0 or less, a negative top-k, a top-p outside (0, 1], and NaN logits', () => {
    for (const bad of [{ temperature: 0 }, { temperature: -1 }, { temperature: NaN }, { topK: -1 }, { topK: 1.5 }, { topP: 0 }, { topP: 1.1 }]) {
      assert.throws(() => checkSamplingOptions({ temperature: 1, topK: 0, topP: 1, ...bad }), SamplingError, JSON.stringify(bad));
    }
    assert.throws(() => filteredProbs([0, NaN], { temperature: 1, topK: 0, topP: 1 }), /NaN logit \(token 1 of 2\)/);
    assert.throws(() => sampleFromProbs([0.5, 0.5], 1), /u must be in \[0, 1\)/);
  });
});
